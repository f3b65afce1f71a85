"""A victim's identifiers, and the crawled posts that expose them (issue 16).

An officer records a case's identifiers; only their keyed digests reach the database (`server.matching.
identifiers`), under a key in a file outside it (`server.storage.keys`). Each crawled post recorded as a sighting
is examined: its title, text and the OCR text of its media against every case's digests, and on a suspected post
against the generic patterns too. What is found becomes exposures (case, kind, field) and is redacted from the
title and text before they are stored. Identifiers recorded after posts were crawled examine the newest stored
sightings in the background (`service.identifier_rescan_sightings` of them). Values never reach the database or
the logs.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import psycopg

from jiwoom.api.errors import InvalidInput
from server.config import Settings
from server.matching.identifiers import KINDS, IdentifierKey, Span, generic_found, located, normal_form, redacted
from server.storage.keys import identifier_key_path, load_key_file
from server.storage.store import ExposureRecord, Principal, SourceRecord, Store

log = logging.getLogger(__name__)
MAX_IDENTIFIERS = 100  # per call
RESCAN_BATCH = 500
RECENT_TEXTS = 64  # texts whose findings are kept: a post's title and text, for each of its media items
MAX_VALUE_CHARS = 200


def identifier_key(settings: Settings, *, create: bool) -> IdentifierKey:
    """The key of the identifiers' digests, from its file (made when `create` is set and there is none):
    KeyFileError if it cannot be had."""
    return IdentifierKey(load_key_file(identifier_key_path(settings), "identifier key", create=create))


@dataclass
class Examined:
    """What a post exposes, and its title and text with each found span replaced by its kind."""

    source: SourceRecord
    exposures: list[ExposureRecord] = field(default_factory=list)


class CaseIdentifiers:
    """Every case's identifiers by digest, loaded at start and kept in step with RecordIdentifiers and forgets."""

    def __init__(self, settings: Settings, stopping: threading.Event | None = None) -> None:
        self._settings = settings
        self._stopping = stopping or threading.Event()
        self._key: IdentifierKey | None = None
        self._lock = threading.Lock()
        self._recorded: dict[bytes, list[tuple[str, str]]] = {}  # digest -> [(case, kind)]
        self._recent: OrderedDict[tuple[bytes, bool], tuple[dict, list]] = OrderedDict()  # see _hits
        self._recent_lock = threading.Lock()

    def _load_key(self, create: bool) -> IdentifierKey:
        # The key is made with the first identifier recorded, not before: a service without any needs none.
        if self._key is None:
            self._key = identifier_key(self._settings, create=create)
        return self._key

    def load(self, store: Store) -> None:
        rows = store.case_identifiers()
        if rows:  # the key must be there: without it the stored digests cannot be searched for
            self._load_key(create=False)
        recorded: dict[bytes, list[tuple[str, str]]] = {}
        for digest, case_id, kind in rows:
            recorded.setdefault(digest, []).append((case_id, kind))
        self._recorded = recorded

    def refresh(self, store: Store) -> bool:
        """Read the identifiers again (what other replicas recorded or forgot); whether they changed. An
        unchanged set keeps its map, and with it the findings kept for recent texts."""
        rows = store.case_identifiers()
        recorded: dict[bytes, list[tuple[str, str]]] = {}
        for digest, case_id, kind in rows:
            recorded.setdefault(digest, []).append((case_id, kind))
        with self._lock:
            if {d: sorted(c) for d, c in recorded.items()} == {d: sorted(c) for d, c in self._recorded.items()}:
                return False
            if rows:
                self._load_key(create=False)
            self._recorded = recorded
        return True

    def record(self, store: Store, who: Principal, case_id: str, identifiers: list[tuple[str, str]]
               ) -> tuple[int, int]:
        """Check and store identifiers (kind, value) of a case; (newly stored, the case's total). An error names
        the identifier's position and kind, never its value."""
        case_id = case_id.strip()
        if not case_id or len(case_id) > 200:
            raise InvalidInput("case_id must be 1 to 200 characters")
        if not identifiers:
            raise InvalidInput("no identifiers")
        if len(identifiers) > MAX_IDENTIFIERS:
            raise InvalidInput(f"{len(identifiers)} identifiers is over the limit of {MAX_IDENTIFIERS} a call")
        key = self._load_key(create=True)
        digests = []
        for i, (kind, value) in enumerate(identifiers):
            if kind not in KINDS:
                raise InvalidInput(f"identifier {i}: unknown kind {kind[:20]!r}; known: {', '.join(KINDS)}")
            if len(value) > MAX_VALUE_CHARS:
                raise InvalidInput(f"identifier {i} ({kind}) is over {MAX_VALUE_CHARS} characters")
            if len(normal_form(kind, value)) < 2:
                raise InvalidInput(f"identifier {i} ({kind}) holds nothing that can be searched for"
                                   + (" (a Korean mobile number: 010 and 7 or 8 digits)" if kind == "phone" else ""))
            digests.append((kind, key.record(kind, value)))
        with self._lock:
            stored, total = store.record_identifiers(who, case_id, digests)
            recorded = dict(self._recorded)
            for kind, digest in digests:
                if (case_id, kind) not in recorded.get(digest, []):
                    recorded[digest] = [*recorded.get(digest, []), (case_id, kind)]
            self._recorded = recorded
        limit = self._settings.service.identifier_rescan_sightings
        if limit > 0:
            new = {digest: [(case_id, kind)] for kind, digest in digests}
            threading.Thread(target=self._rescan, args=(store, case_id, new, limit), name="identifier-rescan",
                             daemon=True).start()
        return stored, total

    def _rescan(self, store: Store, case_id: str, new: dict[bytes, list[tuple[str, str]]], limit: int) -> None:
        """The newest `limit` stored sightings examined for identifiers just recorded: they were crawled before
        anyone knew to look for these."""
        done = exposed = 0
        before: int | None = None
        try:
            while done < limit and not self._stopping.is_set():
                rows = store.recent_sighting_texts(before, min(RESCAN_BATCH, limit - done))
                if not rows:
                    break
                for sighting_id, title, text, _ in rows:
                    examined = self.examine(SourceRecord(url="", title=title, text=text), [], recorded=new)
                    if examined.exposures:
                        store.expose_sighting(sighting_id, examined.source.title, examined.source.text,
                                              examined.exposures)
                        exposed += 1
                done += len(rows)
                before = rows[-1][0]
        except psycopg.Error as error:  # the case was forgotten meanwhile, or the database went away
            log.warning("rescan of stored sightings for case %s stopped: %s", case_id, type(error).__name__)
        log.info("identifiers of case %s: %d stored sightings examined, %d expose them", case_id, done, exposed)

    def forget(self, case_id: str) -> None:
        with self._lock:
            self._recorded = {d: kept for d, cases in self._recorded.items()
                              if (kept := [(c, k) for c, k in cases if c != case_id])}

    def wanted(self, source: SourceRecord) -> bool:
        """Whether a post needs examining (and its media's OCR text): some case has identifiers, or it is
        suspected (the generic patterns)."""
        return bool(self._recorded) or source.suspected

    def _hits(self, text: str, suspected: bool, recorded: dict[bytes, list[tuple[str, str]]]
              ) -> list[tuple[str | None, str, Span]]:
        """(case or None for a generic pattern, kind, span) of what `text` holds. Kept for the last few texts:
        every media item of a post brings the same title and text."""
        key = (hashlib.sha256(text.encode()).digest(), suspected)
        with self._recent_lock:
            cached = self._recent.get(key)
        if cached is not None and cached[0] is recorded:  # the same identifiers looked for (a new map is new)
            return cached[1]
        normal = located(text)
        hits: list[tuple[str | None, str, Span]] = []
        if recorded and self._key is not None:
            hits += [(case_id, kind, span) for cases, span in self._key.find(text, recorded, normal)
                     for case_id, kind in cases]
        if suspected:
            hits += [(None, kind, span) for kind, span in generic_found(text, normal)]
        if recorded is not self._recorded:  # a rescan's few identifiers: no post's next media item will ask
            return hits
        with self._recent_lock:
            self._recent[key] = (recorded, hits)
            self._recent.move_to_end(key)
            while len(self._recent) > RECENT_TEXTS:
                self._recent.popitem(last=False)
        return hits

    def examine(self, source: SourceRecord, ocr_texts: Iterable[str],
                recorded: dict[bytes, list[tuple[str, str]]] | None = None) -> Examined:
        """A post's exposures, and its source with its title and text redacted. `recorded`: the identifiers
        looked for (default: every case's)."""
        if recorded is None:
            recorded = self._recorded  # replaced, never changed in place: safe to read while one is recorded
        exposures: set[ExposureRecord] = set()

        def found_in(text: str, field_name: str) -> list[tuple[str, Span]]:
            hits = self._hits(text, source.suspected, recorded) if text else []
            exposures.update(ExposureRecord(case_id, kind, field_name) for case_id, kind, _ in hits)
            return [(kind, span) for _, kind, span in hits]

        title_spans = found_in(source.title, "title")
        text_spans = found_in(source.text, "text")
        for text in ocr_texts:
            found_in(text, "ocr")
        if title_spans or text_spans:
            source = replace(source, title=redacted(source.title, title_spans), text=redacted(source.text, text_spans))
        return Examined(source, sorted(exposures, key=lambda e: (e.case_id or "", e.kind, e.field)))
