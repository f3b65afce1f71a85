"""Encryption at rest for evidence artefacts: AES-256-GCM, one data key per evidence item.

Each item's data key is stored in the database wrapped (encrypted) by the master key, a 32-byte file outside the
database (0600). Deleting an item deletes its wrapped key, which makes its artefacts unreadable wherever their
ciphertext may survive (backups, heap pages PostgreSQL has not reused): forgetting a case is crypto-shredding.
Losing the master key loses all evidence: back it up apart from the database.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from server.storage.keys import KEY_BYTES, KeyFileError, load_key_file

NONCE_BYTES = 12
_WRAP_CONTEXT = b"jiwoom evidence item key v1"


class VaultError(Exception):
    """A key file that is missing, malformed or too open, or ciphertext that fails authentication."""


def load_master_key(path: Path, *, create: bool = True) -> bytes:
    """The master key from `path`, created (random, mode 0600) on first use when `create` is set."""
    try:
        return load_key_file(path, "evidence master key", create=create)
    except KeyFileError as error:
        raise VaultError(str(error)) from None


class Vault:
    def __init__(self, master_key: bytes) -> None:
        self._master = AESGCM(master_key)

    def new_item_key(self) -> tuple[bytes, bytes]:
        """(data key, wrapped data key to store with the item)."""
        key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        nonce = secrets.token_bytes(NONCE_BYTES)
        return key, nonce + self._master.encrypt(nonce, key, _WRAP_CONTEXT)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return self._master.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _WRAP_CONTEXT)
        except InvalidTag as error:
            raise VaultError("item key does not unwrap with this master key") from error


def artefact_context(item_id: int, kind: str) -> bytes:
    """Associated data: ciphertext moved to another item or kind fails to decrypt."""
    return f"jiwoom artefact {item_id} {kind}".encode()


def encrypt(key: bytes, plaintext: bytes, context: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext with tag)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, context)


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, context: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, context)
    except InvalidTag as error:
        raise VaultError("artefact fails authentication (altered, or the wrong key)") from error
