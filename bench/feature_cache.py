"""Model features of benchmark images, computed once and kept on disk (`var/bench-cache/`).

Precision at 10,000 references needs the features of 10,000 filler images: about an hour on two cores. They do
not change between runs of the matcher, so each image's `MediaFeatures` is stored under a key made of its bytes'
SHA-256, the feature families and every model setting (a new model or region layout is a new key). Extraction
runs in worker processes with one inference thread each, which uses two cores better than one process with two.
The cache holds features of benign benchmark images only, never of anything a service was given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
import pickle
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from server.config import Settings
from server.inference.features import MediaFeatures

ROOT = Path(__file__).resolve().parents[1] / "var" / "bench-cache"


def fingerprint(settings: Settings, families: frozenset[str]) -> str:
    text = repr((dataclasses.asdict(settings.models), dataclasses.asdict(settings.limits), sorted(families)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FeatureCache:
    def __init__(self, settings: Settings, families: frozenset[str], root: Path = ROOT) -> None:
        self.settings = settings
        self.families = families
        self.directory = root / fingerprint(settings, families)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, data: bytes) -> Path:
        digest = hashlib.sha256(data).hexdigest()
        return self.directory / digest[:2] / f"{digest}.pkl"

    def get(self, data: bytes) -> MediaFeatures | None:
        path = self.path(data)
        if not path.exists():
            return None
        with open(path, "rb") as handle:
            return pickle.load(handle)  # our own cache of our own dataclasses, under var/

    def put(self, data: bytes, features: MediaFeatures) -> None:
        path = self.path(data)
        path.parent.mkdir(exist_ok=True)
        temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            pickle.dump(features, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, path)

    def features(self, items: Iterable[bytes], workers: int = 2,
                 progress: Callable[[int, int], None] | None = None) -> Iterator[MediaFeatures]:
        """Features of each item's bytes in order: from the cache, the missing ones computed by `workers`
        processes (one inference thread each) and stored."""
        items = list(items)
        missing = [i for i, data in enumerate(items) if not self.path(data).exists()]
        if missing:
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, _init_worker, (self.settings, self.families, self.directory.parent)) as pool:
                for done, _ in enumerate(pool.imap_unordered(_extract, (items[i] for i in missing), chunksize=4)):
                    if progress is not None:
                        progress(done + 1, len(missing))
        for data in items:
            features = self.get(data)
            assert features is not None
            yield features


_worker: tuple[object, FeatureCache] | None = None


def _init_worker(settings: Settings, families: frozenset[str], root: Path) -> None:
    global _worker
    from server.inference.inprocess import InProcessInference

    single = dataclasses.replace(settings, models=dataclasses.replace(settings.models, threads=1))
    cache = FeatureCache(settings, families, root)  # keyed by the caller's settings: threads do not change features
    _worker = (InProcessInference(single), cache)


def _extract(data: bytes) -> None:
    assert _worker is not None
    inference, cache = _worker
    try:
        features = inference.media_features(data, cache.families)  # type: ignore[attr-defined]
    except Exception as error:  # a benchmark image the service refuses: record it as no features
        features = MediaFeatures((0, 0), 0.0, [])
        print(f"features refused: {type(error).__name__}: {error}", flush=True)
    cache.put(data, features)
