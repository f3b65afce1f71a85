"""The matching service's core, without gRPC: register (with retro-hunt), match, forget, negative bank, stats.

`MatchingService` orchestrates its parts: `collections` (the three libraries, reconciled with PostgreSQL, the
truth, and snapshotted), `cases` (which case owns what, and its thresholds), `slots` (the media work slots), and
`server.matching` for the decisions. The gRPC layer (`server.rpc`) only translates messages; benchmarks and tests
can drive this class directly.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from jiwoom.api.errors import DeadlineExceeded, InvalidInput, NotFound
from server.calibration import Calibration, calibration_for, embedding_space
from server.config import MatchSettings, Settings
from server.inference import Inference
from server.inference.features import MediaFeatures, merged, with_regions
from server.matching.cascade import Cascade
from server.matching.decisions import Assessor, MatchResult, Thresholds, Verifier, match_library
from server.matching.library import IndexStat, Library
from server.matching.negative_bank import benign_frames_by_case
from server.matching.verify import Outcome, Verdict, Zooms, local_size, verify
from server.matching.youth import FaceReport, face_reports
from server.media import IMAGE_FORMATS, decode_media, sniff_format
from server.models.pdq import hex_to_hash
from server.service.cases import Cases, SharedCases
from server.service.collections import Collections
from server.service.identifiers import CaseIdentifiers
from server.service.slots import WorkSlots
from server.service.versions import signals_in_use
from server.signals import (
    SIGNALS,
    Signal,
    SignalVectors,
    configured_signals,
    negative_bank_signals,
    signal_families,
    signal_models,
)
from server.signals.pdq import hashes_only_vectors
from server.storage.store import (
    ExposureRecord,
    MatchRecord,
    MediaSummary,
    Principal,
    SourceRecord,
    Store,
    StoredLocal,
)

log = logging.getLogger(__name__)



def reference_families(signals: Iterable[Signal] | None = None) -> frozenset[str]:
    """What a stored item's features need: its signals' (default: the configured ones of MatchSettings()), and
    keypoints for verification."""
    chosen = configured_signals(MatchSettings()).values() if signals is None else signals
    return signal_families(chosen) | {"local"}


def match_families(signals: Iterable[Signal] | None = None) -> frozenset[str]:
    """What a query's features need: a stored item's, and ages for the youth triage of its faces."""
    return reference_families(signals) | {"age"}


# Frames of a stored item whose keypoints (about 29 KB a frame) are kept for verification, spread evenly over it:
# references are few and matter most; sightings are every crawled item, so they keep fewer.
LOCAL_FRAMES_REFERENCE = 32
LOCAL_FRAMES_SIGHTING = 4
MAX_HASHES = 1000  # per hash-only reference
Excluded = dict[str | None, set[int]]  # query frames in the negative bank, by the case it applies to (None: every)


@dataclass(frozen=True)
class Staged:
    """A query's features so far, and how to compute more families of the same decoded frames."""

    features: MediaFeatures
    more: Callable[[frozenset[str]], MediaFeatures]
    frames: np.ndarray | None = None  # the decoded frames, for the full embedding of some regions of them


@dataclass(frozen=True)
class TargetMatch:
    """A match with what it points at: a reference (and its case) or an earlier sighting (and its source)."""

    result: MatchResult
    reference_id: int = 0
    case_id: str = ""
    sighting_id: int = 0
    source: SourceRecord | None = None
    face_only: bool = False  # its target matched on faces (and maybe sound), not the picture: weaker evidence
    audio_only: bool = False  # its target matched on its sound alone: weaker evidence than picture or face


def with_weak_evidence(matches: list[TargetMatch]) -> list[TargetMatch]:
    """Mark the matches of targets that matched on no picture signal: on faces (face_only) or on their sound
    alone (audio_only)."""
    shown: dict[tuple[int, int], set[str]] = {}
    for m in matches:
        shown.setdefault((m.reference_id, m.sighting_id), set()).add(SIGNALS[m.result.signal].evidence)
    marked = []
    for m in matches:
        kinds = shown[(m.reference_id, m.sighting_id)]
        marked.append(replace(m, face_only="picture" not in kinds and "face" in kinds,
                              audio_only=kinds == {"sound"}))
    return marked


