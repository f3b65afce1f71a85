"""Precision as the number of references grows: `python -m bench.accuracy --filler dev,1000,5000,10000`.

The references are the dev corpus plus N filler images from the precision set (`bench.filler`) that no query
copies. The queries are the dev references under every uploader transform (true queries) and the precision set's
unrelated images (each under one transform). Per N it reports, per crawled item (never per pair):
- the share of unrelated queries that match any reference;
- the share of true queries that also match a reference that is not theirs (nor a near-duplicate of it);
- recall per transform.

The matchers run on the same features in one run: "before" is the fixed thresholds alone (cosine >= 0.6,
PDQ <= 31, face L2 <= 0.5); "after" adds score normalisation against the background bank, thresholds from a
target expected number of false matches per query, and geometric verification of the grey zone (the service's
defaults; `modes`).
Features come from `bench.feature_cache` (about 50 minutes on two cores the first time, seconds after).
"""

from __future__ import annotations

import datetime
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bench.accuracy import (
    Entry,
    RowBank,
    best_per_reference,
    corpus_entries,
    load_average,
    true_query,
    unrelated_query,
)
from bench.feature_cache import FeatureCache
from bench.filler import DEFAULT_OUT, load_roles
from bench.record import machine, publish
from bench.transforms import CORPUS, TRANSFORMS
from server.calibration import DEFAULT_PATH, Calibration, Tail, embedding_space
from server.config import MatchSettings, Settings
from server.inference.features import LocalFeatures, MediaFeatures
from server.matching.decisions import Assessor, MatchResult, Thresholds, Verifier, match_library
from server.matching.library import Library
from server.matching.verify import Outcome, Verdict, Zooms, local_size, verify
from server.service import match_families
from server.signals import SignalVectors, configured_signals

# The signals a service on the default settings stores and searches with (not every registered one)
SIGNALS = configured_signals(MatchSettings())

CHUNK = 400  # images whose bytes are held at once while the cache fills
# The cached families: local features are left out (cheap, and computed only for the candidates to verify), so
# the cache's key does not change when they do.
CACHED_FAMILIES = match_families() - {"local"}


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Item:
    """One benchmark image: where it comes from, and how to make its bytes."""

    role: str  # reference, filler, true, unrelated, background
    label: str
    transform: str  # the uploader transform of a query ('' for references, filler and background)
    position: int  # true queries: the position of their reference among the dev entries
    make: Callable[[], bytes]


def precision_items(entries: list[Entry], transforms: list[str], filler: int, seed: int,
                    out: Path = DEFAULT_OUT) -> dict[str, list[Item]]:
    roles = load_roles(out)
    if filler > len(roles["filler"]):
        raise SystemExit(f"the precision set has {len(roles['filler'])} filler images, not {filler}")
    picked = random.Random(seed).sample(roles["filler"], len(roles["filler"]))[:filler]

    def read(path: Path) -> Callable[[], bytes]:
        return path.read_bytes

    items: dict[str, list[Item]] = {
        "reference": [Item("reference", e.label, "", p, read(CORPUS / e.file)) for p, e in enumerate(entries)],
        "filler": [Item("filler", f["file"], "", -1, read(out / f["file"])) for f in picked],
        "background": [Item("background", b["file"], "", -1, read(out / b["file"])) for b in roles["background"]],
        "true": [Item("true", e.label, t, p, lambda e=e, t=t: true_query(e, t, seed))
                 for t in transforms for p, e in enumerate(entries)],
        "unrelated": [],
    }
    for i, u in enumerate(roles["unrelated"]):
        name = unrelated_query(out / u["file"], i, seed)[0]  # cheap: the transform is picked by position
        items["unrelated"].append(Item("unrelated", u["file"], name, -1,
                                       lambda i=i, u=u: unrelated_query(out / u["file"], i, seed)[1]))
    return items


