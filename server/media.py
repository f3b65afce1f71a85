"""Decoding and frame sampling of untrusted media bytes.

Everything here runs on bytes from outside, so every failure leaves as a `jiwoom.api.errors.MediaError` subclass
with a message that is safe to show the caller. Limits come from `MediaLimits` and are checked as early as the
bytes allow: size before parsing, pixels from the header before decoding, duration from the container before
demuxing (and again on every decoded frame, for containers that do not declare it or lie about it).

Images go through Pillow, videos through PyAV (FFmpeg), both from memory. Frames come back as one uint8
[F, H, W, 3] RGB array at working resolution (long side <= `working_max_side`), with timestamps and scene-cut
flags; a video is sampled every 1/`sample_fps` seconds plus the first frames of new shots.

With `gpu=True` (ModelSettings.gpu_decode), still JPEGs are decoded by nvJPEG (torchvision) and videos by NVDEC
(FFmpeg's CUDA hwaccel) where this process has them and a GPU; otherwise, and for anything they refuse, the CPU
path decodes as always. Every limit is checked the same way before either decodes.
"""

from __future__ import annotations

import functools
import io
import itertools
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import av
import av.container
import av.video
import numpy as np
from av.codec.hwaccel import HWAccel
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageFile, UnidentifiedImageError

from jiwoom.api.errors import (
    CorruptMedia,
    DecodeTimeout,
    MediaError,
    MediaTooLarge,
    NoVideoStream,
    UnsupportedMedia,
)
from server.config import MediaLimits

__all__ = ["IMAGE_FORMATS", "VIDEO_FORMATS", "DecodedMedia", "decode_media", "sniff_format"]

log = logging.getLogger("jiwoom.media")
AUDIO_RATE = 11025  # what Chromaprint works at: decoding straight to it spares it a second resampling

IMAGE_FORMATS = ("jpeg", "png", "webp", "gif", "bmp")
VIDEO_FORMATS = ("mp4", "mov", "webm", "mkv", "avi")

# Pillow plugin per sniffed format: opening with only that plugin stops Pillow from guessing another parser.
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP"}
# FFmpeg demuxer per sniffed format: forcing it stops FFmpeg's probing from picking e.g. concat or HLS, which
# can open other files.
_AV_DEMUXERS = {"mp4": "mov", "mov": "mov", "webm": "matroska", "mkv": "matroska", "avi": "avi"}

# BITMAPINFOHEADER family sizes: "BM" alone is too weak a magic (text files start with it).
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
# ISO-BMFF brands that are still images (HEIF, AVIF), which we do not accept.
_BMFF_IMAGE_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1", b"avif", b"avis"})
# Old QuickTime files start with one of these atoms instead of ftyp.
_QT_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})

_SIG_W, _SIG_H = 32, 18  # scene-cut signature: a tiny RGB thumbnail, cheap to make from any decoded frame
_SEEK_ABOVE_FRAMES = 3000  # longer videos are sampled by seeking, not by decoding every frame
_MAX_BAD_PACKETS = 64  # decoder errors tolerated per video (damaged re-uploads still get matched)
_EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset(
    {Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270}
)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


@dataclass(frozen=True)
class DecodedMedia:
    kind: Literal["image", "video"]
    format: str  # one of IMAGE_FORMATS or VIDEO_FORMATS
    frames: np.ndarray  # uint8 [F, H, W, 3] RGB, C-contiguous; all frames the same size
    timestamps: np.ndarray  # float32 [F] seconds from start (0.0 for stills; animated images use frame durations)
    scene_cut: np.ndarray  # bool [F]: True where the frame starts a new shot (first frame True)
    duration_s: float  # 0.0 for stills
    width: int  # of the original media as displayed (orientation applied), before the working-size downscale
    height: int
    # the first audio track as mono int16 at AUDIO_RATE, up to MediaLimits.max_audio_s; empty where there is none
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))


# --------------------------------------------------------------------------------------------- sniffing


