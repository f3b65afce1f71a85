"""The evidence log's hash chain and the evidence vault, on a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from clients.evidence.vault import Vault, VaultError, artefact_context, decrypt, encrypt, load_master_key
from server.storage import chain
from server.storage.db import migrate


@pytest.fixture
def conn(database_url: str):  # type: ignore[no-untyped-def]
    migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


def _append(conn: psycopg.Connection, n: int, item_id: int | None = None) -> list[chain.Entry]:
    entries = []
    for i in range(n):
        with conn.transaction():
            entries.append(chain.append(conn, "capture", {"n": i, "title": "한국어 제목"}, item_id=item_id))
    return entries


def test_chain_verifies_and_links(conn: psycopg.Connection) -> None:
    entries = _append(conn, 5)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    result = chain.verify(conn)
    assert result.ok, result.problems
    assert (result.entries, result.head_seq, result.head_hash) == (5, 5, entries[-1].entry_hash)


def test_log_is_append_only(conn: psycopg.Connection) -> None:
    _append(conn, 2)
    for statement in ("update evidence_log set event = 'x' where seq = 1", "delete from evidence_log where seq = 2",
                      "truncate evidence_log cascade", "update evidence_log_payloads set payload = '{}'"):
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(statement)


def _tamper(conn: psycopg.Connection, statement: str) -> None:
    """What someone with the database's superuser could do: switch the guards off and change a row."""
    with conn.transaction():
        conn.execute("alter table evidence_log disable trigger user")
        conn.execute("alter table evidence_log_payloads disable trigger user")
        for part in statement.split(";"):
            conn.execute(part)
        conn.execute("alter table evidence_log enable trigger user")
        conn.execute("alter table evidence_log_payloads enable trigger user")


@pytest.mark.parametrize(("statement", "finding"), [
    ("update evidence_log_payloads set payload = replace(payload, '한국어', '변조') where seq = 2", "payload altered"),
    ("update evidence_log set event = 'forget' where seq = 2", "entry altered"),
    ("delete from evidence_log_payloads where seq = 3", "payload missing"),
    ("delete from evidence_log_payloads where seq = 3; delete from evidence_log where seq = 3", "entries missing"),
])
def test_tampering_is_found(conn: psycopg.Connection, statement: str, finding: str) -> None:
    _append(conn, 4)
    _tamper(conn, statement)
    result = chain.verify(conn)
    assert not result.ok
    assert any(finding in problem for problem in result.problems), result.problems


def test_a_recorded_forget_is_not_tampering(conn: psycopg.Connection) -> None:
    sighting = conn.execute("insert into sightings (url, kind, seen_by) values ('https://x.example/a.jpg', 'image',"
                            " 'test') returning id").fetchone()[0]
    item = conn.execute("insert into evidence_items (sighting_id, reason, under_19, site, priority, wrapped_key)"
                        " values (%s, 'under_19', true, 'x.example', 100, '') returning id", (sighting,)).fetchone()[0]
    _append(conn, 2, item_id=item)
    with conn.transaction():
        chain.record_forget(conn, [item], "sighting")
        conn.execute("delete from evidence_items where id = %s", (item,))  # its payloads go by cascade
    result = chain.verify(conn)
    assert result.ok, result.problems
    assert result.forgotten_payloads == 2


def test_vault_round_trip_and_shredding(tmp_path: Path) -> None:
    key_file = tmp_path / "evidence.key"
    vault = Vault(load_master_key(key_file))
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert load_master_key(key_file) == load_master_key(key_file)  # created once, then read
    key, wrapped = vault.new_item_key()
    nonce, ciphertext = encrypt(key, b"screenshot bytes", artefact_context(1, "screenshot"))
    assert b"screenshot bytes" not in ciphertext
    assert decrypt(vault.unwrap(wrapped), nonce, ciphertext, artefact_context(1, "screenshot")) == b"screenshot bytes"
    with pytest.raises(VaultError):  # moved to another item: refused
        decrypt(key, nonce, ciphertext, artefact_context(2, "screenshot"))
    with pytest.raises(VaultError):  # another installation's master key cannot unwrap it
        Vault(load_master_key(tmp_path / "other.key")).unwrap(wrapped)
    key_file.chmod(0o644)
    with pytest.raises(VaultError, match="chmod 600"):
        load_master_key(key_file)


def _load_key(path: str) -> bytes:
    return load_master_key(Path(path))


def test_processes_that_start_together_make_one_key(tmp_path: Path) -> None:
    """Replicas that share a key file and start at once: each reads the one key made, never a half-written one."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(6) as pool:
        for trial in range(5):
            path = tmp_path / f"shared-{trial}.key"
            keys = pool.map(_load_key, [str(path)] * 12)
            assert len(set(keys)) == 1 and len(keys[0]) == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"shared-{t}.key" for t in range(5)]  # no temporaries