def cached_features(cache: FeatureCache, items: list[Item], workers: int) -> Iterator[MediaFeatures]:
    """Each item's features in order, computing the missing ones in chunks so that few bytes are held at once."""
    started = time.perf_counter()
    for at in range(0, len(items), CHUNK):
        chunk = [item.make() for item in items[at:at + CHUNK]]
        yield from cache.features(chunk, workers)
        if len(items) > CHUNK:
            progress(f"  features {min(at + CHUNK, len(items))}/{len(items)} "
                     f"({time.perf_counter() - started:.0f} s)")


def warm(filler: int, seed: int, workers: int) -> None:
    """Fill the feature cache for every image a run up to `filler` filler references needs."""
    settings = Settings()
    cache = FeatureCache(settings, CACHED_FAMILIES)
    items = precision_items(corpus_entries(None, seed), list(TRANSFORMS), filler, seed)
    for role in ("reference", "background", "unrelated", "true", "filler"):
        progress(f"{role}: {len(items[role])} images")
        for _ in cached_features(cache, items[role], workers):
            pass


# -- the features of a run ----------------------------------------------------------------------------------------

FILLER_OWNER = 1_000_000  # filler j is owner FILLER_OWNER + j; dev reference p is owner p


@dataclass
class Loaded:
    entries: list[Entry]
    items: dict[str, list[Item]]
    features: dict[str, list[MediaFeatures]]
    settings: Settings

    def owner_item(self, owner: int) -> Item:
        """The image behind a library owner: dev reference p is owner p, filler j is FILLER_OWNER + j."""
        return (self.items["filler"][owner - FILLER_OWNER] if owner >= FILLER_OWNER
                else self.items["reference"][owner])

    def add_references(self, library: Library, filler: range) -> None:
        """Add to `library` the dev references (with an empty library) and the filler images in `filler`."""
        match = self.settings.match
        if not len(library):
            library.add_many((p, {n: s.reference_vectors(f, match) for n, s in SIGNALS.items()})
                             for p, f in enumerate(self.features["reference"]))
        library.add_many((FILLER_OWNER + j, {n: s.reference_vectors(f, match) for n, s in SIGNALS.items()})
                         for j, f in zip(filler, self.features["filler"][filler.start:filler.stop], strict=True))


def load_features(filler: int, seed: int, workers: int, roles: tuple[str, ...]) -> Loaded:
    settings = Settings()
    cache = FeatureCache(settings, CACHED_FAMILIES)
    entries = corpus_entries(None, seed)
    items = precision_items(entries, list(TRANSFORMS), filler, seed)
    features = {}
    for role in roles:
        progress(f"features of {len(items[role])} {role} images")
        features[role] = list(cached_features(cache, items[role], workers))
    return Loaded(entries, items, features, settings)


class LocalFeaturesOnDemand:
    """ORB keypoints of the images a verification needs, computed when first asked for (they are cheap, and only
    candidates in the grey zone need them)."""

    def __init__(self, settings: Settings) -> None:
        from server.inference.inprocess import InProcessInference

        self.inference = InProcessInference(settings)
        self.memo: dict[tuple[str, int], tuple[list[LocalFeatures | None], tuple[float, float]]] = {}
        self.seconds = 0.0
        self.verifications = 0
        self.zoomed = 0  # verdicts decided on a matched box's own keypoints
        self.decoding = 0.0

    def of(self, item: Item, key: tuple[str, int]) -> tuple[list[LocalFeatures | None], tuple[float, float]]:
        if key not in self.memo:
            if len(self.memo) > 4096:
                self.memo.clear()
            media = self.inference.media_features(item.make(), frozenset({"local"}))
            self.memo[key] = [f.local for f in media.frames], local_size(media.frame_size)
        return self.memo[key]

    def zooms(self, item: Item) -> Zooms:
        """The service's closer look at small matched boxes (`server.service`), on the query's decoded frames."""
        decoded: list[np.ndarray] = []

        def frames() -> np.ndarray:
            if not decoded:  # decoded only where a candidate needs the closer look
                started = time.perf_counter()
                decoded.append(self.inference.sample(item.make())["frames"])
                self.decoding += time.perf_counter() - started  # the service has them decoded: not counted
            return decoded[0]
        return Zooms(frames, self.inference.local_of_regions)

    def verifier(self, query: Item, query_key: tuple[str, int], owner_item: Callable[[int], Item],
                 closer: bool = True) -> Verifier:
        zooms = self.zooms(query) if closer else None

        def check(result: MatchResult) -> Verdict:
            frames, size = self.of(query, query_key)
            target_frames, target_size = self.of(owner_item(result.owner), ("owner", result.owner))
            local = frames[result.query_frame] if 0 <= result.query_frame < len(frames) else None
            target = target_frames[0] if target_frames else None
            if local is None or target is None:
                return Verdict(Outcome.UNVERIFIABLE)
            started, decoding = time.perf_counter(), self.decoding
            verdict = verify(local, size, target, target_size, result.query_box,
                             zooms.of(result.query_frame) if zooms is not None else None)
            self.seconds += time.perf_counter() - started - (self.decoding - decoding)
            self.zoomed += verdict.zoomed
            self.verifications += 1
            return verdict
        return check

    def close(self) -> None:
        self.inference.close()


