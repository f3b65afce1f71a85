"""Secret keys kept in files outside the database (0600): the evidence master key and the identifier key. A
database dump or backup alone then reveals neither the evidence nor the victims' identifiers."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from server.config import Settings

KEY_BYTES = 32


class KeyFileError(Exception):
    """A key file that is missing, malformed or readable by others."""


def load_key_file(path: Path, what: str, *, create: bool = True) -> bytes:
    """The key in `path`, created (random, mode 0600) on first use when `create` is set."""
    path = Path(path).expanduser()
    if not path.exists():
        if not create:
            raise KeyFileError(f"{what} {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name, then linked into place: a process starting at the same moment
        # (replicas sharing the file) sees no key or a whole one, never a half-written one
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            os.link(temporary, path)
        except FileExistsError:  # another process made it first: read theirs
            pass
        finally:
            temporary.unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        raise KeyFileError(f"{what} {path} is readable by others: chmod 600 it")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{what} {path} must hold {KEY_BYTES} bytes, not {len(key)}")
    return key


def identifier_key_path(settings: Settings) -> Path:
    """Where the key of the victims' identifiers' digests is: `service.identifier_key_file`, or data_dir's."""
    configured = settings.service.identifier_key_file
    return Path(configured).expanduser() if configured else \
        Path(settings.service.data_dir).expanduser() / "identifier.key"
