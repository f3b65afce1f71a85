"""PostgreSQL access: the durable truth behind the indexes. Plain SQL over a psycopg 3 pool.

Each write that the service acknowledges is one transaction together with its audit-log row, so a crash
leaves either all of it or none of it.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

import numpy as np
from psycopg import Connection
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from server.config import ModelSettings
from server.inference.features import LocalFeatures
from server.signals import SignalVectors, signal_models
from server.storage import chain

ROLES = ("crawler", "case_system", "officer", "admin")
Collection = Literal["references", "sightings", "benign"]
# table, owner column, owner table
_VECTOR_TABLES: dict[str, tuple[str, str, str]] = {
    "references": ("reference_vectors", "reference_id", "reference_media"),
    "sightings": ("sighting_vectors", "sighting_id", "sightings"),
    "benign": ("benign_vectors", "benign_id", "benign_media"),
}
_LOCAL_TABLES: dict[str, tuple[str, str]] = {
    "references": ("reference_local_features", "reference_id"),
    "sightings": ("sighting_local_features", "sighting_id"),
}
LOAD_BATCH = 500


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


@dataclass(frozen=True)
class MediaSummary:
    kind: str
    sha256: bytes
    width: int = 0
    height: int = 0
    duration_s: float = 0.0
    frames: int = 0


@dataclass(frozen=True)
class SourceRecord:
    url: str
    page_url: str = ""
    site: str = ""
    title: str = ""
    author: str = ""
    posted_at: datetime | None = None
    text: str = ""
    suspected: bool = False
    extra: dict[str, str] | None = None


@dataclass(frozen=True)
class ExposureRecord:
    """Personal information a sighting's post shows: its kind and where (title, text, ocr), never its value."""

    case_id: str | None  # None: a generic pattern, anyone's
    kind: str
    field: str


@dataclass(frozen=True)
class MatchRecord:
    reference_id: int
    signal: str
    score: float
    threshold: float
    reference_segment: tuple[float, float]
    other_segment: tuple[float, float]
    matched_frames: int
    under_19: bool
    faces: list[dict[str, Any]]
    found_by: Literal["match", "retro_hunt"]
    sighting_id: int | None = None
    other_reference_id: int | None = None
    p_false: float | None = None
    expected_false: float | None = None
    verification: str = ""
    face_only: bool = False
    audio_only: bool = False


@dataclass(frozen=True)
class StoredLocal:
    """ORB keypoints of one stored frame (`server.matching.verify`), with its time and size in keypoint units."""

    frame: int
    timestamp: float
    size: tuple[float, float]
    local: LocalFeatures