# -- fitting the calibration ------------------------------------------------------------------------------------

BANK_ROWS = 4096
NORMALISED = ("embedding", "embedding_fast")  # the signals scored against a background bank of their own
BACKGROUND_K = 10  # the k-th best background cosine is a query row's offset
VERIFY_TOP = 3  # per null query, its closest filler references are verified to measure the false-pass rate
TAIL_START = 1e-3  # the tail is fitted from where one unrelated reference in a thousand scores this close
SAFETY = 2.0  # the fitted tail is doubled: the filler is not the web


def best_closeness(signal: str, query: SignalVectors, bank: RowBank, n_refs: int,
                   offsets: np.ndarray | None = None) -> np.ndarray:
    """`bench.accuracy.best_per_reference` as closeness (higher is closer), -inf where either side has no rows."""
    best = best_per_reference(bank, query, n_refs, signal, offsets)
    closeness = -best if SIGNALS[signal].lower_is_closer else best
    return np.where(np.isnan(closeness), -np.inf, closeness).astype(np.float32)


def closest_box(query: SignalVectors, bank: RowBank, reference: int,
                offsets: np.ndarray | None) -> tuple[float, float, float, float]:
    """The box of the query row that comes closest (normalised) to any row of one reference of `bank`."""
    rows = bank.vectors[bank.positions == reference]
    similarity = query.vectors @ rows.T
    if offsets is not None:
        similarity = similarity - offsets[:, None]
    best = int(similarity.max(axis=1).argmax())
    return tuple(float(v) for v in query.boxes[best])  # type: ignore[return-value]


def fit_tail(closeness: np.ndarray, total_pairs: int, lower_is_closer: bool) -> Tail | None:
    """A line through log10 P(closeness >= x) over the tail, from TAIL_START down to ten events."""
    values = np.sort(closeness[np.isfinite(closeness)])[::-1]
    survival = np.arange(1, len(values) + 1) / total_pairs
    tail = (survival <= TAIL_START) & (np.arange(1, len(values) + 1) >= 10)
    if tail.sum() < 20 or np.ptp(values[tail]) <= 0:
        return None
    slope, intercept = np.polyfit(values[tail], np.log10(survival[tail]), 1)
    if slope >= 0:
        return None
    start = float(values[tail][-1])  # the least close point of the tail
    intercept += np.log10(SAFETY)
    return Tail(float(intercept), float(slope), -start if lower_is_closer else start, lower_is_closer)