def sniff_format(data: bytes) -> str:
    """The media format from magic bytes alone (never a file name). Raises UnsupportedMedia."""
    if not data:
        raise UnsupportedMedia("empty media")
    head = bytes(data[:64])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        return "bmp"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return _ebml_format(bytes(data[:4096]))
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _BMFF_IMAGE_BRANDS:
            raise UnsupportedMedia("HEIF/AVIF images are not supported")
        return "mov" if brand == b"qt  " else "mp4"
    if len(head) >= 8 and head[4:8] in _QT_ATOMS:
        return "mov"
    raise UnsupportedMedia("not a supported image or video format")


def _ebml_format(head: bytes) -> str:
    """webm or mkv from the EBML header's DocType; a header we cannot read is left to the demuxer to refuse."""
    try:
        pos = 4
        size, pos = _ebml_vint(head, pos)
        end = min(len(head), pos + size)
        while pos < end:
            element, pos = _ebml_vint(head, pos, keep_marker=True)
            size, pos = _ebml_vint(head, pos)
            if element == 0x4282:  # DocType
                doctype = head[pos : pos + size].rstrip(b"\x00")
                if doctype == b"webm":
                    return "webm"
                if doctype == b"matroska":
                    return "mkv"
                raise UnsupportedMedia("EBML document that is neither Matroska nor WebM")
            pos += size
    except (IndexError, ValueError):
        pass
    return "mkv"  # DocType defaults to matroska


def _ebml_vint(buf: bytes, pos: int, keep_marker: bool = False) -> tuple[int, int]:
    first = buf[pos]
    if first == 0:
        raise ValueError("EBML vint longer than 8 bytes")
    length = 9 - first.bit_length()
    value = first if keep_marker else first & (0xFF >> length)
    for byte in buf[pos + 1 : pos + length]:
        value = (value << 8) | byte
    if pos + length > len(buf):
        raise IndexError("EBML vint past the end")
    return value, pos + length


# --------------------------------------------------------------------------------------------- entry point


def decode_media(data: bytes, limits: MediaLimits = MediaLimits(), gpu: bool = False) -> DecodedMedia:  # noqa: B008
    """Decode an image or video from untrusted bytes into working-resolution RGB frames (`gpu`: see the module
    docstring).

    Raises only MediaError subclasses: UnsupportedMedia, CorruptMedia, NoVideoStream, MediaTooLarge,
    DecodeTimeout.
    """
    if len(data) > limits.max_bytes:
        raise MediaTooLarge(f"{len(data)} bytes is over the limit of {limits.max_bytes}")
    if not data:
        raise UnsupportedMedia("empty media")
    deadline = time.monotonic() + limits.decode_timeout_s
    fmt = sniff_format(data)
    try:
        if fmt in _PIL_FORMATS:
            return _decode_image(data, fmt, limits, deadline, gpu)
        return _decode_video(data, fmt, limits, deadline, gpu)
    except MediaError:
        raise
    except MemoryError:
        raise MediaTooLarge(f"{fmt} needs more memory to decode than is available") from None
    except Exception as exc:
        # FFmpeg's interrupt callback surfaces a deadline as an ordinary av error.
        if time.monotonic() > deadline:
            raise DecodeTimeout(f"{fmt} decoding took longer than {limits.decode_timeout_s:g} s") from exc
        raise CorruptMedia(f"{fmt} does not decode: {_describe(exc)}") from exc


