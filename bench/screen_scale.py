"""How the cascade's screen holds as references grow: the share of unrelated queries it lets through to the full
SSCD at N filler references, with the raw distilled cosine (what the service uses) and normalised by a background
bank (what the full SSCD's calibration does).

    .venv/bin/python -m bench.screen_scale [--filler 1000,5000,10000] [--workers 2] [--seed 0]

Needs the precision set (`python -m bench.filler`). Only the distilled embedding is computed (cached under
var/bench-cache like bench.precision's features), so a run over 10,000 filler images takes minutes, not an hour.
Every unrelated query of the precision set is scored against the dev references plus the first N filler images:
its best pair of regions over every reference; it passes the screen where that reaches the threshold. The true
queries (every dev reference under every uploader transform) give the screen's recall: the share whose best pair
with their own reference reaches it. The normalised threshold is the one that keeps the same true queries as the
raw threshold does, so the two rows compare the cost of the same recall.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.accuracy import corpus_entries, progress
from bench.feature_cache import FeatureCache
from bench.precision import BACKGROUND_K, BANK_ROWS, cached_features, precision_items
from bench.record import machine
from bench.transforms import TRANSFORMS
from server.config import Settings
from server.signals import SIGNALS

SIGNAL = "embedding_fast"
STEP = 2048  # reference rows scored at once


def region_rows(features: list, settings: Settings) -> list[np.ndarray]:
    signal = SIGNALS[SIGNAL]
    return [signal.reference_vectors(f, settings.match).vectors for f in features]


def offsets(rows: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Each row's BACKGROUND_K-th best cosine in the bank: the normalisation of server.calibration."""
    if not len(rows):
        return np.zeros(0, np.float32)
    similarity = rows @ bank.T
    return np.partition(similarity, -BACKGROUND_K, axis=1)[:, -BACKGROUND_K].astype(np.float32)


def best_over_references(queries: list[np.ndarray], references: list[np.ndarray], cuts: list[int],
                         bank: np.ndarray, line: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[query, cut] best raw and best normalised pair score over the first `cut` references, and how many of the
    query's regions reach the raw `line` (those the service's second stage embeds in full)."""
    rows = np.concatenate([q for q in queries if len(q)]) if any(len(q) for q in queries) else np.zeros((0, 512))
    owner_of_row = np.concatenate([np.full(len(q), i) for i, q in enumerate(queries)]).astype(np.int64)
    shift = offsets(rows.astype(np.float32), bank)
    raw = np.full((len(queries), len(cuts)), -np.inf, np.float32)
    normalised = raw.copy()
    flagged = np.zeros((len(queries), len(cuts)), np.int64)
    ref_rows = np.concatenate(references)
    ref_owner = np.concatenate([np.full(len(r), i) for i, r in enumerate(references)])
    best_raw = np.full(len(rows), -np.inf, np.float32)
    done = 0
    for c, cut in enumerate(cuts):
        end = int(np.searchsorted(ref_owner, cut))  # reference rows of the first `cut` references
        for start in range(done, end, STEP):
            block = ref_rows[start:min(end, start + STEP)]
            best_raw = np.maximum(best_raw, (rows @ block.T).max(axis=1))
        done = end
        np.maximum.at(raw[:, c], owner_of_row, best_raw)
        np.maximum.at(normalised[:, c], owner_of_row, best_raw - shift)
        np.add.at(flagged[:, c], owner_of_row, best_raw >= line)
        progress(f"  scored against {cut} references")
    return raw, normalised, flagged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--filler", default="1000,5000,10000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = sorted(int(n) for n in args.filler.split(","))
    settings = Settings()
    threshold = settings.match.screen_min_similarity
    cache = FeatureCache(settings, frozenset({SIGNALS[SIGNAL].family}))
    entries = corpus_entries(None, args.seed)
    items = precision_items(entries, list(TRANSFORMS), max(sizes), args.seed)
    rows = {}
    for role in ("reference", "filler", "background", "unrelated", "true"):
        progress(f"{role}: {len(items[role])} images")
        rows[role] = region_rows(list(cached_features(cache, items[role], args.workers)), settings)
    background = np.concatenate(rows["background"][0::2])
    bank = background[np.sort(np.random.default_rng(args.seed).choice(len(background), min(BANK_ROWS, len(
        background)), replace=False))].astype(np.float32)

    # Recall of the screen: each true query against its own reference, raw and normalised
    true_raw, true_norm = [], []
    for item, query in zip(items["true"], rows["true"], strict=True):
        own = rows["reference"][item.position]
        if not len(query) or not len(own):
            continue
        similarity = query @ own.T
        true_raw.append(float(similarity.max()))
        true_norm.append(float((similarity - offsets(query, bank)[:, None]).max()))
    true_raw_a, true_norm_a = np.array(true_raw), np.array(true_norm)
    kept = true_raw_a >= threshold
    # the normalised line keeping as many true queries as the raw line does
    norm_threshold = float(np.sort(true_norm_a)[::-1][max(0, int(kept.sum()) - 1)])

    references = rows["reference"] + rows["filler"]
    cuts = [len(rows["reference"]) + n for n in sizes]
    raw, normalised, flagged = best_over_references(rows["unrelated"], references, cuts, bank, threshold)
    scored = np.array([len(q) > 0 for q in rows["unrelated"]])
    print(f"machine: {machine()}")
    print(f"{len(items['unrelated'])} unrelated queries ({int(scored.sum())} with regions), "
          f"{len(true_raw)} true queries with regions; screen {SIGNAL} at "
          f"{settings.models.fast_embed_size} px, grid {settings.models.fast_region_grid}\n")
    print(f"| screen | line | true queries kept | unrelated passing at {' / '.join(str(c) for c in cuts)} "
          "references |\n|---|---|---|---|")
    for label, line, scores, true in (("raw cosine (the service)", threshold, raw, true_raw_a),
                                      ("normalised (background bank)", norm_threshold, normalised, true_norm_a)):
        passing = " / ".join(f"{(scores[scored, c] >= line).mean() * 100:.1f} %" for c in range(len(cuts)))
        print(f"| {label} | {line:.3f} | {(true >= line).mean() * 100:.1f} % | {passing} |")

    # What the unrelated queries cost the full SSCD: every region of each that passes, or the flagged ones only
    regions = np.array([len(q) for q in rows["unrelated"]])
    print(f"\n| full SSCD regions per unrelated query | {' / '.join(str(c) for c in cuts)} references |\n|---|---|")
    every = " / ".join(f"{regions[raw[:, c] >= threshold].sum() / len(regions):.2f}" for c in range(len(cuts)))
    flagged_all = " / ".join(f"{flagged[:, c].sum() / len(regions):.2f}" for c in range(len(cuts)))
    most = settings.match.screen_max_regions
    closest = " / ".join(f"{np.minimum(flagged[:, c], most).sum() / len(regions):.2f}" for c in range(len(cuts)))
    print(f"| every region of a query that passes (screen_regions_only=0) | {every} |")
    print(f"| every flagged region | {flagged_all} |")
    print(f"| the {most} closest flagged regions (the service: screen_max_regions) | {closest} |")
    print(f"| (the full path: every region of every query) | {regions.mean():.2f} |")


if __name__ == "__main__":
    main()