def fit(seed: int, workers: int, out: Path, filler: int) -> Calibration:
    """Fit the background bank and the tails on the background and `filler` filler images (never the unrelated
    queries, which the evaluation reports on): even background images make the bank, odd ones are the null
    queries against the filler."""
    loaded = load_features(filler, seed, workers, ("background", "filler"))
    match = loaded.settings.match
    background = loaded.features["background"]
    banks_of: dict[str, np.ndarray] = {}
    for name in NORMALISED:  # the same background images and the same rows of them for both embeddings
        rows = np.concatenate([SIGNALS[name].reference_vectors(f, match).vectors for f in background[0::2]])
        picked = np.sort(np.random.default_rng(seed).choice(len(rows), min(BANK_ROWS, len(rows)), False))
        banks_of[name] = rows[picked].astype(np.float16).astype(np.float32)  # as the file will hold them
    space = embedding_space(loaded.settings.models)
    draft = Calibration(space, BACKGROUND_K, {}, 1.0, "", banks_of)
    filler = loaded.features["filler"]
    n_refs = len(filler)
    # The filler's faces are mostly drawn: too few real, unrelated faces to fit. Faces (every signal geometry
    # cannot verify: faces, sound) take their published prior; the picture signals, the fast embedding's
    # included, are fitted.
    fitted_signals = {n: s for n, s in SIGNALS.items() if s.verifiable}
    banks = {n: RowBank.of([s.reference_vectors(f, match) for f in filler], s.dim,
                           np.uint8 if s.binary else np.float32) for n, s in fitted_signals.items()}
    null_queries = background[1::2]
    closeness: dict[str, list[np.ndarray]] = {n: [] for n in fitted_signals}
    # per null query, its closest filler by normalised embedding score, each with the query's box that came closest
    top: list[tuple[int, list[tuple[int, tuple[float, float, float, float]]]]] = []
    for i, features in enumerate(null_queries):
        for name, signal in fitted_signals.items():
            query = signal.query_vectors(features, match)
            offsets = draft.offsets(name, query.vectors) if name in draft.banks else None
            best = best_closeness(name, query, banks[name], n_refs, offsets)
            closeness[name].append(best)
            if name == "embedding" and np.isfinite(best).any():
                top.append((i, [(j, closest_box(query, banks[name], j, offsets)) for j in
                                np.argsort(-best)[:VERIFY_TOP].tolist()]))
        if i % 100 == 0:
            progress(f"  null queries {i + 1}/{len(null_queries)}")
    total = len(null_queries) * n_refs
    tails = {}
    for name, signal in SIGNALS.items():
        tail = (fit_tail(np.concatenate(closeness[name]), total, signal.lower_is_closer) if name in fitted_signals
                else signal.prior_tail)
        if tail is not None:
            tails[name] = tail
        progress(f"  tail {name}{'' if name in fitted_signals else ' (prior)'}: {tail}")
    # How often verification passes an unrelated pair that came this close: the closest filler of each null query,
    # verified as the service verifies a match (inside the box that matched, with the closer look at small ones)
    local = LocalFeaturesOnDemand(loaded.settings)
    background_items = loaded.items["background"][1::2]
    filler_items = loaded.items["filler"]
    passed = tried = 0
    for i, refs in top:
        frames, size = local.of(background_items[i], ("null", i))
        zooms = local.zooms(background_items[i])
        for j, box in refs:
            target_frames, target_size = local.of(filler_items[j], ("filler", j))
            if not frames or frames[0] is None or not target_frames or target_frames[0] is None:
                continue
            verdict = verify(frames[0], size, target_frames[0], target_size, box, zooms.of(0))
            if verdict.outcome is Outcome.UNVERIFIABLE:
                continue
            tried += 1
            passed += verdict.outcome is Outcome.VERIFIED
    local.close()
    false_pass = max(passed, 1) / max(tried, 1)  # at least one in however many were tried: never zero
    progress(f"  verification passed {passed} of {tried} unrelated close pairs")
    calibration = Calibration(
        space, BACKGROUND_K, tails, false_pass,
        f"bench.precision --fit: banks of {len(picked)} region rows from {len(background[0::2])} background "
        f"images; tails from {len(null_queries)} other background images against {n_refs} filler references; "
        f"verification passed {passed} of {tried} of their closest unrelated pairs",
        draft.banks)
    calibration.save(out)
    progress(f"calibration written to {out}")
    return calibration