def _check_deadline(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise DecodeTimeout(f"{what} decoding ran past its time limit")


def _describe(exc: BaseException) -> str:
    """A library's error text, without object reprs or addresses, short enough for a status message."""
    text = str(exc)
    text = re.sub(r"<[^<>]*\bat 0x[0-9a-fA-F]+>", "<object>", text)
    text = re.sub(r"0x[0-9a-fA-F]{6,}", "0x?", text)
    text = re.sub(r"\[Errno -?\d+\]\s*|:\s*'<none>'", "", text)  # FFmpeg's errno and our nameless input
    text = " ".join(text.split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size with the long side at most max_side, aspect kept."""
    long_side = max(width, height)
    if long_side <= max_side:
        return width, height
    scale = max_side / long_side
    if width >= height:
        return max_side, max(1, round(height * scale))
    return max(1, round(width * scale)), max_side


# --------------------------------------------------------------------------------------------- scene cuts


@dataclass(frozen=True)
class _Signature:
    thumb: np.ndarray  # int16 [_SIG_H, _SIG_W, 3]
    hist: np.ndarray  # float32 [3, 16], each row sums to 1

    @staticmethod
    def of(thumb: np.ndarray) -> _Signature:
        pixels = thumb.reshape(-1, 3)
        hist = np.stack([np.bincount(pixels[:, c] >> 4, minlength=16) for c in range(3)]).astype(np.float32)
        return _Signature(thumb.astype(np.int16), hist / len(pixels))

    def distance(self, other: _Signature) -> float:
        """In [0, 1]: 1 - (1 - colour-histogram distance) * (1 - layout distance).

        The histogram term ignores motion, the thumbnail term catches cuts between shots of similar colour;
        combining them like independent evidence keeps normal motion low (<= 0.2 on the dev corpus) while
        cuts between different clips score >= 0.5.
        """
        hist = float(np.abs(self.hist - other.hist).sum()) / 6.0  # total variation, averaged over channels
        layout = min(1.0, 2.0 * float(np.abs(self.thumb - other.thumb).mean()) / 255.0)
        return 1.0 - (1.0 - hist) * (1.0 - layout)


class _Sampler:
    """Keeps frames on the sampling grid plus the first frame of each new shot, never more than max_frames.

    Over the cap, the frame whose removal leaves the smallest hole in time goes (shot starts count double),
    so kept frames stay spread over the whole video whatever order the surplus arrives in; memory stays
    bounded by max_frames working-size frames.
    """

    def __init__(self, interval: float, max_frames: int, threshold: float, tolerance: float) -> None:
        self.interval = interval
        self.max_frames = max(1, max_frames)
        self.threshold = threshold
        self.tolerance = tolerance
        # A burst of cuts (flashes, strobing) emits at most one frame per min_gap; the flag waits for it.
        self.min_gap = min(0.1, interval / 4)
        self.next_grid = 0.0
        self.prev_sig: _Signature | None = None
        self.pending_cut = False
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.cuts: list[bool] = []

    def offer(self, t: float, sig: _Signature, rgb: Callable[[], np.ndarray]) -> None:
        """Look at one frame (time t from start); rgb() makes its working-size pixels if it is kept."""
        cut = self.prev_sig is None or self.prev_sig.distance(sig) > self.threshold
        self.prev_sig = sig
        self.pending_cut = self.pending_cut or cut
        on_grid = t >= self.next_grid - self.tolerance
        after_gap = not self.times or t - self.times[-1] >= self.min_gap
        if not (on_grid or (self.pending_cut and after_gap)):
            return
        if on_grid:
            self.next_grid = (math.floor((t + self.tolerance) / self.interval) + 1) * self.interval
        self.frames.append(rgb())
        self.times.append(t)
        self.cuts.append(self.pending_cut)
        self.pending_cut = False
        if len(self.frames) > self.max_frames:
            self._evict()

    def _evict(self) -> None:
        times = np.asarray(self.times)
        hole = np.empty(len(times))
        hole[1:-1] = times[2:] - times[:-2]
        hole[-1] = 2.0 * (times[-1] - times[-2])  # the newest frame has no successor yet
        hole *= np.where(self.cuts, 2.0, 1.0)
        hole[0] = np.inf  # the first frame always stays
        drop = int(np.argmin(hole))
        if self.cuts[drop]:
            # The next kept frame (or the next one offered) is now the first of that shot.
            if drop + 1 < len(self.cuts):
                self.cuts[drop + 1] = True
            else:
                self.pending_cut = True
        now = self.times[-1]
        del self.frames[drop], self.times[drop], self.cuts[drop]
        # Without a declared duration the grid was guessed too dense: widen it to what fits so far.
        self.interval = max(self.interval, now / self.max_frames)
        self.next_grid = (math.floor((now + self.tolerance) / self.interval) + 1) * self.interval


def _stack(frames: list[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(np.stack(frames), dtype=np.uint8)


# --------------------------------------------------------------------------------------------- images


def _decode_image(data: bytes, fmt: str, limits: MediaLimits, deadline: float, gpu: bool = False) -> DecodedMedia:
    # Our own check below is the real limit; Pillow's bomb check stays as a backstop but must not refuse
    # what the deployment allows. Only ever raised, never lowered, so concurrent calls cannot race it down.
    if Image.MAX_IMAGE_PIXELS is not None and limits.max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limits.max_pixels
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone in this process turned on silent acceptance of truncated files; we do not follow it.
        raise CorruptMedia("refusing to decode images while PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set")
    try:
        im = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaTooLarge(f"{fmt} image is over the pixel limit: {_describe(exc)}") from None
    except UnidentifiedImageError:
        raise CorruptMedia(f"{fmt} header does not parse") from None
    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise CorruptMedia(f"{fmt} header gives an empty size {width}x{height}")
        if width * height > limits.max_pixels:
            raise MediaTooLarge(f"{width}x{height} image is over the limit of {limits.max_pixels} pixels")
        if gpu and fmt == "jpeg" and getattr(im, "n_frames", 1) == 1:
            orientation = _exif_orientation(im)
            still = _decode_jpeg_gpu(data, orientation, limits.working_max_side)
            if still is not None:
                swapped = orientation in _SWAPS_SIDES_ORIENTATIONS
                return _still(fmt, still, (height, width) if swapped else (width, height))
        if fmt == "jpeg" and max(width, height) > limits.working_max_side:
            # DCT-domain downscale by 1/2, 1/4 or 1/8 while decoding: a fraction of the work and memory.
            scale = limits.working_max_side / max(width, height)
            im.draft(im.mode, (math.ceil(width * scale), math.ceil(height * scale)))

        frames: list[np.ndarray] = []
        sigs: list[_Signature] = []
        starts: list[float] = []
        clock = 0.0
        transpose: Image.Transpose | None = None
        out_size: tuple[int, int] | None = None
        for index in range(max(1, limits.max_gif_frames)):
            if index:
                try:
                    im.seek(index)
                except EOFError:
                    break  # a still image, or the last frame of an animation
            _check_deadline(deadline, fmt)
            im.load()  # the full decode: a truncated file raises here (LOAD_TRUNCATED_IMAGES stays False)
            if index == 0:
                transpose = _TRANSPOSE.get(_exif_orientation(im))
            frame = _pil_to_rgb(im)
            if transpose is not None:
                frame = frame.transpose(transpose)
            if out_size is None:
                out_size = _fit(frame.width, frame.height, limits.working_max_side)
            if frame.size != out_size:
                frame = frame.resize(out_size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            frames.append(np.asarray(frame, dtype=np.uint8))
            thumb = frame.resize((_SIG_W, _SIG_H), Image.Resampling.BOX)
            sigs.append(_Signature.of(np.asarray(thumb, dtype=np.uint8)))
            starts.append(clock)
            clock += _frame_duration_s(im)
        if transpose in _SWAPS_SIDES:
            width, height = height, width

    cuts = [True] + [b.distance(a) > limits.scene_cut_threshold for a, b in itertools.pairwise(sigs)]
    animated = len(frames) > 1
    return DecodedMedia(
        kind="image",
        format=fmt,
        frames=_stack(frames),
        timestamps=np.asarray(starts if animated else [0.0], dtype=np.float32),
        scene_cut=np.asarray(cuts, dtype=bool),
        duration_s=clock if animated else 0.0,
        width=width,
        height=height,
    )


def _still(fmt: str, frame: np.ndarray, size: tuple[int, int]) -> DecodedMedia:
    return DecodedMedia(kind="image", format=fmt, frames=_stack([frame]), timestamps=np.zeros(1, np.float32),
                        scene_cut=np.ones(1, bool), duration_s=0.0, width=size[0], height=size[1])


# EXIF orientation -> the same transposition as _TRANSPOSE, on a [..., H, W] tensor (the GPU path's pixels).
_TENSOR_ORIENTATIONS: dict[int, Callable[[Any], Any]] = {
    2: lambda t: t.flip(-1),
    3: lambda t: t.flip(-2, -1),
    4: lambda t: t.flip(-2),
    5: lambda t: t.transpose(-2, -1),
    6: lambda t: t.rot90(-1, (-2, -1)),
    7: lambda t: t.transpose(-2, -1).flip(-2, -1),
    8: lambda t: t.rot90(1, (-2, -1)),
}
_SWAPS_SIDES_ORIENTATIONS = frozenset({5, 6, 7, 8})


@functools.cache
def _nvjpeg() -> Callable[..., Any] | None:
    """torchvision's decode_jpeg when it and a CUDA device are there, else None (once per process)."""
    try:
        import torch
        from torchvision.io import decode_jpeg
    except Exception as error:  # ImportError, or OSError: a torchvision built for another torch fails to load
        log.info("GPU JPEG decoding unavailable: %s", error)
        return None
    if not torch.cuda.is_available():
        log.info("GPU JPEG decoding unavailable: PyTorch sees no CUDA device")
        return None
    return decode_jpeg


def orient(pixels: Any, orientation: int) -> Any:
    """A [..., H, W] tensor as the Pillow path shows it for this EXIF orientation (its own code, not
    decode_jpeg's apply_exif_orientation, so both paths transpose by one table)."""
    turn = _TENSOR_ORIENTATIONS.get(orientation)
    return pixels if turn is None else turn(pixels)


def _decode_jpeg_gpu(data: bytes, orientation: int, max_side: int) -> np.ndarray | None:
    """The JPEG decoded by nvJPEG, oriented and scaled to working size on the GPU; None: use the CPU path."""
    decode = _nvjpeg()
    if decode is None:
        return None
    import torch
    from torchvision.io import ImageReadMode

    try:
        pixels = orient(decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                               device="cuda"), orientation)
        height, width = pixels.shape[-2:]
        size = _fit(width, height, max_side)
        if size != (width, height):  # antialiased, like Pillow's reducing resize
            scaled = torch.nn.functional.interpolate(pixels[None].float(), size=(size[1], size[0]), mode="bilinear",
                                                     antialias=True, align_corners=False)
            pixels = scaled[0].round_().clamp_(0, 255).to(torch.uint8)
        return pixels.permute(1, 2, 0).contiguous().cpu().numpy()
    except Exception as error:  # CMYK, 12-bit, arithmetic coding...: nvJPEG refuses, Pillow does not
        log.debug("nvJPEG refused a JPEG, decoding on the CPU: %s", error)
        return None


def _exif_orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value) if isinstance(value, int) else 1
    except Exception:
        return 1  # damaged EXIF is common and harmless: show the pixels as stored


