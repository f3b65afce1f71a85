"""The snapshot file format of every index, and the one atomic, durable file writer (indexes and libraries)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

SNAPSHOT_MAGIC = b"JIWOOMIX"
SNAPSHOT_VERSION = 1
_DIGEST = 32  # sha256 trailer


def write_snapshot(path: Path, header: dict[str, Any], sections: dict[str, np.ndarray]) -> None:
    """MAGIC | u32 version | u64 header length | header JSON | raw sections | sha256 of all before it.

    Written to a temp file beside `path`, fsynced, then renamed over it: a crash leaves the old snapshot or the
    new one, never half of one.
    """
    arrays = {name: np.ascontiguousarray(a) for name, a in sections.items()}
    header = {**header, "sections": [[n, a.dtype.str, list(a.shape), a.nbytes] for n, a in arrays.items()]}
    head = json.dumps(header).encode()

    def write(f: BinaryIO) -> None:
        digest = hashlib.sha256()
        for chunk in (SNAPSHOT_MAGIC, SNAPSHOT_VERSION.to_bytes(4, "little"), len(head).to_bytes(8, "little"),
                      head, *(memoryview(a).cast("B") for a in arrays.values() if a.nbytes)):
            digest.update(chunk)
            f.write(chunk)
        f.write(digest.digest())

    atomic_write(Path(path), write)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """The one way snapshot files are written: to a temp file beside `path`, fsynced, renamed over it, and the
    rename fsynced too. A crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_snapshot(path: Path, kind: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Validated header and read-only section arrays; ValueError on anything truncated, corrupt or foreign."""
    data = Path(path).read_bytes()
    fixed = len(SNAPSHOT_MAGIC) + 12
    if len(data) < fixed + _DIGEST or not data.startswith(SNAPSHOT_MAGIC):
        raise ValueError(f"{path}: not a jiwoom index snapshot (bad magic or too short)")
    view = memoryview(data)
    version = int.from_bytes(view[8:12], "little")
    if version != SNAPSHOT_VERSION:
        raise ValueError(f"{path}: snapshot format version {version}, this code reads {SNAPSHOT_VERSION}")
    if hashlib.sha256(view[:-_DIGEST]).digest() != bytes(view[-_DIGEST:]):
        raise ValueError(f"{path}: snapshot checksum mismatch (truncated or corrupt)")
    head_len = int.from_bytes(view[12:20], "little")
    try:
        header = json.loads(bytes(view[fixed : fixed + head_len]))
        if header.get("kind") != kind:
            raise ValueError(f"{path}: snapshot holds a {header.get('kind')!r} index, expected {kind!r}")
        sections, offset = {}, fixed + head_len
        for name, dtype, shape, nbytes in header["sections"]:
            sections[name] = np.frombuffer(view[offset : offset + nbytes], dtype=np.dtype(dtype)).reshape(shape)
            offset += nbytes
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: malformed snapshot header: {err}") from err
    if offset != len(data) - _DIGEST:
        raise ValueError(f"{path}: snapshot sections do not add up to the file size")
    return header, sections
