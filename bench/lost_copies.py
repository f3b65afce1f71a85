"""Where the true copies the calibrated matcher loses go, at the full precision set (needs `bench.filler`).

    .venv/bin/python -m bench.lost_copies [--transforms crop_80,rotate,screenshot] [--filler all] [--out FILE]

`bench.accuracy --filler` says how many copies of each transform are lost; this says why, per lost copy, on the
same cached features and the service's defaults (`bench.precision`'s mode "after"). Each lost copy falls in one
class, by its own reference's best candidate:
- no candidate: no region of the query reached its own reference within the raw floors (the region finder or
  the embedding missed it);
- too common: a candidate, but its expected false matches per query exceed `verify_up_to` (not verified);
- unverifiable: too few keypoints on one side to verify (flat or tiny pictures);
- rejected: verified and rejected; "closer look" where the last verdict was on the matched box's own crop, and
  "inliers >= MIN_INLIERS" where enough keypoints agreed but they covered too little of the picture.
"""

from __future__ import annotations

import argparse
import collections
import time

from bench.filler import load_roles
from bench.precision import SIGNALS, LocalFeaturesOnDemand, load_features, progress
from bench.record import machine, publish
from bench.transforms import TRANSFORMS
from server.calibration import DEFAULT_PATH, Calibration
from server.matching.decisions import Assessor, MatchResult, Thresholds, match_library
from server.matching.library import Library
from server.matching.verify import MIN_INLIERS, Outcome, Verdict, strength


class Recording(Assessor):
    """The service's assessor, keeping the candidates it was given."""

    candidates: list[MatchResult]

    def __call__(self, results: list[MatchResult]) -> list[MatchResult]:
        self.candidates = results
        return super().__call__(results)


def lost_class(own: list[MatchResult], verdicts: list[Verdict]) -> str:
    if not own:
        return "no candidate"
    if not verdicts:
        return "too common (not verified)"
    best = max(verdicts, key=strength)
    if best.outcome is Outcome.UNVERIFIABLE:
        return "unverifiable"
    return ("rejected" + (", closer look" if best.zoomed else "")
            + (f", inliers >= {MIN_INLIERS}" if best.inliers >= MIN_INLIERS else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transforms", default="crop_80,rotate,screenshot", help="comma-separated names")
    parser.add_argument("--filler", default="all", help="filler references: a count or 'all'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args()
    chosen = [t.strip() for t in args.transforms.split(",") if t.strip()]
    if set(chosen) - set(TRANSFORMS):
        parser.error(f"unknown transforms {sorted(set(chosen) - set(TRANSFORMS))}")
    started = time.perf_counter()
    available = len(load_roles()["filler"])
    filler = available if args.filler == "all" else min(int(args.filler), available)
    loaded = load_features(filler, args.seed, 1, ("reference", "filler", "true"))
    match = loaded.settings.match
    calibration = Calibration.load(DEFAULT_PATH)
    thresholds = Thresholds.defaults(match)
    radius = {n: thresholds.of(n) for n in SIGNALS}
    library = Library("references")
    loaded.add_references(library, range(filler))
    local = LocalFeaturesOnDemand(loaded.settings)
    queries = collections.Counter[str]()
    classes = collections.Counter[tuple[str, str]]()
    lost: list[str] = []
    for at, (item, features) in enumerate(zip(loaded.items["true"], loaded.features["true"], strict=True)):
        if item.transform not in chosen:
            continue
        queries[item.transform] += 1
        verdicts: dict[tuple[int, str], Verdict] = {}
        verifier = local.verifier(item, ("true", at), loaded.owner_item, match.verify_closer)

        def check(result: MatchResult, verifier=verifier, verdicts=verdicts) -> Verdict:  # type: ignore[no-untyped-def]
            verdicts[(result.owner, result.signal)] = verdict = verifier(result)
            return verdict

        assess = Recording(calibration, len(library), match, check)
        vectors = {n: s.query_vectors(features, match) for n, s in SIGNALS.items()}
        results = match_library(library, vectors, radius, lambda _owner: thresholds, features, match, assess=assess)
        if item.position in {r.owner for r in results}:
            continue
        own = [r for r in assess.candidates if r.owner == item.position]
        seen = [verdicts[(r.owner, r.signal)] for r in own if (r.owner, r.signal) in verdicts]
        kind = lost_class(own, seen)
        classes[(item.transform, kind)] += 1
        lost.append(f"{item.transform} {item.label}: {kind}" + "".join(
            f"; {r.signal} {r.score:.3f}" + ("" if r.normalised is None else f" (normalised {r.normalised:.3f})")
            for r in own))
    local.close()
    lines = [f"# Lost true copies at {len(library)} references (`python -m bench.lost_copies`)\n",
             f"- Machine: {machine()}; wall time {(time.perf_counter() - started) / 60:.1f} min",
             f"- Transforms: {', '.join(chosen)}; calibration {calibration.model}\n",
             "| transform | queries | lost | class | lost in class |", "|---|---|---|---|---|"]
    for transform in chosen:
        lost_here = sum(n for (t, _), n in classes.items() if t == transform)
        for (t, kind), n in sorted(classes.items()):
            if t == transform:
                lines.append(f"| {transform} | {queries[transform]} | {lost_here} | {kind} | {n} |")
    lines += ["", "Every lost copy:", ""] + [f"- {line}" for line in lost]
    progress("done")
    publish("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
