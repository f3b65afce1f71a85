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