@dataclass
class MatchOutcome:
    media: MediaSummary
    matches: list[TargetMatch] = field(default_factory=list)
    youth_faces: list[FaceReport] = field(default_factory=list)
    sighting_id: int = 0
    benign: bool = False
    exposures: list[ExposureRecord] = field(default_factory=list)  # personal information the recorded post shows
    redacted: SourceRecord | None = None  # the source as stored, its title and text redacted, when it exposes any


@dataclass
class RegisterOutcome:
    reference_id: int
    case_id: str
    created: bool
    media: MediaSummary
    matches: list[TargetMatch] = field(default_factory=list)


STOP_DRAIN_S = 30.0  # media calls in flight at shutdown get this long to finish


def check_deadline(deadline: float | None, stage: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceeded(f"deadline passed before {stage}")


class MatchingService:
    def __init__(self, settings: Settings, inference: Inference, store: Store, snapshot_dir: Path | None) -> None:
        self.settings = settings
        self.match_settings = settings.match
        self.inference = inference
        self.store = store
        self.snapshot_dir = snapshot_dir
        self.collections = Collections(settings, store, snapshot_dir)
        defaults = Thresholds.defaults(settings.match)
        self.cases = (SharedCases(defaults, store, settings.service.shared_refresh_s)
                      if settings.index.backend == "milvus" else Cases(defaults))
        # What new media is stored with, and what queries are searched with: the same, plus (from `start`) the
        # signals of older models that stored references still hold (server.service.versions)
        self.new_signals = configured_signals(settings.match)
        self.query_signals = dict(self.new_signals)
        # The ids the store records with each row must name the models this service computes with
        self.signal_models = store.signal_models
        if self.signal_models != signal_models(settings.models):
            raise ValueError("the store records other model ids than these settings compute with: open it as "
                             "Store(pool, settings.models)")
        self.cascade: Cascade | None = None  # from `start`, once the signals in use are known
        self.cascade_counts = {"full": 0, "screened_out": 0, "regions": 0}  # queries, since start (logged at stop)
        # Reference and negative-bank writes and forgets each hold this from the commit to the index update, so
        # the index never keeps an entry the database has forgotten. Feature extraction runs outside it.
        self._write_lock = threading.Lock()
        self.slots = WorkSlots(settings.service.max_workers)
        self.identifiers = CaseIdentifiers(settings, self.slots.stopping)
        self.calibration: Calibration | None = None
        if settings.match.calibrated:
            self.calibration = calibration_for(embedding_space(settings.models), settings.match.calibration_path)
        self.started_at = time.monotonic()

    # -- lifecycle --------------------------------------------------------------------------------------------

    @property
    def libraries(self) -> dict[str, Library]:
        return self.collections.libraries

    def start(self) -> None:
        """Check the stored vectors' models, load snapshots and bring them in step with the database; then
        snapshot periodically."""
        self.query_signals = signals_in_use(self.store, self.new_signals, self.signal_models)
        retained = sorted(set(self.query_signals) - set(self.new_signals))
        if retained:
            log.info("queries are also searched with %s: stored references still hold them", retained)
        self.cascade = Cascade.of(self.match_settings, self.query_signals)
        self.collections.load(self.query_signals)
        self.cases.load(self.store)
        self.identifiers.load(self.store)
        self.collections.start_snapshots(self.slots.stopping)
        if self.collections.shared:
            threading.Thread(target=self._follow_other_replicas, name="replicas", daemon=True).start()

    def _follow_other_replicas(self) -> None:
        """What other replicas record outside Milvus and this one keeps in memory: the victims' identifiers (the
        cases' thresholds are read as they are used, `SharedCases`)."""
        while not self.slots.stopping.wait(self.settings.service.shared_refresh_s):
            try:
                if self.identifiers.refresh(self.store):
                    log.info("identifiers recorded or forgotten on another replica: read again")
            except Exception:  # the database or the key file went away: the next round tries again
                log.exception("reading other replicas' identifiers failed")

    def snapshot(self, names: tuple[str, ...] | None = None, force: bool = False) -> None:
        self.collections.snapshot(names, force)

    def stop(self) -> None:
        if self.cascade is not None:
            log.info("cascade since start: %(full)d queries got the full embedding (on %(regions)d flagged regions, "
                     "where not on every region), %(screened_out)d were screened out", self.cascade_counts)
        self.slots.close(STOP_DRAIN_S)
        self.collections.stop()

    # -- features -----------------------------------------------------------------------------------------------

    def _features(self, data: bytes, families: frozenset[str]) -> tuple[MediaFeatures, MediaSummary]:
        features = self.inference.media_features(data, families)
        return features, self._summary(data, features)

    def _summary(self, data: bytes, features: MediaFeatures) -> MediaSummary:
        height, width = features.frame_size
        return MediaSummary(
            kind="image" if sniff_format(data) in IMAGE_FORMATS else "video", sha256=hashlib.sha256(data).digest(),
            width=width, height=height, duration_s=features.duration_s, frames=len(features.frames))

    def _decoded_frames(self, frames: list[tuple[bytes, float]]) -> tuple[np.ndarray, np.ndarray, MediaSummary]:
        """Frames a crawler decoded itself (each an encoded image with its time in the video), decoded here and
        brought to one size: uint8 [F, H, W, 3], their times, and the item's summary."""
        if not frames:
            raise InvalidInput("an item with no frames")
        if len(frames) > self.settings.limits.max_frames:
            raise InvalidInput(f"{len(frames)} frames is over the limit of {self.settings.limits.max_frames}")
        limits = self.settings.limits
        decoded = []
        for image, _ in frames:
            media = decode_media(image, limits, self.settings.models.gpu_decode)
            if media.kind != "image":
                raise InvalidInput("a streamed frame must be an image (JPEG, PNG, WebP), not a video")
            decoded.append(media.frames[0])
        height, width = decoded[0].shape[:2]
        same_size = [f if f.shape[:2] == (height, width) else
                     np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in decoded]
        stacked = np.ascontiguousarray(np.stack(same_size))
        times = np.array([t for _, t in frames], np.float32)
        digest = hashlib.sha256(b"".join(hashlib.sha256(image).digest() for image, _ in frames)).digest()
        return stacked, times, MediaSummary(kind="frames", sha256=digest, width=width, height=height,
                                            duration_s=float(times.max() - times.min()), frames=len(frames))

    def _staged(self, data: bytes | None, frames: list[tuple[bytes, float]] | None, families: frozenset[str]
                ) -> tuple[Staged, MediaSummary]:
        """A query's features of `families`, decoded once, with a way to add more families to them later."""
        if frames is not None:
            stacked, times, media = self._decoded_frames(frames)
            features = self.inference.frame_features(stacked, times, families)
            return Staged(features, lambda more: self.inference.frame_features(stacked, times, more), stacked), media
        if data is None:
            raise InvalidInput("no media")
        if self.cascade is None:  # one stage: the media ensemble in one call (one request to a Triton server)
            features, media = self._features(data, families)
            return Staged(features, lambda more: self.inference.media_features(data, more)), media
        sampled = self.inference.sample(data)
        features = self.inference.sampled_features(sampled, families)
        return Staged(features, lambda more: self.inference.sampled_features(sampled, more), sampled["frames"]), \
            self._summary(data, features)

    def _assessor(self, library: str, features: MediaFeatures | None,
                  frames: np.ndarray | None = None) -> Assessor | None:
        """Calibration of one search's matches against `library`, verifying with the stored keypoints (and, with
        the query's decoded `frames`, a closer look at small matched regions)."""
        if self.calibration is None:
            return None
        verifier = self._verifier(library, features, frames) if features is not None else None
        return Assessor(self.calibration, len(self.libraries[library]), self.match_settings, verifier)

    def _verifier(self, library: str, features: MediaFeatures, frames: np.ndarray | None) -> Verifier:
        size = local_size(features.frame_size)
        loaded: dict[int, list[StoredLocal]] = {}  # for this query only: an owner's PDQ and embedding candidates
        zooms = Zooms(lambda: frames if self.match_settings.verify_closer else None, self.inference.local_of_regions)

        def check(result: MatchResult) -> Verdict:
            frame = features.frames[result.query_frame] if 0 <= result.query_frame < len(features.frames) else None
            if result.owner not in loaded:
                loaded[result.owner] = self.store.local_features(library, result.owner)  # type: ignore[arg-type]
            stored = loaded[result.owner]
            if frame is None or frame.local is None or not stored:
                return Verdict(Outcome.UNVERIFIABLE)
            target = min(stored, key=lambda s: abs(s.timestamp - result.target_time))
            return verify(frame.local, size, target.local, target.size, result.query_box,
                          zooms.of(result.query_frame))
        return check

    def _vectors(self, features: MediaFeatures, query: bool) -> dict[str, SignalVectors]:
        """A query's rows of every signal in use, or a stored item's rows of the configured signals."""
        if query:
            return {name: signal.query_vectors(features, self.match_settings)
                    for name, signal in self.query_signals.items()}
        return {name: signal.reference_vectors(features, self.match_settings)
                for name, signal in self.new_signals.items()}

    def _families(self, stored: bool) -> frozenset[str]:
        """Features a stored item needs (its queries too: the retro-hunt), or a query (adds the age triage)."""
        signals = self.query_signals.values()
        return reference_families(signals) if stored else match_families(signals)

    def _one_picture_signal(self, results: list[MatchResult]) -> list[MatchResult]:
        return self.cascade.without_screen_duplicates(results) if self.cascade is not None else results

    def thresholds_for_case(self, case_id: str) -> Thresholds:
        return self.cases.thresholds_for_case(case_id)

    # -- matching -------------------------------------------------------------------------------------------------

    def _benign(self, queries: dict[str, SignalVectors]) -> Excluded:
        library = self.libraries["benign"]
        if not len(library):
            return {}
        bank = {name: signal for name, signal in negative_bank_signals().items() if name in queries}
        benign_queries = {name: signal.benign_rows(queries[name]) for name, signal in bank.items()}
        radius = {name: signal.benign_threshold(self.match_settings) for name, signal in bank.items()}
        hits = library.search(benign_queries, radius, self.match_settings)
        # An entry missing from the map is being forgotten with its case (it leaves the index first): it gets
        # case "", dropped here, so it suppresses nothing rather than everything.
        excluded = benign_frames_by_case(hits, benign_queries, self.cases.case_of_benign)
        excluded.pop("", None)
        return excluded

    def _match_references(self, queries: dict[str, SignalVectors], features: MediaFeatures | None,
                          excluded: Excluded, skip_owners: set[int] = frozenset(),
                          frames: np.ndarray | None = None) -> list[TargetMatch]:
        """One search; matches to a case with its own negative-bank frames are decided again without them."""
        by_case = {case: frames for case, frames in excluded.items() if case is not None}
        results = match_library(self.libraries["references"], queries, self.cases.search_radius(),
                                self.cases.thresholds_for_reference, features, self.match_settings,
                                excluded.get(None, set()), by_case, self.cases.case_of_reference,
                                self._assessor("references", features, frames))
        results = self._one_picture_signal(results)
        return with_weak_evidence([TargetMatch(r, reference_id=r.owner, case_id=self.cases.case_of_reference(r.owner))
                                   for r in results if r.owner not in skip_owners and self.cases.is_reference(r.owner)])

    def _match_sightings(self, queries: dict[str, SignalVectors], features: MediaFeatures | None,
                         thresholds: Thresholds, excluded: set[int] = frozenset(),
                         frames: np.ndarray | None = None) -> list[TargetMatch]:
        radius = {n: thresholds.of(n) for n in SIGNALS}
        results = match_library(self.libraries["sightings"], queries, radius, lambda _owner: thresholds, features,
                                self.match_settings, excluded,
                                assess=self._assessor("sightings", features, frames))
        results = self._one_picture_signal(results)
        sources = self.store.sighting_sources({r.owner for r in results}) if results else {}
        return with_weak_evidence([TargetMatch(r, sighting_id=r.owner, source=sources.get(r.owner))
                                   for r in results if r.owner in sources])

    def match(self, who: Principal, data: bytes | None = None, *, frames: list[tuple[bytes, float]] | None = None,
              source: SourceRecord | None = None, include_sightings: bool = False,
              deadline: float | None = None) -> MatchOutcome:
        """Match media (bytes, or frames a crawler decoded) against the references, and on request against
        past sightings. With a source it is recorded as a sighting, after the search so it does not find
        itself, and its reference matches are stored for the evidence and review queue."""
        with self.slots.hold(deadline):
            return self._match(who, data, frames, source, include_sightings, deadline)

    def _match(self, who: Principal, data: bytes | None, frames: list[tuple[bytes, float]] | None,
               source: SourceRecord | None, include_sightings: bool, deadline: float | None) -> MatchOutcome:
        families = self._families(stored=False)
        cascade = self.cascade
        first = families
        if cascade is not None:  # a sighting keeps its keypoints either way: later retro-hunts verify with them
            first = cascade.stage_one(families) | (frozenset({"local"}) if source is not None else frozenset())
        staged, media = self._staged(data, frames, first)
        features = staged.features
        queries = self._vectors(features, query=True)
        if cascade is not None:
            searched = [self.libraries["references"]] + ([self.libraries["sightings"]] if include_sightings else [])
            plan = cascade.plan(searched, queries, self.cases.search_radius(), self.match_settings)
            if plan.needed:
                check_deadline(deadline, "the full embedding")
                second = cascade.stage_two() - first
                if plan.everything or staged.frames is None:
                    features = merged(features, staged.more(second), second)
                else:  # the full embedding of the regions that found a candidate only
                    rest = second - {SIGNALS[cascade.screened].family}
                    if rest:
                        features = merged(features, staged.more(rest), rest)
                    features = with_regions(features, self.inference.embed_regions(staged.frames, plan.boxes,
                                                                                   plan.frames))
                    self.cascade_counts["regions"] += len(plan.frames)
                queries = self._vectors(features, query=True)
                self.cascade_counts["full"] += 1
            else:
                self.cascade_counts["screened_out"] += 1
        check_deadline(deadline, "matching")
        excluded = self._benign(queries)
        outcome = MatchOutcome(media=media, benign=any(excluded.values()))
        outcome.matches = self._match_references(queries, features, excluded, frames=staged.frames)
        if include_sightings:  # sightings belong to no case: only the bank of every case applies
            outcome.matches += self._match_sightings(queries, features, self.cases.defaults,
                                                     excluded.get(None, set()), staged.frames)
        outcome.youth_faces = face_reports(features, self.match_settings, only_under_19=True)
        if source is not None:
            if self.identifiers.wanted(source):
                check_deadline(deadline, "reading the media's text")
                # OCR is in no signal's families: it is computed for this alone, on the same media
                ocr = [f.ocr_text or "" for f in staged.more(frozenset({"ocr"})).frames]
                examined = self.identifiers.examine(source, ocr)
                if examined.exposures:
                    outcome.exposures, outcome.redacted = examined.exposures, examined.source
                    source = examined.source
            check_deadline(deadline, "recording the sighting")
            stored = self._vectors(features, query=False)
            sighting_id, created = self.store.add_sighting(who, source, media, stored, len(outcome.youth_faces),
                                                           stored_local(features, LOCAL_FRAMES_SIGHTING),
                                                           outcome.exposures)
            if created:
                self.libraries["sightings"].add(sighting_id, stored)
            outcome.sighting_id = sighting_id
            records = [_record(m, sighting_id=sighting_id, found_by="match") for m in outcome.matches
                       if m.reference_id]
            self.store.add_matches(who, records, "Match", f"sighting:{sighting_id}")
        else:
            self.store.audit(who, "Match", "", {"matches": len(outcome.matches), "kind": media.kind})
        return outcome

    # -- references ---------------------------------------------------------------------------------------------

    def register_reference(self, who: Principal, case_id: str, data: bytes | None = None,
                           pdq_hashes: list[str] | None = None, retro_hunt: bool = True,
                           deadline: float | None = None) -> RegisterOutcome:
        with self.slots.hold(deadline):
            return self._register_reference(who, case_id, data, pdq_hashes, retro_hunt, deadline)

    def _register_reference(self, who: Principal, case_id: str, data: bytes | None, pdq_hashes: list[str] | None,
                            retro_hunt: bool, deadline: float | None) -> RegisterOutcome:
        case_id = case_id.strip()
        if not case_id or len(case_id) > 200:
            raise InvalidInput("case_id must be 1 to 200 characters")
        features: MediaFeatures | None = None
        if data is not None:
            existing = self.store.find_reference(case_id, hashlib.sha256(data).digest())
            if existing is not None:  # a retry: the reference was committed already
                return RegisterOutcome(existing[0], case_id, False, existing[1])
            features, media = self._features(data, self._families(stored=True))
            stored = self._vectors(features, query=False)
            queries = self._vectors(features, query=True)
        elif pdq_hashes is not None:
            hashes = _parse_hashes(pdq_hashes)
            media = MediaSummary("hashes", hashlib.sha256(b"".join(sorted(hashes))).digest(), frames=len(hashes))
            stored = {"pdq": hashes_only_vectors(hashes)}
            queries = stored
        else:
            raise InvalidInput("a reference needs media bytes or PDQ hashes")
        if not any(len(v) for v in stored.values()):
            raise InvalidInput("nothing matchable in this media (no PDQ hash of sufficient quality, no regions)")
        check_deadline(deadline, "committing the reference")
        with self._write_lock:
            local = stored_local(features, LOCAL_FRAMES_REFERENCE) if features is not None else []
            reference_id, created = self.store.add_reference(who, case_id, media, stored, local)
            if created:
                self.cases.add_reference(reference_id, case_id)
                self.libraries["references"].add(reference_id, stored)
        outcome = RegisterOutcome(reference_id, case_id, created, media)
        if created and retro_hunt:
            outcome.matches = self._retro_hunt(who, reference_id, case_id, queries, features)
        return outcome

    def _retro_hunt(self, who: Principal, reference_id: int, case_id: str, queries: dict[str, SignalVectors],
                    features: MediaFeatures | None) -> list[TargetMatch]:
        """What a new reference already matches: crawled media (sightings) and other cases' references.
        Sightings an officer rejected for this case (or judged benign) are not found again."""
        thresholds = self.thresholds_for_case(case_id)
        found = self._match_sightings(queries, features, thresholds)
        if found:
            rejected = self.store.rejected_sightings(case_id, {m.sighting_id for m in found})
            found = [m for m in found if m.sighting_id not in rejected]
        found += self._match_references(queries, features, {}, skip_owners=self.cases.references_of_case(case_id))
        records = [_record(m, reference_id=reference_id, found_by="retro_hunt") for m in found]
        self.store.add_matches(who, records, "RetroHunt", f"reference:{reference_id}")
        return found

    def forget(self, who: Principal, *, reference_id: int | None = None, case_id: str | None = None,
               reason: str = "") -> tuple[int, int]:
        """Delete references and everything derived: rows, index entries, and snapshot files holding them."""
        if reference_id is None and not case_id:
            raise InvalidInput("case_id is required")
        with self._write_lock:
            ids, matches, benign = self.store.forget_references(who, reference_id=reference_id, case_id=case_id,
                                                                reason=reason)
            if not ids and reference_id is not None:
                raise NotFound(f"no reference {reference_id}")
            self.libraries["references"].remove(ids)
            self.libraries["benign"].remove(benign)  # before the maps: see Cases.case_of_benign
            self.cases.forget(ids, benign, case_id)
            if case_id is not None:  # its identifiers and exposures went with the case's row
                self.identifiers.forget(case_id)
        # The old snapshot still holds the forgotten vectors: replace it now, not at the next interval.
        self.snapshot(("references", "benign") if benign else ("references",), force=True)
        return len(ids), matches

    def record_identifiers(self, who: Principal, case_id: str, identifiers: list[tuple[str, str]]
                           ) -> tuple[int, int]:
        """Store a case's identifiers (kind, value) as keyed digests; (newly stored, the case's total)."""
        return self.identifiers.record(self.store, who, case_id, identifiers)

    def configure_case(self, who: Principal, case_id: str, overrides: dict[str, float]) -> tuple[Thresholds, int]:
        unknown = set(overrides) - set(SIGNALS)
        if unknown:
            raise InvalidInput(f"unknown signals {sorted(unknown)}")
        for name, value in overrides.items():
            SIGNALS[name].check_threshold(value)
        stored, references = self.store.configure_case(who, case_id, overrides)
        thresholds = self.cases.defaults.with_overrides(stored)
        self.cases.set_thresholds(case_id, thresholds)
        return thresholds, references

    def mark_benign(self, who: Principal, *, data: bytes | None = None, sighting_id: int | None = None,
                    note: str = "", case_id: str | None = None) -> int:
        """Put media into the negative bank: its rows of the negative-bank signals (whole frames of PDQ and
        embedding) suppress matches from then on, to every case's references, or with a case_id (an officer's "not
        this victim") to that case's only."""
        if data is not None:
            with self.slots.hold(None):
                features, _ = self._features(data, signal_families(
                    s for name, s in negative_bank_signals().items() if name in self.new_signals))
            vectors = self._vectors(features, query=False)
        elif sighting_id is not None:
            loaded = next(self.store.load_vector_batches("sightings", [sighting_id]))
            if not loaded.get(sighting_id):
                raise NotFound(f"no sighting {sighting_id} with stored features")
            vectors = loaded[sighting_id]
        else:
            raise InvalidInput("benign media needs bytes or a sighting id")
        bank = {name: signal.benign_rows(vectors.get(name) or SignalVectors.empty(
                    signal.dim, np.uint8 if signal.binary else np.float32))
                for name, signal in negative_bank_signals().items() if name in self.new_signals}
        with self._write_lock:  # a ForgetCase meanwhile must find this entry in the index to remove it
            benign_id = self.store.add_benign(who, bank, sighting_id, note, case_id)
            if benign_id is None:
                raise NotFound(f"no case {case_id!r}")
            self.cases.add_benign(benign_id, case_id)  # before the index: see Cases.case_of_benign
            self.libraries["benign"].add(benign_id, bank)
        return benign_id

    def stats(self) -> tuple[dict[str, int], list[IndexStat]]:
        return self.store.counts(), self.index_stats()

    def index_stats(self) -> list[IndexStat]:
        """Each collection's indexes, by signal, without querying PostgreSQL (the metrics read it every scrape)."""
        return [s for library in self.libraries.values() for s in library.stats()]


def stored_local(features: MediaFeatures, most: int) -> list[StoredLocal]:
    """The keypoints to keep of an item: at most `most` frames, spread over it."""
    frames = [f for f in features.frames if f.local is not None and len(f.local)]
    if len(frames) > most:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, most).round().astype(int)]
    size = local_size(features.frame_size)
    return [StoredLocal(f.index, f.timestamp, size, f.local) for f in frames if f.local is not None]