def _frame_duration_s(im: Image.Image) -> float:
    # Browsers show GIF frames with a delay of <= 10 ms for 100 ms; so do we, so timestamps always advance.
    duration = im.info.get("duration", 0)
    ms = float(duration) if isinstance(duration, int | float) else 0.0
    return (ms if ms > 10 else 100.0) / 1000.0


def _pil_to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparency is composited on white."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit greyscale (PNG): Pillow's own convert clips to 255 instead of scaling.
        values = np.asarray(im).astype(np.float32)
        if mode != "F":
            values /= 257.0
        grey = np.clip(values + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return im.convert("RGB")  # L, P, 1, CMYK (Adobe inversion is handled by the JPEG plugin), YCbCr


# --------------------------------------------------------------------------------------------- videos


@functools.cache
def _cuda_hwaccel() -> HWAccel | None:
    """NVDEC through FFmpeg's CUDA hwaccel, when this FFmpeg and a GPU have it (probed once per process).
    One hwaccel for every codec NVDEC decodes (H.264, HEVC, VP9, AV1), where h264_cuvid would be one decoder per
    codec; streams it cannot decode fall back to FFmpeg's software decoder, and frames come back in CPU memory."""
    hwaccel = HWAccel(device_type="cuda", allow_software_fallback=True)
    try:
        hwaccel.create(av.Codec("h264", "r"))
    except av.FFmpegError as error:
        log.info("GPU video decoding unavailable: %s", _describe(error))
        return None
    return hwaccel


def _decode_video(data: bytes, fmt: str, limits: MediaLimits, deadline: float, gpu: bool = False) -> DecodedMedia:
    remaining = max(0.001, deadline - time.monotonic())
    try:
        container = av.open(io.BytesIO(data), mode="r", format=_AV_DEMUXERS[fmt], timeout=(remaining, remaining),
                            hwaccel=_cuda_hwaccel() if gpu else None)
    except av.FFmpegError as exc:
        _check_deadline(deadline, fmt)
        raise CorruptMedia(f"{fmt} container does not parse: {_describe(exc)}") from None
    with container:
        _check_deadline(deadline, fmt)
        if not container.streams:
            raise CorruptMedia(f"{fmt} container has no streams")
        stream = _pick_video_stream(container)
        if stream is None:
            raise NoVideoStream(f"{fmt} container has no video stream")
        codec = stream.codec_context
        if codec is None:
            raise UnsupportedMedia(f"{fmt} video codec is not supported")
        if codec.width * codec.height > limits.max_pixels:
            raise MediaTooLarge(
                f"{codec.width}x{codec.height} video frames are over the limit of {limits.max_pixels} pixels"
            )
        declared = _declared_duration(container, stream)
        if declared is not None and declared > limits.max_duration_s:
            raise MediaTooLarge(f"{declared:.1f} s video is over the limit of {limits.max_duration_s:g} s")
        codec.thread_type = "AUTO"  # frame + slice threads; set before the first decode opens the codec
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate and 0 < float(rate) < 1000 else 0.0

        interval = 1.0 / limits.sample_fps if limits.sample_fps > 0 else math.inf
        if declared:
            # Over the cap: widen the grid up front so it covers the whole video, not just its start.
            interval = max(interval, declared / max(1, limits.max_frames))
        sampler = _Sampler(interval, limits.max_frames, limits.scene_cut_threshold, 0.5 / fps if fps else 0.0)
        reader = _FrameReader(container, stream, limits, deadline, fmt, fps)
        if declared and fps and declared * fps > _SEEK_ABOVE_FRAMES and math.isfinite(interval):
            _sample_by_seeking(reader, sampler, declared)
        else:
            for frame in reader.frames():
                reader.offer(sampler, frame)
        if not sampler.frames:
            raise CorruptMedia(f"{fmt} has no decodable video frames")
        duration = declared or (reader.last_t + (1.0 / fps if fps else 0.0))
        assert reader.display is not None  # set with the first decoded frame
        width, height = reader.display
        return DecodedMedia(
            kind="video",
            format=fmt,
            frames=_stack(sampler.frames),
            timestamps=np.asarray(sampler.times, dtype=np.float32),
            scene_cut=np.asarray(sampler.cuts, dtype=bool),
            duration_s=float(max(duration, reader.last_t)),
            width=width,
            height=height,
            audio=_decode_audio(data, fmt, limits, deadline),
        )


def _decode_audio(data: bytes, fmt: str, limits: MediaLimits, deadline: float) -> np.ndarray:
    """The first audio track, mono int16 at AUDIO_RATE, cut at `max_audio_s`. A video whose sound is missing or
    broken still decodes (its picture is the evidence), so this returns what decoded before an error; only the
    deadline is an error (DecodeTimeout)."""
    if limits.max_audio_s <= 0:
        return np.zeros(0, np.int16)
    remaining = max(0.001, deadline - time.monotonic())
    limit = int(limits.max_audio_s * AUDIO_RATE)
    chunks: list[np.ndarray] = []
    got = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format=_AV_DEMUXERS[fmt], timeout=(remaining, remaining)) as container:
            audio = next(iter(container.streams.audio), None)
            if audio is None or audio.codec_context is None:
                return np.zeros(0, np.int16)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
            for packet in container.demux(audio):
                _check_deadline(deadline, f"{fmt} audio")
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
                        got += len(chunks[-1])
                if got >= limit:
                    break
    except DecodeTimeout:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        _check_deadline(deadline, f"{fmt} audio")
        log.info("%s audio track stops decoding after %.1f s: %s", fmt, got / AUDIO_RATE, _describe(exc))
    if not chunks:
        return np.zeros(0, np.int16)
    return np.ascontiguousarray(np.concatenate(chunks)[:limit], dtype=np.int16)


