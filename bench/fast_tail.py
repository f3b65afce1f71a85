"""The null tail of the distilled SSCD (the `embedding_fast` signal), fitted on the dev corpus.

    .venv/bin/python -m bench.fast_tail [--transforms 2] [--seed 0]

The packaged calibration (server/data/calibration_sscd.npz) is fitted for the full SSCD at scale, on 5,000 filler
references (`bench.precision --fit`). The distilled embedding, the cascade's screen, also decides matches where
it is the only picture signal a stored item has (a sighting the screen ruled out: its retro-hunt). Until a fit at
scale exists for it, its tail is this one: every dev-corpus image under `--transforms` seeded uploader
transforms, against every other corpus image not in its near-duplicate group (about 140,000 unrelated pairs),
best pair of regions as the service scores it, fitted and doubled as `bench.precision.fit_tail` does. It prints
the Tail to put in server/calibration.py (FAST_EMBEDDING_PRIOR), with the data it was fitted on.
"""

from __future__ import annotations

import argparse
import random

import numpy as np

from bench.accuracy import RowBank, best_per_reference, corpus_entries, progress, transformed
from bench.precision import fit_tail
from bench.record import machine
from bench.transforms import CORPUS, TRANSFORMS, encode, load
from server.config import Settings
from server.inference.inprocess import InProcessInference
from server.signals import SIGNALS

SIGNAL = "embedding_fast"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transforms", type=int, default=2, help="seeded uploader transforms per corpus image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = Settings()
    signal = SIGNALS[SIGNAL]
    entries = corpus_entries(None, args.seed)
    families = frozenset({signal.family})
    with InProcessInference(settings) as inference:
        rows = []
        for n, entry in enumerate(entries):
            features = inference.media_features((CORPUS / entry.file).read_bytes(), families)
            rows.append(signal.reference_vectors(features, settings.match))
            if n % 50 == 0:
                progress(f"references {n + 1}/{len(entries)}")
        bank = RowBank.of(rows, signal.dim, np.float32)
        groups = np.array([e.group for e in entries])
        closeness, true_scores = [], []
        rng = random.Random(args.seed)
        for n, entry in enumerate(entries):
            for name in rng.sample(sorted(TRANSFORMS), args.transforms):
                query = encode(transformed(name, load(CORPUS / entry.file), args.seed + entry.index), "JPEG", 90)
                vectors = signal.query_vectors(inference.media_features(query, families), settings.match)
                best = best_per_reference(bank, vectors, len(entries), SIGNAL)
                unrelated = groups != entry.group
                closeness.append(best[unrelated])
                true_scores.append(float(best[n]))
            if n % 50 == 0:
                progress(f"queries of {n + 1}/{len(entries)} images")
    null = np.concatenate(closeness)
    null = null[np.isfinite(null)]
    tail = fit_tail(null, len(null), lower_is_closer=False)
    print(f"machine: {machine()}")
    print(f"{len(null)} unrelated pairs from {len(entries)} corpus images x {args.transforms} transforms; "
          f"max {null.max():.3f}, 99.9 % {np.quantile(null, 0.999):.3f}, 99 % {np.quantile(null, 0.99):.3f}")
    scored = np.array(true_scores)[np.isfinite(true_scores)]  # a flat image has no regions to score
    print(f"true pairs ({len(scored)} of {len(true_scores)} scored): min {scored.min():.3f}, "
          f"1 % {np.quantile(scored, 0.01):.3f}, median {np.median(scored):.3f}")
    print(f"tail: {tail}")
    if tail is not None:
        for score in (0.5, 0.6, 0.7, 0.8):
            print(f"  P(one unrelated reference >= {score}) = {tail.p_one(score):.2e}")


if __name__ == "__main__":
    main()