class Forgotten(NamedTuple):
    references: list[int]  # ids deleted
    matches: int  # matches deleted with them
    benign: list[int]  # negative-bank entries of a forgotten case


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Store:
    def __init__(self, pool: ConnectionPool, models: ModelSettings | None = None) -> None:
        """`models`: the model settings whose ids are recorded with every vector row written (the service's)."""
        self.pool = pool
        self.signal_models = signal_models(models or ModelSettings())

    # -- tokens ---------------------------------------------------------------------------------------------

    def create_token(self, name: str, role: str, actor: str = "cli") -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        token = "jw_" + secrets.token_urlsafe(32)
        with self.pool.connection() as conn:
            conn.execute("insert into api_tokens (name, role, token_sha256) values (%s, %s, %s)",
                         (name, role, token_digest(token)))
            audit(conn, Principal(actor, "admin"), "CreateToken", name, {"role": role})
        return token

    def principal(self, token: str) -> Principal | None:
        with self.pool.connection() as conn:
            row = conn.execute("select name, role from api_tokens where token_sha256 = %s and revoked_at is null",
                               (token_digest(token),)).fetchone()
        return Principal(*row) if row else None

    def token_count(self) -> int:
        with self.pool.connection() as conn:
            return conn.execute("select count(*) from api_tokens where revoked_at is null").fetchone()[0]

    # -- cases ----------------------------------------------------------------------------------------------

    def case_thresholds(self) -> dict[str, dict[str, float]]:
        with self.pool.connection() as conn:
            return {case: dict(t) for case, t in conn.execute("select id, thresholds from cases")}

    def configure_case(self, who: Principal, case_id: str, overrides: dict[str, float]) -> tuple[dict, int]:
        with self.pool.connection() as conn:
            conn.execute("insert into cases (id, created_by) values (%s, %s) on conflict do nothing",
                         (case_id, who.name))
            row = conn.execute("update cases set thresholds = thresholds || %s where id = %s returning thresholds",
                               (Jsonb(overrides), case_id)).fetchone()
            count = conn.execute("select count(*) from reference_media where case_id = %s", (case_id,)).fetchone()
            audit(conn, who, "ConfigureCase", case_id, {"thresholds": overrides})
        return dict(row[0]), int(count[0])

    # -- references -----------------------------------------------------------------------------------------

    def find_reference(self, case_id: str, sha256: bytes) -> tuple[int, MediaSummary] | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                "select id, kind, content_sha256, width, height, duration_s, frame_count from reference_media"
                " where case_id = %s and content_sha256 = %s", (case_id, sha256)).fetchone()
        return (row[0], MediaSummary(row[1], bytes(row[2]), *row[3:])) if row else None

    def add_reference(self, who: Principal, case_id: str, media: MediaSummary,
                      vectors: dict[str, SignalVectors], local: Iterable[StoredLocal] = ()) -> tuple[int, bool]:
        """Insert a reference and its vectors in one transaction; (id, created). Same bytes, same case: the
        existing id (a retried call must not make a second reference)."""
        with self.pool.connection() as conn:
            conn.execute("insert into cases (id, created_by) values (%s, %s) on conflict do nothing",
                         (case_id, who.name))
            row = conn.execute(
                "insert into reference_media (case_id, kind, content_sha256, width, height, duration_s,"
                " frame_count, created_by) values (%s, %s, %s, %s, %s, %s, %s, %s)"
                " on conflict (case_id, content_sha256) do nothing returning id",
                (case_id, media.kind, media.sha256, media.width, media.height, media.duration_s, media.frames,
                 who.name),
            ).fetchone()
            if row is None:
                existing = conn.execute("select id from reference_media where case_id = %s and content_sha256 = %s",
                                        (case_id, media.sha256)).fetchone()
                return existing[0], False
            reference_id = row[0]
            _insert_vectors(conn, "references", reference_id, vectors, self.signal_models)
            _insert_local(conn, "references", reference_id, local)
            audit(conn, who, "RegisterReference", f"reference:{reference_id}",
                  {"case": case_id, "kind": media.kind, "frames": media.frames})
        return reference_id, True

    def reference_cases(self, ids: Iterable[int] | None = None) -> dict[int, str]:
        """Each reference's case: of all, or of those of `ids` that exist."""
        with self.pool.connection() as conn:
            if ids is None:
                return dict(conn.execute("select id, case_id from reference_media").fetchall())
            return dict(conn.execute("select id, case_id from reference_media where id = any(%s)",
                                     (list(ids),)).fetchall())

    def case_references(self, case_id: str) -> set[int]:
        with self.pool.connection() as conn:
            return {r[0] for r in conn.execute("select id from reference_media where case_id = %s", (case_id,))}

    def forget_references(self, who: Principal, *, reference_id: int | None = None, case_id: str | None = None,
                          reason: str = "") -> Forgotten:
        """Delete references (one, or a whole case with the case itself and its negative bank) and everything
        derived from them."""
        with self.pool.connection() as conn:
            if reference_id is not None:
                ids = [r[0] for r in conn.execute("select id from reference_media where id = %s", (reference_id,))]
                target = f"reference:{reference_id}"
            else:
                ids = [r[0] for r in conn.execute("select id from reference_media where case_id = %s", (case_id,))]
                target = f"case:{case_id}"
            matches = conn.execute(
                "select count(*) from matches where reference_id = any(%s) or other_reference_id = any(%s)",
                (ids, ids)).fetchone()[0]
            # Their evidence goes too (cascade): the log keeps its hashes and records why the payloads went.
            items = [r[0] for r in conn.execute(
                "select id from evidence_items where reference_id = any(%s) or case_id = %s", (ids, case_id))]
            chain.record_forget(conn, items, target)
            conn.execute("delete from reference_media where id = any(%s)", (ids,))
            benign: list[int] = []
            if case_id is not None:  # the case's negative bank goes with it (on delete cascade)
                benign = [r[0] for r in conn.execute("select id from benign_media where case_id = %s", (case_id,))]
                conn.execute("delete from cases where id = %s", (case_id,))
            audit(conn, who, "ForgetCase" if case_id is not None else "ForgetReference", target,
                  {"references": ids, "matches": matches, "evidence_items": items, "benign": benign,
                   "reason": reason})
        return Forgotten(ids, matches, benign)

    # -- sightings and the negative bank -----------------------------------------------------------------------

    def add_sighting(self, who: Principal, source: SourceRecord, media: MediaSummary,
                     vectors: dict[str, SignalVectors], youth_faces: int, local: Iterable[StoredLocal] = (),
                     exposures: Iterable[ExposureRecord] = ()) -> tuple[int, bool]:
        """Record crawled media (its source's title and text as given: redacted where they expose someone) and
        the personal information it exposes; (id, created). The same bytes at the same URL again (a re-crawl)
        updates the existing sighting's time instead of storing its vectors twice."""
        exposures = list(exposures)
        with self.pool.connection() as conn:
            if media.sha256:
                row = conn.execute(
                    "update sightings set seen_at = now() where id = (select id from sightings where url = %s"
                    " and content_sha256 = %s order by id limit 1) returning id", (source.url, media.sha256),
                ).fetchone()
                if row:
                    _insert_exposures(conn, row[0], exposures)
                    return row[0], False
            sighting_id = conn.execute(
                "insert into sightings (url, page_url, site, title, author, posted_at, post_text, suspected, extra,"
                " kind, content_sha256, width, height, duration_s, frame_count, youth_faces, seen_by)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) returning id",
                (source.url, source.page_url, source.site, source.title, source.author, source.posted_at,
                 source.text, source.suspected, Jsonb(source.extra or {}), media.kind, media.sha256 or None,
                 media.width, media.height, media.duration_s, media.frames, youth_faces, who.name),
            ).fetchone()[0]
            _insert_vectors(conn, "sightings", sighting_id, vectors, self.signal_models)
            _insert_local(conn, "sightings", sighting_id, local)
            _insert_exposures(conn, sighting_id, exposures)
            detail: dict[str, Any] = {"kind": media.kind}
            if exposures:  # kinds only: the values are never stored, nor logged
                detail["exposed"] = sorted({e.kind for e in exposures})
            audit(conn, who, "RecordSighting", f"sighting:{sighting_id}", detail)
        return sighting_id, True

    # -- a victim's identifiers -----------------------------------------------------------------------------

    def record_identifiers(self, who: Principal, case_id: str, digests: list[tuple[str, bytes]]) -> tuple[int, int]:
        """Store a case's identifiers as (kind, keyed digest); (newly stored, the case's total)."""
        with self.pool.connection() as conn:
            conn.execute("insert into cases (id, created_by) values (%s, %s) on conflict do nothing",
                         (case_id, who.name))
            stored = 0
            for kind, digest in digests:
                row = conn.execute(
                    "insert into case_identifiers (case_id, kind, digest, created_by) values (%s, %s, %s, %s)"
                    " on conflict (case_id, digest) do nothing returning id", (case_id, kind, digest, who.name),
                ).fetchone()
                stored += row is not None
            total = conn.execute("select count(*) from case_identifiers where case_id = %s", (case_id,)).fetchone()
            audit(conn, who, "RecordIdentifiers", f"case:{case_id}",
                  {"kinds": sorted({kind for kind, _ in digests}), "stored": stored})
        return stored, int(total[0])

    def recent_sighting_texts(self, before_id: int | None, limit: int) -> list[tuple[int, str, str, bool]]:
        """(id, title, text, suspected) of up to `limit` sightings below `before_id` (None: the newest), newest
        first."""
        with self.pool.connection() as conn:
            return conn.execute(
                "select id, title, post_text, suspected from sightings where (%s::bigint is null or id < %s)"
                " order by id desc limit %s", (before_id, before_id, limit)).fetchall()

    def expose_sighting(self, sighting_id: int, title: str, text: str, exposures: Iterable[ExposureRecord]) -> None:
        """Exposures found in a stored sighting later (identifiers recorded after it was crawled): its title and
        text redacted, the exposures added."""
        with self.pool.connection() as conn:
            conn.execute("update sightings set title = %s, post_text = %s where id = %s", (title, text, sighting_id))
            _insert_exposures(conn, sighting_id, list(exposures))

    def case_identifiers(self) -> list[tuple[bytes, str, str]]:
        """Every case's identifiers: (digest, case, kind)."""
        with self.pool.connection() as conn:
            return [(bytes(d), c, k) for d, c, k in
                    conn.execute("select digest, case_id, kind from case_identifiers order by id")]

    def sighting_sources(self, ids: Iterable[int]) -> dict[int, SourceRecord]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "select id, url, page_url, site, title, author, posted_at, post_text, suspected, extra"
                " from sightings where id = any(%s)", (list(ids),))
            return {row[0]: SourceRecord(*row[1:]) for row in rows}

    def add_benign(self, who: Principal, vectors: dict[str, SignalVectors], sighting_id: int | None,
                   note: str, case_id: str | None = None) -> int | None:
        """Put media into the negative bank of every case (case_id None) or of one case; None if that case does
        not exist."""
        with self.pool.connection() as conn:
            # `for share`: a concurrent ForgetCase cannot delete the case between this check and the insert
            if case_id is not None and conn.execute("select 1 from cases where id = %s for share",
                                                    (case_id,)).fetchone() is None:
                return None
            benign_id = conn.execute(
                "insert into benign_media (sighting_id, note, created_by, case_id) values (%s, %s, %s, %s)"
                " returning id", (sighting_id, note, who.name, case_id)).fetchone()[0]
            _insert_vectors(conn, "benign", benign_id, vectors, self.signal_models)
            detail: dict[str, Any] = {"sighting": sighting_id} if sighting_id else {}
            if case_id is not None:
                detail["case"] = case_id
            audit(conn, who, "MarkBenign", f"benign:{benign_id}", detail)
        return benign_id

    def benign_cases(self, ids: Iterable[int] | None = None) -> dict[int, str | None]:
        """Each negative-bank entry's case (None: it applies to every case): of all, or of those of `ids`."""
        with self.pool.connection() as conn:
            if ids is None:
                return dict(conn.execute("select id, case_id from benign_media").fetchall())
            return dict(conn.execute("select id, case_id from benign_media where id = any(%s)",
                                     (list(ids),)).fetchall())

    def rejected_sightings(self, case_id: str, sighting_ids: Iterable[int]) -> set[int]:
        """Those of the sightings put into the negative bank of this case or of every case."""
        with self.pool.connection() as conn:
            rows = conn.execute("select sighting_id from benign_media where sighting_id = any(%s)"
                                " and (case_id = %s or case_id is null)", (list(sighting_ids), case_id))
            return {r[0] for r in rows}

    # -- matches, audit, stats --------------------------------------------------------------------------------

    def add_matches(self, who: Principal, records: list[MatchRecord], action: str, target: str) -> None:
        """Persist matches (those whose reference was forgotten meanwhile are skipped) and audit the call."""
        with self.pool.connection() as conn:
            for m in records:
                conn.execute(
                    "insert into matches (reference_id, sighting_id, other_reference_id, signal, score, threshold,"
                    " reference_start_s, reference_end_s, other_start_s, other_end_s, matched_frames, under_19,"
                    " faces, found_by, p_false, expected_false, verification, face_only,"
                    " audio_only) select %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
                    " where exists (select 1 from reference_media where id = %s)",
                    (m.reference_id, m.sighting_id, m.other_reference_id, m.signal, m.score, m.threshold,
                     *m.reference_segment, *m.other_segment, m.matched_frames, m.under_19, Jsonb(m.faces),
                     m.found_by, m.p_false, _finite(m.expected_false), m.verification, m.face_only,
                     m.audio_only, m.reference_id),
                )
            audit(conn, who, action, target, {"matches": len(records)})

    def audit(self, who: Principal, action: str, target: str = "", detail: dict[str, Any] | None = None) -> None:
        with self.pool.connection() as conn:
            audit(conn, who, action, target, detail or {})

    def counts(self) -> dict[str, int]:
        with self.pool.connection() as conn:
            row = conn.execute(
                "select (select count(*) from cases), (select count(*) from reference_media),"
                " (select count(*) from sightings), (select count(*) from matches),"
                " (select count(*) from benign_media)").fetchone()
        return dict(zip(("cases", "references", "sightings", "matches", "benign"), row, strict=True))

    # -- index rebuilds -----------------------------------------------------------------------------------------

    def local_features(self, collection: Collection, owner: int) -> list[StoredLocal]:
        """The stored keypoints of one reference or sighting, by frame."""
        table, column = _LOCAL_TABLES[collection]
        with self.pool.connection() as conn:
            rows = conn.execute(f"select frame, timestamp_s, width, height, keypoints, descriptors from {table}"
                                f" where {column} = %s order by frame", (owner,)).fetchall()
        out = []
        for frame, timestamp, width, height, keypoints, descriptors in rows:
            points = np.frombuffer(keypoints, np.float32).reshape(-1, 4)
            described = np.frombuffer(descriptors, np.uint8).reshape(-1, 32)
            out.append(StoredLocal(frame, timestamp, (width, height),
                                   LocalFeatures(points, described, np.zeros(len(points), bool))))
        return out

    def owner_ids(self, collection: Collection, since: int | None = None) -> set[int]:
        """Every owner's id, or those from `since` on."""
        _, _, owners = _VECTOR_TABLES[collection]
        with self.pool.connection() as conn:
            if since is None:
                return {r[0] for r in conn.execute(f"select id from {owners}")}
            return {r[0] for r in conn.execute(f"select id from {owners} where id >= %s", (since,))}

    def newest_owners_from(self, collection: Collection, newest: int) -> int | None:
        """The id from which on the `newest` owners are (None: there are none)."""
        _, _, owners = _VECTOR_TABLES[collection]
        with self.pool.connection() as conn:
            row = conn.execute(f"select min(id) from (select id from {owners} order by id desc limit %s) newest",
                               (newest,)).fetchone()
            return None if row is None else row[0]

    def stored_models(self, collection: Collection) -> dict[tuple[str, str], int]:
        """(signal, model id) -> how many owners hold rows of it."""
        table, owner_column, _ = _VECTOR_TABLES[collection]
        with self.pool.connection() as conn:
            rows = conn.execute(f"select signal, model, count(distinct {owner_column}) from {table}"
                                " group by signal, model")
            return {(signal, model): count for signal, model, count in rows}

    def load_vector_batches(self, collection: Collection, ids: Iterable[int]
                            ) -> Iterator[dict[int, dict[str, SignalVectors]]]:
        """Vectors by signal for the given owners, a batch of owners at a time (bounded memory on rebuilds)."""
        table, owner_column, _ = _VECTOR_TABLES[collection]
        wanted = sorted(ids)
        for start in range(0, len(wanted), LOAD_BATCH):
            batch = wanted[start:start + LOAD_BATCH]
            grouped: dict[int, dict[str, SignalVectors]] = {owner: {} for owner in batch}
            with self.pool.connection() as conn:
                rows = conn.execute(
                    f"select {owner_column}, signal, dim, dtype, vectors, timestamps, boxes, frames"
                    f" from {table} where {owner_column} = any(%s)", (batch,))
                for owner, signal, dim, dtype, vectors, times, boxes, frames in rows:
                    grouped[owner][signal] = SignalVectors(
                        np.frombuffer(vectors, dtype).reshape(-1, dim),
                        np.frombuffer(times, np.float32),
                        np.frombuffer(boxes, np.float32).reshape(-1, 4),
                        np.frombuffer(frames, np.int32),
                    )
            yield grouped