# -- the evaluation ---------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """One matcher at one library size."""

    unrelated: int = 0
    unrelated_matched: int = 0
    true: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # transform -> queries
    found: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # transform -> own reference found
    true_wrong: int = 0  # true queries that also matched a reference not theirs
    seconds: float = 0.0
    verifications: int = 0
    verify_seconds: float = 0.0
    zoomed: int = 0  # verdicts decided on a small matched box's own keypoints
    false_matches: list[str] = field(default_factory=list)  # what the wrong matches were, for the report


def modes(match: MatchSettings, previous: str = "") -> dict[str, MatchSettings | None]:
    """The matchers compared: the fixed thresholds alone, and the calibrated defaults; on request (`--modes`),
    the calibrated defaults without verification's closer look at small matched boxes; with `previous` (a
    calibration file), that calibration without the closer look: the matcher as an earlier version had it."""
    chosen = {"before": None, "unzoomed": replace(match, verify_closer=False), "after": match}
    if previous:
        chosen["previous"] = replace(match, verify_closer=False, calibration_path=previous)
    return chosen


DEFAULT_MODES = frozenset({"before", "previous", "after"})


def evaluate(sizes: list[int], seed: int, workers: int, calibration: Calibration,
             only: set[str] | None = None, previous: str = "") -> dict[tuple[str, int], Tally]:
    loaded = load_features(max(sizes), seed, workers, ("reference", "filler", "true", "unrelated"))
    match = loaded.settings.match
    entries = loaded.entries
    groups = [e.group for e in entries]
    thresholds = Thresholds.defaults(match)
    radius = {n: thresholds.of(n) for n in SIGNALS}
    library = Library("references")
    queries = [(item, {n: s.query_vectors(f, match) for n, s in SIGNALS.items()}, f)
               for role in ("true", "unrelated")
               for item, f in zip(loaded.items[role], loaded.features[role], strict=True)]
    local = LocalFeaturesOnDemand(loaded.settings)

    owner_item = loaded.owner_item
    tallies: dict[tuple[str, int], Tally] = {}
    added = 0
    for size in sorted(sizes):
        loaded.add_references(library, range(added, size))
        added = size
        for mode, policy in modes(match, previous).items():
            if mode not in (DEFAULT_MODES if only is None else only):
                continue
            tally = tallies[(mode, size)] = Tally()
            verify_before = local.seconds, local.verifications, local.zoomed
            started = time.perf_counter()
            for at, (item, vectors, features) in enumerate(queries):
                assess = None
                if policy is not None:
                    calibrated = Calibration.load(Path(policy.calibration_path)) if policy.calibration_path \
                        else calibration
                    assess = Assessor(calibrated, len(library), policy,
                                      local.verifier(item, (item.role, at), owner_item, policy.verify_closer))
                results = match_library(library, vectors, radius, lambda _owner: thresholds, features, match,
                                        assess=assess)
                owners = {r.owner for r in results}
                wrong = [r for r in results if item.role == "unrelated" or r.owner >= FILLER_OWNER
                         or groups[r.owner] != groups[item.position]]
                tally.false_matches += [describe(item, r, owner_item(r.owner)) for r in wrong]
                if item.role == "unrelated":
                    tally.unrelated += 1
                    tally.unrelated_matched += bool(owners)
                    continue
                tally.true[item.transform] += 1
                tally.found[item.transform] += item.position in owners
                tally.true_wrong += bool(wrong)
            tally.seconds = time.perf_counter() - started
            tally.verifications = local.verifications - verify_before[1]
            tally.verify_seconds = local.seconds - verify_before[0]
            tally.zoomed = local.zoomed - verify_before[2]
            progress(f"  {mode} at {size} filler: {tally.unrelated_matched}/{tally.unrelated} unrelated matched, "
                     f"{tally.true_wrong} true with a wrong reference ({tally.seconds:.0f} s)")
    local.close()
    return tallies


