"""server.media on real bytes: every accepted format decodes, every bad input gives a typed error quickly.

Test media is made here from the benign dev corpus (re-encoded, re-muxed, spliced); nothing is mocked.
"""

from __future__ import annotations

import io
import re
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageChops, ImageFile, ImageOps

from jiwoom.api.errors import (
    CorruptMedia,
    DecodeTimeout,
    MediaError,
    MediaTooLarge,
    NoVideoStream,
    UnsupportedMedia,
)
from server.config import MediaLimits
from server.media import DecodedMedia, decode_media, sniff_format
from tests.media_samples import encode_video, png_bomb, png_chunk

CORPUS = Path("/work/shared/corpus/dev")
IMAGE = CORPUS / "images" / "img_0243.jpg"
OTHER_IMAGE = CORPUS / "images" / "img_0000.jpg"
VIDEOS = sorted((CORPUS / "videos").glob("vid_*.mp4"))

pytestmark = pytest.mark.skipif(not IMAGE.exists(), reason="dev corpus not present")


# ------------------------------------------------------------------------------------------------ helpers


def check_contract(media: DecodedMedia) -> None:
    """What every caller relies on, whatever the input."""
    f = len(media.frames)
    assert f >= 1
    assert media.frames.dtype == np.uint8 and media.frames.ndim == 4 and media.frames.shape[3] == 3
    assert media.frames.flags["C_CONTIGUOUS"]
    assert media.timestamps.dtype == np.float32 and media.timestamps.shape == (f,)
    assert media.scene_cut.dtype == np.bool_ and media.scene_cut.shape == (f,)
    assert media.scene_cut[0]
    assert media.timestamps[0] == 0.0
    assert np.all(np.diff(media.timestamps) > 0)
    assert media.width > 0 and media.height > 0


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A non-square RGB photo (512 x 384), so orientation mistakes show up as wrong shapes."""
    with Image.open(IMAGE) as im:
        return im.convert("RGB").crop((0, 64, 512, 448))


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def read_frames(path: Path, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """The first `count` frames of a video as RGB arrays of `size` (w, h)."""
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24", width=size[0], height=size[1]))
            if len(frames) == count:
                break
    return frames


def remux(path: Path, container_format: str, writer: Callable[[], object] | None = None) -> bytes:
    """The same H.264 packets in another container, no re-encode."""
    buf = writer() if writer else io.BytesIO()
    with av.open(str(path)) as src, av.open(buf, "w", format=container_format) as out:
        in_stream = src.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in src.demux(in_stream):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            out.mux(packet)
    return buf.getvalue()  # type: ignore[attr-defined]


def quick_error(data: bytes, limits: MediaLimits = MediaLimits()) -> MediaError:  # noqa: B008
    """The error decode_media raises, checked to be typed, fast and free of memory addresses."""
    start = time.monotonic()
    with pytest.raises(MediaError) as info:
        decode_media(data, limits)
    assert time.monotonic() - start < 5.0
    message = str(info.value)
    assert not re.search(r"0x[0-9a-fA-F]{6,}", message), message
    assert "Traceback" not in message
    return info.value


# ------------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize(
    ("fmt", "params", "tolerance"),
    [
        ("jpeg", {"quality": 95}, 4.0),
        ("png", {}, 0.0),
        ("webp", {"quality": 90}, 6.0),
        ("gif", {}, 12.0),
        ("bmp", {}, 0.0),
    ],
)
def test_image_formats_round_trip(photo: Image.Image, fmt: str, params: dict[str, object], tolerance: float):
    data = encode(photo, fmt.upper(), **params)
    assert sniff_format(data) == fmt
    media = decode_media(data)
    check_contract(media)
    assert (media.kind, media.format) == ("image", fmt)
    assert media.frames.shape == (1, 384, 512, 3)
    assert (media.width, media.height) == (512, 384)
    assert media.duration_s == 0.0
    assert mean_abs_diff(media.frames[0], np.asarray(photo)) <= tolerance


@pytest.mark.parametrize("orientation", [2, 3, 5, 6, 8])
def test_exif_orientation_is_applied(photo: Image.Image, orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo, "JPEG", quality=95, exif=exif)
    media = decode_media(data)
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert media.frames.shape[1:3] == expected.shape[:2]
    assert (media.height, media.width) == expected.shape[:2]
    assert mean_abs_diff(media.frames[0], expected) < 1.0


def test_gif_frames_with_durations(photo: Image.Image):
    with Image.open(OTHER_IMAGE) as other:
        second = other.convert("RGB").resize(photo.size)
    panned = ImageChops.offset(second, 4, 0)  # the same shot, moved a little: no cut
    frames = [photo, second, panned, photo.transpose(Image.Transpose.FLIP_TOP_BOTTOM)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=[100, 200, 300, 400])
    media = decode_media(data)
    check_contract(media)
    assert media.format == "gif" and media.frames.shape == (4, 384, 512, 3)
    assert media.timestamps.tolist() == pytest.approx([0.0, 0.1, 0.3, 0.6])
    assert media.duration_s == pytest.approx(1.0)
    assert media.scene_cut.tolist() == [True, True, False, True]
    assert mean_abs_diff(media.frames[1], np.asarray(second)) < 12.0

    capped = decode_media(data, MediaLimits(max_gif_frames=2))
    assert capped.frames.shape[0] == 2 and capped.duration_s == pytest.approx(0.3)

    webp = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, quality=80)
    animated = decode_media(webp)
    assert animated.format == "webp" and animated.frames.shape == (4, 384, 512, 3)
    assert animated.timestamps.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_modes_become_rgb():
    size = (40, 30)
    # RGBA: transparent pixels become white, opaque ones keep their colour.
    rgba = Image.new("RGBA", size, (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 20, 30))
    frame = decode_media(encode(rgba, "PNG")).frames[0]
    assert frame[5, 5].tolist() == [0, 0, 255] and frame[5, 35].tolist() == [255, 255, 255]

    # P with a transparent palette index, as GIF and PNG store it.
    pal = Image.new("P", size, 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.paste(0, (0, 0, 10, 30))
    for fmt in ("PNG", "GIF"):
        frame = decode_media(encode(pal, fmt, transparency=0)).frames[0]
        assert frame[5, 5].tolist() == [255, 255, 255] and frame[5, 30].tolist() == [0, 255, 0]

    assert decode_media(encode(Image.new("L", size, 100), "PNG")).frames[0, 0, 0].tolist() == [100] * 3
    assert decode_media(encode(Image.new("LA", size, (100, 255)), "PNG")).frames[0, 0, 0].tolist() == [100] * 3
    assert decode_media(encode(Image.new("1", size, 1), "BMP")).frames[0, 0, 0].tolist() == [255] * 3

    # 16-bit greyscale is scaled to 8 bits, not clipped.
    grey16 = Image.fromarray(np.full((30, 40), 0x8000, dtype=np.uint16))
    assert grey16.mode.startswith("I;16")
    assert abs(int(decode_media(encode(grey16, "PNG")).frames[0, 0, 0, 0]) - 128) <= 1

    cmyk = Image.new("CMYK", size, (0, 255, 255, 0))  # red
    red = decode_media(encode(cmyk, "JPEG", quality=95)).frames[0, 15, 20].astype(int)
    assert red[0] > 230 and red[1] < 25 and red[2] < 25


def test_working_resolution_downscale(photo: Image.Image):
    wide = photo.resize((3000, 1000))
    limits = MediaLimits(working_max_side=1024)
    for fmt in ("JPEG", "PNG"):  # JPEG goes through draft(), PNG through a plain resize
        media = decode_media(encode(wide, fmt, quality=95), limits)
        assert media.frames.shape == (1, 341, 1024, 3)
        assert (media.width, media.height) == (3000, 1000)
        expected = np.asarray(wide.resize((1024, 341), Image.Resampling.BILINEAR))
        assert mean_abs_diff(media.frames[0], expected) < 6.0
    tall = decode_media(encode(photo.resize((300, 900)), "PNG"), MediaLimits(working_max_side=300))
    assert tall.frames.shape == (1, 300, 100, 3)


# ------------------------------------------------------------------------------------------------ videos


@pytest.mark.parametrize("path", VIDEOS, ids=lambda p: p.stem)
def test_corpus_videos(path: Path):
    data = path.read_bytes()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        coded = (stream.codec_context.width, stream.codec_context.height)
    media = decode_media(data)
    check_contract(media)
    assert (media.kind, media.format) == ("video", "mp4")
    assert media.height == coded[1] and abs(media.width - coded[0]) <= coded[0] * 0.1  # SAR may widen it
    assert media.frames.shape[1:3] == (media.height, media.width)  # all corpus videos fit in 2048 px
    assert media.timestamps[-1] < media.duration_s
    grid = media.timestamps[~media.scene_cut | (np.arange(len(media.timestamps)) == 0)]
    assert np.allclose(np.diff(grid), 1.0, atol=0.06)
    assert len(grid) == int(np.floor(media.duration_s - 0.04)) + 1


def test_normal_motion_gives_few_cuts():
    cuts = {path.stem: int(decode_media(path.read_bytes()).scene_cut[1:].sum()) for path in VIDEOS}
    # vid_003 is an edited clip with five real shot changes; the others are single shots.
    assert cuts == {"vid_000": 0, "vid_001": 0, "vid_002": 0, "vid_003": 5, "vid_004": 0, "vid_005": 0}


@pytest.fixture(scope="module")
def remuxed() -> dict[str, bytes]:
    source = CORPUS / "videos" / "vid_004.mp4"  # 176 x 144, 4 s: small enough to re-encode here
    frames = read_frames(source, 120, (176, 144))
    return {
        "webm": encode_video(frames, "webm", "libvpx", 30, deadline="realtime", **{"cpu-used": "8"}),
        "avi": encode_video(frames, "avi", "mpeg4", 30),
        "mkv": remux(source, "matroska"),
        "mov": remux(source, "mov"),
    }


@pytest.mark.parametrize("fmt", ["webm", "mkv", "avi", "mov"])
def test_other_containers(remuxed: dict[str, bytes], fmt: str):
    data = remuxed[fmt]
    assert sniff_format(data) == fmt
    media = decode_media(data)
    check_contract(media)
    assert (media.kind, media.format) == ("video", fmt)
    assert media.duration_s == pytest.approx(4.0, abs=0.1)
    assert media.timestamps.tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=0.05)
    assert media.frames.shape[0] == 4 and media.frames.shape[1] == 144
    reference = decode_media((CORPUS / "videos" / "vid_004.mp4").read_bytes())
    if media.frames.shape == reference.frames.shape:
        assert mean_abs_diff(media.frames, reference.frames) < 8.0


def test_scene_cut_at_a_splice():
    size = (320, 240)
    first = read_frames(CORPUS / "videos" / "vid_000.mp4", 39, size)  # 2.6 s at 15 fps
    second = read_frames(CORPUS / "videos" / "vid_003.mp4", 26, size)  # its own first cut is at 1.2 s
    data = encode_video(first + second, "mp4", "libx264", 15, preset="ultrafast")
    media = decode_media(data)
    check_contract(media)
    cut_times = media.timestamps[media.scene_cut][1:]
    assert len(cut_times) == 1, cut_times
    assert 2.6 - 0.01 <= cut_times[0] <= 2.6 + 0.5
    assert media.timestamps.tolist() == pytest.approx([0, 1, 2, cut_times[0], 3, 4], abs=0.04)


def test_max_frames_spreads_over_the_whole_video():
    data = (CORPUS / "videos" / "vid_001.mp4").read_bytes()  # 79.5 s
    media = decode_media(data, MediaLimits(max_frames=10))
    check_contract(media)
    assert len(media.timestamps) == 10
    assert media.timestamps[-1] > 0.85 * media.duration_s
    assert np.allclose(np.diff(media.timestamps), media.duration_s / 10, atol=0.15)


def test_long_video_is_sampled_by_seeking():
    # 120 s at 30 fps is over the frame count where the sampler seeks instead of decoding everything. Each
    # second has its own grey level on the left half, so a frame from the wrong place shows.
    def frames() -> Iterator[np.ndarray]:
        for index in range(3600):
            rgb = np.zeros((48, 64, 3), dtype=np.uint8)
            rgb[:, :32] = 2 * (index // 30)
            rgb[:, 32:, 2] = index % 256
            yield rgb

    data = encode_video(frames(), "mp4", "libx264", 30, preset="ultrafast", g="90")
    start = time.monotonic()
    media = decode_media(data, MediaLimits(max_frames=6))
    assert time.monotonic() - start < 5.0
    check_contract(media)
    assert media.timestamps.tolist() == pytest.approx([0, 20, 40, 60, 80, 100], abs=0.04)
    left = media.frames[:, :, :32, 0].reshape(len(media.frames), -1).mean(axis=1)
    assert np.allclose(left, 2 * np.floor(media.timestamps + 0.001), atol=4)

    everything = decode_media(data, MediaLimits(sample_fps=0.5))
    assert len(everything.timestamps) == 60


def test_display_rotation_is_applied():
    rgb = np.zeros((48, 64, 3), dtype=np.uint8)
    rgb[:, :32, 0] = 255  # red left, blue right
    rgb[:, 32:, 2] = 255
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(90)  # counter-clockwise, as a phone held upright records it
        for _ in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    media = decode_media(buf.getvalue())
    assert media.frames.shape == (1, 64, 48, 3) and (media.width, media.height) == (48, 64)
    assert media.frames[0, -5, 24, 0] > 200 and media.frames[0, 5, 24, 2] > 200  # left side went down


# ------------------------------------------------------------------------------------------------ bad input


def test_png_bomb_header_is_refused_before_decoding():
    data = png_bomb(50_000, 50_000)
    start = time.monotonic()
    assert isinstance(quick_error(data), MediaTooLarge)
    assert time.monotonic() - start < 0.5
    # Under Pillow's own bomb limit but over ours: still refused from the header.
    small = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8000, 8000, 8, 2, 0, 0, 0))
    assert isinstance(quick_error(small + png_chunk(b"IEND", b""), MediaLimits(max_pixels=1_000_000)), MediaTooLarge)


def test_truncated_and_empty_images():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    jpeg = IMAGE.read_bytes()
    assert isinstance(quick_error(jpeg[: len(jpeg) // 2]), CorruptMedia)
    png = encode(Image.open(IMAGE), "PNG")
    assert isinstance(quick_error(png[: len(png) // 2]), CorruptMedia)
    err = quick_error(b"")
    assert isinstance(err, UnsupportedMedia | CorruptMedia) and str(err) == "empty media"
    assert isinstance(quick_error(b"\x00" * 1000), UnsupportedMedia)


def test_audio_only_mp4():
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), dtype=np.float32)
        for index in range(20):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert sniff_format(buf.getvalue()) == "mp4"
    assert isinstance(quick_error(buf.getvalue()), NoVideoStream)


RANDOM = np.random.default_rng(20240601).bytes(200_000)
PREFIXES = {
    "none": b"",
    "mp4": b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2",
    "mov": b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ",
    "webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08"
    b"\x42\x82\x84webm\x42\x87\x81\x04\x42\x85\x81\x02",
    "avi": b"RIFF\x00\x10\x00\x00AVI LIST",
    "jpeg": b"\xff\xd8\xff\xe0",
    "png": b"\x89PNG\r\n\x1a\n",
    "gif": b"GIF89a",
    "webp": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
}


@pytest.mark.parametrize("prefix", list(PREFIXES))
def test_random_bytes(prefix: str):
    err = quick_error(PREFIXES[prefix] + RANDOM)
    assert isinstance(err, CorruptMedia | UnsupportedMedia), repr(err)


def test_limits():
    jpeg = IMAGE.read_bytes()
    assert isinstance(quick_error(jpeg, MediaLimits(max_bytes=1000)), MediaTooLarge)
    assert isinstance(quick_error(jpeg, MediaLimits(max_pixels=10_000)), MediaTooLarge)
    video = (CORPUS / "videos" / "vid_002.mp4").read_bytes()  # 5.3 s, 640 x 360
    assert isinstance(quick_error(video, MediaLimits(max_bytes=1000)), MediaTooLarge)
    assert isinstance(quick_error(video, MediaLimits(max_duration_s=2.0)), MediaTooLarge)
    assert isinstance(quick_error(video, MediaLimits(max_pixels=100_000)), MediaTooLarge)
    assert isinstance(quick_error(video, MediaLimits(decode_timeout_s=1e-4)), DecodeTimeout)
    assert isinstance(quick_error(jpeg, MediaLimits(decode_timeout_s=1e-6)), DecodeTimeout)


class _PipeWriter:
    """A write-only file: the Matroska muxer cannot go back to write the duration, as in a live stream."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self._buf.write(data)

    def getvalue(self) -> bytes:
        return self._buf.getvalue()


def test_duration_limit_without_declared_duration():
    data = remux(CORPUS / "videos" / "vid_002.mp4", "matroska", _PipeWriter)
    with av.open(io.BytesIO(data)) as container:
        assert not container.duration and not container.streams.video[0].duration
    media = decode_media(data)
    assert media.duration_s == pytest.approx(5.28, abs=0.1) and len(media.timestamps) == 6
    assert isinstance(quick_error(data, MediaLimits(max_duration_s=2.0)), MediaTooLarge)
    # Without a duration to plan from, the cap still holds and frames still reach the end.
    capped = decode_media(data, MediaLimits(max_frames=3))
    assert len(capped.timestamps) == 3 and capped.timestamps[-1] >= 4.0