def _insert_vectors(conn: Connection, collection: Collection, owner: int, vectors: dict[str, SignalVectors],
                    models: dict[str, str]) -> None:
    table, owner_column, _ = _VECTOR_TABLES[collection]
    for signal, rows in vectors.items():
        if not len(rows):
            continue
        conn.execute(
            f"insert into {table} ({owner_column}, signal, model, dim, dtype, vectors, timestamps, boxes, frames)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (owner, signal, models[signal], rows.vectors.shape[1], str(rows.vectors.dtype),
             np.ascontiguousarray(rows.vectors).tobytes(), rows.timestamps.astype(np.float32).tobytes(),
             rows.boxes.astype(np.float32).tobytes(), rows.frames.astype(np.int32).tobytes()),
        )


def _insert_local(conn: Connection, collection: Collection, owner: int, frames: Iterable[StoredLocal]) -> None:
    table, column = _LOCAL_TABLES[collection]
    for stored in frames:
        unmirrored = stored.local.side(False)
        conn.execute(
            f"insert into {table} ({column}, frame, timestamp_s, width, height, keypoints, descriptors)"
            " values (%s, %s, %s, %s, %s, %s, %s)",
            (owner, stored.frame, stored.timestamp, *stored.size,
             np.ascontiguousarray(unmirrored.keypoints, np.float32).tobytes(),
             np.ascontiguousarray(unmirrored.descriptors, np.uint8).tobytes()))


def _insert_exposures(conn: Connection, sighting_id: int, exposures: list[ExposureRecord]) -> None:
    for e in exposures:
        conn.execute("insert into sighting_exposures (sighting_id, case_id, kind, field) values (%s, %s, %s, %s)"
                     " on conflict do nothing", (sighting_id, e.case_id, e.kind, e.field))


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def audit(conn: Connection, who: Principal, action: str, target: str, detail: dict[str, Any]) -> None:
    conn.execute("insert into audit_log (actor, role, action, target, detail) values (%s, %s, %s, %s, %s)",
                 (who.name, who.role, action, target, Jsonb(detail)))
