"""Typed errors for media that comes from outside, and the one mapping from failures to gRPC statuses.

Every failure on input we do not control is one of these, never a bare exception from a decoder: the gRPC
layer maps `grpc_code` to a status (`grpc_status`), and the Triton python backend carries `kind` across the wire
in the error message so the client can raise the same type again (`MediaError.from_message`).
"""

from __future__ import annotations

import re
from typing import ClassVar

import grpc


class MediaError(Exception):
    """Media we could not or would not process. `str(err)` is safe to show to the caller."""

    grpc_code: ClassVar[str] = "INVALID_ARGUMENT"

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_message(self) -> str:
        return f"[{self.kind}] {self}"

    @staticmethod
    def from_message(message: str) -> MediaError | None:
        """Rebuild the typed error from `to_message()` text embedded in a longer message (e.g. Triton's)."""
        match = re.search(r"\[(\w+)\] (.*)", message, re.DOTALL)
        if not match:
            return None
        cls = _KINDS.get(match.group(1))
        return cls(match.group(2).strip()) if cls else None


class UnsupportedMedia(MediaError):
    """Not an image or video container we accept (sniffed from the bytes, never the file name)."""


class CorruptMedia(MediaError):
    """A format we accept, but the bytes do not decode (truncated, damaged, random)."""


class NoVideoStream(MediaError):
    """A container without a video stream (audio only, subtitles only)."""


class MediaTooLarge(MediaError):
    """Over a size limit: bytes, pixels (decompression bombs), duration."""

    grpc_code = "RESOURCE_EXHAUSTED"


class DecodeTimeout(MediaError):
    """Decoding took longer than its time limit."""

    grpc_code = "DEADLINE_EXCEEDED"


_KINDS: dict[str, type[MediaError]] = {
    cls.__name__: cls
    for cls in (MediaError, UnsupportedMedia, CorruptMedia, NoVideoStream, MediaTooLarge, DecodeTimeout)
}


class InvalidInput(MediaError):
    """Tensors that do not fit a model's declared inputs (e.g. frames streamed with the wrong shape)."""


class InferenceUnavailable(Exception):
    """The inference backend (e.g. a Triton server) cannot be reached or failed: not the caller's fault."""


class IndexUnavailable(Exception):
    """A shared index (a Milvus server) cannot be reached, failed or timed out: not the caller's fault."""


_KINDS[InvalidInput.__name__] = InvalidInput


class DeadlineExceeded(MediaError):
    """The caller's deadline (or the service's default one) ran out before the work was committed."""

    grpc_code = "DEADLINE_EXCEEDED"


class NotFound(MediaError):
    """An id (reference, sighting, case) that does not exist, or no longer does."""

    grpc_code = "NOT_FOUND"


_KINDS.update({cls.__name__: cls for cls in (DeadlineExceeded, NotFound)})


def grpc_status(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one mapping from a failure to the gRPC status and message the caller sees. Anything untyped is INTERNAL
    with a fixed message: its details (which may name content) stay in the server's log."""
    if isinstance(error, MediaError):
        return getattr(grpc.StatusCode, error.grpc_code), error.to_message()
    if isinstance(error, InferenceUnavailable):
        return grpc.StatusCode.UNAVAILABLE, f"inference unavailable: {error}"
    if isinstance(error, IndexUnavailable):
        return grpc.StatusCode.UNAVAILABLE, f"index unavailable: {error}"
    return grpc.StatusCode.INTERNAL, "internal error (logged on the server)"