def describe(query: Item, result: MatchResult, target: Item) -> str:
    normalised = "" if result.normalised is None else f", normalised {result.normalised:.3f}"
    expected = "" if result.expected_false is None else f", E {result.expected_false:.2g}"
    return (f"{query.role} {query.label} ({query.transform}) -> {target.role} {target.label}: {result.signal} "
            f"{result.score:.3f}{normalised}{expected}{', ' + result.verification if result.verification else ''}")


def report(tallies: dict[tuple[str, int], Tally], sizes: list[int], calibration: Calibration,
           load_at_start: str, wall: float) -> str:
    lines = ["# Precision as references grow (`python -m bench.accuracy --filler ...`)\n",
             f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"- Machine: {machine()}; load average at the start {load_at_start}, at the end {load_average()}",
             f"- Command: `python -m bench.accuracy {' '.join(sys.argv[1:])}`",
             f"- Calibration: {calibration.model}, background k = {calibration.background_k}; "
             f"{calibration.fitted_on}",
             "- Tails (log10 P = intercept + slope x closeness, from start on; doubled for safety): " + "; ".join(
                 f"{name} {t.intercept:.2f} {t.slope:+.2f}, start {t.start:g}"
                 for name, t in calibration.tails.items()),
             f"- Verification false-pass rate used: {calibration.verify_false_pass:.4f}; settings: "
             f"false_matches_per_query {Settings().match.false_matches_per_query:g}, verify_up_to "
             f"{Settings().match.verify_up_to:g}, face_up_to {Settings().match.face_up_to:g}",
             f"- Wall time: {wall / 60:.1f} min\n",
             "References: the 266 dev images plus N filler. Queries: 266 x 12 transforms (true) and 822 unrelated."
             " Rates are per query. \"wrong\": a true query that also matched a reference other than its own (or"
             " a near-duplicate of it).\n"]
    header = "| matcher | references | unrelated matched | true with a wrong ref | " + " | ".join(
        TRANSFORMS) + " | verifications (ms each), closer looks |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for size in sorted(sizes):
        for mode in modes(Settings().match, "previous"):
            if (mode, size) not in tallies:
                continue
            t = tallies[(mode, size)]
            true = sum(t.true.values())
            recall = " | ".join(f"{t.found[n] / t.true[n]:.3f}" if t.true[n] else "n/a" for n in TRANSFORMS)
            per = (f"{t.verifications} ({t.verify_seconds / t.verifications * 1000:.1f}), {t.zoomed} closer"
                   if t.verifications else "0")
            lines.append(f"| {mode} | {266 + size} | {t.unrelated_matched / max(t.unrelated, 1):.4f} | "
                         f"{t.true_wrong / max(true, 1):.4f} | {recall} | {per} |")
    largest = max(sizes)
    for mode in ("after", "before"):
        if (mode, largest) not in tallies:
            continue
        wrong = tallies[(mode, largest)].false_matches
        lines += ["", f"Wrong matches of \"{mode}\" at {266 + largest} references ({len(wrong)}; the first 25):", ""]
        lines += [f"- {line}" for line in wrong[:25]]
    return "\n".join(lines) + "\n"


def main(filler: str, seed: int, workers: int, out: str | None, refit: bool, only: str | None = None,
         previous: str = "") -> None:
    load_at_start = load_average()
    started = time.perf_counter()
    total = len(load_roles()["filler"])
    sizes = sorted({0 if s == "dev" else min(int(s), total) if s != "all" else total for s in filler.split(",")})
    if refit or not DEFAULT_PATH.exists():
        calibration = fit(seed, workers, DEFAULT_PATH, max(sizes))
    else:
        calibration = Calibration.load(DEFAULT_PATH)
    known = set(modes(Settings().match, previous))
    chosen = set(only.split(",")) if only else None
    if chosen is not None and chosen - known:
        raise SystemExit(f"unknown modes {sorted(chosen - known)}; known: {', '.join(sorted(known))}")
    if previous and not Path(previous).exists():
        raise SystemExit(f"{previous}: no such calibration file")
    tallies = evaluate(sizes, seed, workers, calibration, chosen, previous)
    publish(report(tallies, sizes, calibration, load_at_start, time.perf_counter() - started), out)