def _parse_hashes(texts: list[str]) -> list[bytes]:
    if not texts:
        raise InvalidInput("no PDQ hashes")
    if len(texts) > MAX_HASHES:
        raise InvalidInput(f"{len(texts)} hashes is over the limit of {MAX_HASHES} per reference")
    hashes = []
    for i, text in enumerate(texts):
        try:
            hashes.append(bytes(hex_to_hash(text.strip())))
        except ValueError as error:
            raise InvalidInput(f"hash {i} is not a PDQ hash (64 hex characters): {error}") from None
    return hashes


def _record(match: TargetMatch, *, found_by: str, reference_id: int = 0, sighting_id: int = 0) -> MatchRecord:
    """A match as stored: always from a reference's point of view (reference segment first)."""
    r = match.result
    faces = [{"t": f.timestamp, "age": round(f.age_mean, 1), "age_std": round(f.age_std, 1),
              "p_under19": round(f.p_under19, 3), "under_19": f.under_19} for f in r.faces]
    confidence = {"p_false": r.p_false, "expected_false": r.expected_false, "verification": r.verification,
                  "face_only": match.face_only, "audio_only": match.audio_only}
    if found_by == "match":  # the query is the sighting, the target a reference
        return MatchRecord(match.reference_id, r.signal, r.score, r.threshold, r.target_segment, r.query_segment,
                           r.matched_frames, r.under_19, faces, "match", sighting_id=sighting_id,
                           **confidence)
    # retro-hunt: the query is the new reference, the target a sighting or another case's reference
    return MatchRecord(reference_id, r.signal, r.score, r.threshold, r.query_segment, r.target_segment,
                       r.matched_frames, r.under_19, faces, "retro_hunt",
                       sighting_id=match.sighting_id or None, other_reference_id=match.reference_id or None,
                       **confidence)