def _pick_video_stream(container: av.container.InputContainer) -> av.video.VideoStream | None:
    videos = list(container.streams.video)
    # Cover art (an attached picture) is a video stream too; prefer real video, fall back to the picture.
    moving = [s for s in videos if not s.disposition & av.stream.Disposition.attached_pic]
    return (moving or videos or [None])[0]


def _declared_duration(container: av.container.InputContainer, stream: av.video.VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


class _FrameReader:
    """Decoded frames of one stream, with every check that has to run per packet and per frame."""

    def __init__(
        self,
        container: av.container.InputContainer,
        stream: av.video.VideoStream,
        limits: MediaLimits,
        deadline: float,
        fmt: str,
        fps: float,
    ) -> None:
        self.container = container
        self.stream = stream
        self.limits = limits
        self.deadline = deadline
        self.fmt = fmt
        self.frame_step = 1.0 / fps if fps else 0.04
        self.time_base = stream.time_base or Fraction(1, 1)
        self.origin: float | None = None  # absolute time of the first decoded frame: t = 0
        self.last_t = 0.0
        self.last_key_t: float | None = None
        self.gop_s = 1.0  # longest keyframe spacing seen: decoding forward that far is cheaper than a seek
        self.bad_packets = 0
        self.display: tuple[int, int] | None = None  # (width, height) as shown, rotation applied
        self.out_size: tuple[int, int] | None = None  # working size before rotation
        self.quarter_turns = 0
        self.sig_scaler = VideoReformatter()
        self.rgb_scaler = VideoReformatter()

    def frames(self) -> Iterator[av.VideoFrame]:
        """Decode from the demuxer's current position; damaged packets are skipped, up to a limit."""
        packets = self.container.demux(self.stream)
        while True:
            _check_deadline(self.deadline, self.fmt)
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError:
                _check_deadline(self.deadline, self.fmt)
                if self.origin is None:
                    raise
                return  # truncated after some good frames: keep what decoded
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                _check_deadline(self.deadline, self.fmt)
                self.bad_packets += 1
                if self.bad_packets > _MAX_BAD_PACKETS:
                    raise CorruptMedia(f"{self.fmt} has too many undecodable packets") from None
                continue
            for frame in decoded:
                _check_deadline(self.deadline, self.fmt)
                if isinstance(frame, av.VideoFrame):
                    yield frame

    def time_of(self, frame: av.VideoFrame) -> float:
        """Seconds from the first frame, checked against the duration limit."""
        absolute = frame.time if frame.pts is not None else None
        if absolute is None:
            absolute = (self.origin or 0.0) + self.last_t + self.frame_step
        if self.origin is None:
            self.origin = absolute
        t = max(0.0, absolute - self.origin)
        if t > self.limits.max_duration_s:
            raise MediaTooLarge(f"video runs past the limit of {self.limits.max_duration_s:g} s")
        if frame.key_frame:
            if self.last_key_t is not None and t > self.last_key_t:
                self.gop_s = max(self.gop_s, t - self.last_key_t)
            self.last_key_t = t
        self.last_t = max(self.last_t, t)
        return t

    def signature(self, frame: av.VideoFrame) -> _Signature:
        thumb = self.sig_scaler.reformat(frame, width=_SIG_W, height=_SIG_H, format="rgb24").to_ndarray()
        return _Signature.of(thumb)

    def rgb(self, frame: av.VideoFrame) -> np.ndarray:
        if self.out_size is None:
            self._set_geometry(frame)
        assert self.out_size is not None
        width, height = self.out_size
        pixels = self.rgb_scaler.reformat(frame, width=width, height=height, format="rgb24").to_ndarray()
        if self.quarter_turns:
            pixels = np.rot90(pixels, self.quarter_turns)
        return np.ascontiguousarray(pixels)

    def offer(self, sampler: _Sampler, frame: av.VideoFrame) -> float:
        if frame.width * frame.height > self.limits.max_pixels:
            raise MediaTooLarge(f"{frame.width}x{frame.height} video frame is over the pixel limit")
        if self.display is None:
            self._set_geometry(frame)
        t = self.time_of(frame)
        sampler.offer(t, self.signature(frame), lambda: self.rgb(frame))
        return t

    def _set_geometry(self, frame: av.VideoFrame) -> None:
        """Output size from the first frame; later frames are scaled to it, so all frames match."""
        sar = self.stream.sample_aspect_ratio or self.stream.codec_context.sample_aspect_ratio
        width = frame.width
        if sar and 0.1 < float(sar) < 10 and float(sar) != 1.0:
            width = max(1, round(frame.width * float(sar)))  # anamorphic: show it as a player would
        self.out_size = _fit(width, frame.height, self.limits.video_max_side)
        try:
            rotation = int(frame.rotation)
        except Exception:
            rotation = 0
        # Phones store portrait video landscape plus a display matrix; the matrix's angle is counter-clockwise.
        self.quarter_turns = round(rotation / 90) % 4
        self.display = (frame.height, width) if self.quarter_turns % 2 else (width, frame.height)


def _sample_by_seeking(reader: _FrameReader, sampler: _Sampler, declared: float) -> None:
    """Sample a long video at grid times by seeking near each one; cuts compare consecutive samples only."""
    frames = reader.frames()
    first = next(frames, None)
    if first is None:
        return
    reader.offer(sampler, first)
    current = 0.0
    target = sampler.interval
    while target < declared:
        _check_deadline(reader.deadline, reader.fmt)
        landed: float | None = None
        if target - current > reader.gop_s:
            assert reader.origin is not None
            try:
                reader.container.seek(int((reader.origin + target) / reader.time_base), stream=reader.stream)
                frames = reader.frames()
                reader.last_key_t = None  # keyframe spacing is only measured between consecutive keyframes
            except av.FFmpegError:
                reader.gop_s = math.inf  # cannot seek (no index): decode forward from here on
        frame: av.VideoFrame | None = None
        for frame in frames:
            current = reader.time_of(frame)
            if landed is None:
                landed = current
            if current >= target - sampler.tolerance:
                break
        else:
            frame = None
        if frame is None:
            break  # end of stream
        if landed is not None and landed < target:
            # Seeks land up to this far before their target (sparse keyframes, no index): seeking only pays
            # when the next target is further ahead than that.
            reader.gop_s = max(reader.gop_s, target - landed)
        if not sampler.times or current > sampler.times[-1]:
            if frame.width * frame.height > reader.limits.max_pixels:
                raise MediaTooLarge(f"{frame.width}x{frame.height} video frame is over the pixel limit")
            sampler.next_grid = min(sampler.next_grid, current)  # a seek sample is a grid sample
            sampler.offer(current, reader.signature(frame), lambda f=frame: reader.rgb(f))
        target = max(target + sampler.interval, (math.floor(current / sampler.interval) + 1) * sampler.interval)
