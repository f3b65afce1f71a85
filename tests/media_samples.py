"""Media the tests build by hand (hostile files, videos), shared by the decoder, Triton and console tests."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator

import av
import numpy as np


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG whose header claims width x height RGB pixels over a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def encode_video(
    frames: Iterator[np.ndarray] | list[np.ndarray], container_format: str, codec: str, fps: int, **options: str
) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_format) as out:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = out.add_stream(codec, rate=fps, options=options)
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        assert stream is not None
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def synthetic_sound(seconds: float, seed: int, rate: int = 44100) -> np.ndarray:
    """Mono float32 sound with the structure Chromaprint keys on: chords that change every quarter second, over
    a little noise. Different seeds are different recordings."""
    rng = np.random.default_rng(seed)
    n, step = int(seconds * rate), int(0.25 * rate)
    t = np.arange(n) / rate
    out = rng.normal(0.0, 0.02, n)
    for start in range(0, n, step):
        end = min(n, start + step)
        for freq in rng.uniform(110.0, 1760.0, 3):
            out[start:end] += np.sin(2 * np.pi * freq * t[start:end]) * rng.uniform(0.1, 0.3)
    return (out / np.abs(out).max() * 0.8).astype(np.float32)


def encode_video_with_sound(frames: list[np.ndarray], fps: int, sound: np.ndarray, rate: int = 44100,
                            audio_codec: str = "aac", audio_rate: int | None = None, bitrate: int = 96000) -> bytes:
    """An MP4 (H.264) of `frames` with `sound` (mono float32 at `rate`) as its AAC track, resampled to
    `audio_rate` (default: `rate`) and encoded at `bitrate`."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        audio = out.add_stream(audio_codec, rate=audio_rate or rate)
        audio.bit_rate = bitrate
        audio.layout = "mono"
        for rgb in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        resampler = av.AudioResampler(format=audio.format.name, layout="mono", rate=audio_rate or rate)
        block = 4096
        for start in range(0, len(sound), block):
            frame = av.AudioFrame.from_ndarray(sound[None, start:start + block], format="flt", layout="mono")
            frame.sample_rate = rate
            for resampled in resampler.resample(frame):
                for packet in audio.encode(resampled):
                    out.mux(packet)
        for resampled in resampler.resample(None):
            for packet in audio.encode(resampled):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    return buf.getvalue()
