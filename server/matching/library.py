"""A searchable collection of media: references, sightings, or the negative bank.

One index per signal (of the backend `IndexSettings` names), plus the frame time of every stored row (the segment
of a video match needs the target's times). The database is the truth; a library is a cache of it that can be
snapshotted to disk so a restart reads only what changed since the snapshot (`server.service` reconciles the two).

A FAISS factory that needs training (IVF*, PQ) cannot take vectors before it is trained, and is trained well only
on enough of them. So an exact Flat index stands in for it, taking adds and serving searches, until
`train_pending` finds it holds `min_training_vectors` (39 per centroid) and builds the trained index from it.

With the Milvus backend the library is *shared*: its indexes, its owners (`server.index.milvus.MilvusOwners`) and
the frame times all live in Milvus, which every replica reads and writes, so the library keeps nothing of its own
and has no snapshot. Every index of a shared library must be a Milvus one: the audio signal's is not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from server.config import IndexSettings, MatchSettings
from server.index import owner_registry
from server.index.base import VectorSearch
from server.index.snapshot import atomic_write
from server.signals import Hits, Signal, SignalVectors, configured_signals

if TYPE_CHECKING:
    from server.index.faiss_index import BinaryIndex, VectorIndex
    from server.index.milvus import MilvusOwners

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1
# Owners without the cascade's screen rows are those stored before its model was (a migration's transition): a
# replica learns of another's within this long
UNSCREENED_TTL_S = 10.0
TRAINING_SAMPLE = 2  # train on up to this many times min_training_vectors (FAISS caps k-means at 256 per centroid)


@dataclass(frozen=True)
class IndexStat:
    collection: str
    signal: str
    vectors: int
    owners: int
    memory_bytes: int
    device: str


class Library:
    def __init__(self, name: str, signals: dict[str, Signal] | None = None,
                 settings: IndexSettings | None = None) -> None:
        self.name = name
        self.signals = dict(configured_signals(MatchSettings()) if signals is None else signals)
        self.settings = settings or IndexSettings()
        self.shared = self.settings.backend == "milvus"
        self.pending: dict[str, str] = {}  # signal -> layout of the trained index its Flat stand-in waits for
        self.registry: MilvusOwners | None = None
        self._unscreened: dict[tuple[str, str], tuple[float, int]] = {}  # shared: (when counted, count)
        if self.shared:  # each collection takes seconds to load in Milvus: open them together
            with ThreadPoolExecutor(len(self.signals) + 1) as pool:
                registry = pool.submit(owner_registry, self.settings, name)
                opened = dict(zip(self.signals, pool.map(self._fresh, self.signals), strict=True))
                self.registry = registry.result()
            self.indexes: dict[str, VectorSearch | BinaryIndex] = opened
        else:
            self.indexes = {n: self._fresh(n) for n in self.signals}
        self._times: dict[str, dict[int, np.ndarray]] = {n: {} for n in self.signals}
        self._owners: set[int] = set()
        self._lock = threading.RLock()
        self.changes = 0  # since the last snapshot

    def add(self, owner: int, rows: dict[str, SignalVectors]) -> None:
        """Add one owner's rows (all signals at once). Adding an owner twice is a no-op: the database decides
        what exists, and reconciliation may offer the same owner again."""
        self.add_many([(owner, rows)])

    def add_many(self, items: Iterable[tuple[int, dict[str, SignalVectors]]]) -> None:
        """`add` for many owners with one index call per signal (start-up loads from the database)."""
        if self.registry is not None:
            self._add_shared(dict(items))
            return
        with self._lock:
            fresh = {owner: rows for owner, rows in items if owner not in self._owners}
            if not fresh:
                return
            for name, index in self.indexes.items():
                batch = [(o, r[name]) for o, r in fresh.items() if name in r and len(r[name])]
                index.add_many([(o, v.vectors) for o, v in batch])
                self._times[name].update((o, np.asarray(v.timestamps, np.float32)) for o, v in batch)
            self._owners.update(fresh)
            self.changes += 1

    def _add_shared(self, items: dict[int, dict[str, SignalVectors]]) -> None:
        """Rows first, then the owners' entries: an owner the registry lists is searchable on every replica.
        Writes are upserts, so an owner offered again (a replica reconciling) is written once."""
        if not items:
            return
        for name, index in self.indexes.items():
            batch = [(o, r[name].vectors, r[name].timestamps) for o, r in items.items() if name in r and len(r[name])]
            index.add_timed(batch)  # type: ignore[union-attr]
        assert self.registry is not None
        self.registry.record({o: {name: len(r.get(name, ())) for name in self.indexes} for o, r in items.items()})
        self._unscreened.clear()  # this replica's own adds count at once
        self.changes += 1

    def remove(self, owners: Iterable[int]) -> int:
        if self.registry is not None:  # the entries first: nothing listed lacks its rows
            gone = set(owners)
            held = self.registry.remove(gone)
            for index in self.indexes.values():
                index.remove(gone)
            self._unscreened.clear()
            self.changes += 1
            return held
        with self._lock:
            gone = set(owners) & self._owners
            if gone:
                for name, index in self.indexes.items():
                    index.remove(gone)
                    for owner in gone:
                        self._times[name].pop(owner, None)
                self._owners -= gone
                self.changes += 1
            return len(gone)

    def _fresh(self, signal: str) -> VectorSearch | BinaryIndex:
        if self.shared:
            return self._fresh_shared(signal)
        index = self.signals[signal].make_index(self.settings)
        if getattr(index, "needs_training", False):  # a FAISS IVF/PQ index: an exact Flat stands in until trained
            self.pending[signal] = index.layout
            index = self.signals[signal].make_index(dataclasses.replace(self.settings, embedding_factory="Flat"))
        return cast("VectorSearch | BinaryIndex", index)

    def _fresh_shared(self, signal: str) -> VectorSearch | BinaryIndex:
        index = self.signals[signal].make_index(dataclasses.replace(self.settings,
                                                                    collection=f"{self.name}_{signal}"))
        if not getattr(index, "shared", False):
            raise ValueError(f"signal {signal!r} keeps its index in this process, which the milvus backend cannot "
                             f"share between replicas: leave it out of JIWOOM_MATCH_SIGNALS to use milvus")
        return cast("VectorSearch | BinaryIndex", index)

    def train_pending(self) -> list[str]:
        """Replace each Flat stand-in that now holds enough vectors by its trained index (see the module
        docstring); returns the signals trained. Slow (k-means over the sample, then every vector re-added) and
        blocking: the service calls it at start, before it serves."""
        trained = []
        with self._lock:
            for signal in list(self.pending):
                # only FAISS indexes wait for training (see _fresh)
                index = cast("VectorIndex", self.signals[signal].make_index(self.settings))
                stand_in = cast("VectorIndex", self.indexes[signal])
                if len(stand_in) < index.min_training_vectors:
                    continue
                index.train_from(stand_in, TRAINING_SAMPLE * index.min_training_vectors)
                self.indexes[signal] = index
                del self.pending[signal]
                self.changes += 1
                trained.append(signal)
        return trained

    def owners(self, since: int | None = None) -> set[int]:
        """Every owner, or those with ids from `since` on."""
        if self.registry is not None:
            return self.registry.owners(since)
        with self._lock:
            return set(self._owners) if since is None else {o for o in self._owners if o >= since}

    def unscreened(self, screened: str, screen: str) -> int:
        """How many owners hold rows of `screened` but none of `screen` (stored before the screen's model was):
        the cascade cannot rule them out with the screen alone."""
        if self.registry is not None:  # a count over every owner in Milvus: asked again every few seconds only
            if screened not in self.indexes:
                return 0
            key, now = (screened, screen), time.monotonic()
            known = self._unscreened.get(key)
            if known is None or now - known[0] > UNSCREENED_TTL_S:
                known = self._unscreened[key] = (now, self.registry.lacking(screened, screen))
            return known[1]
        with self._lock:
            return len(self._times.get(screened, {}).keys() - self._times.get(screen, {}).keys())

    def __len__(self) -> int:
        return len(self.registry) if self.registry is not None else len(self._owners)

    def search(self, queries: dict[str, SignalVectors], thresholds: dict[str, float],
               settings: MatchSettings) -> dict[str, Hits]:
        """Hits per signal within each signal's threshold (the loosest any candidate case uses)."""
        out = {}
        for name, vectors in queries.items():
            if name in self.indexes and name in thresholds:
                out[name] = self.signals[name].search(self.indexes[name], vectors, thresholds[name], settings)
        return out

    def target_times(self, signal: str, owners: np.ndarray, locals_: np.ndarray) -> np.ndarray:
        """Frame time of each stored row (0 for rows of owners removed since the search)."""
        if self.shared:
            return self.indexes[signal].times(owners, locals_)  # type: ignore[union-attr]
        times = self._times[signal]
        return np.array(
            [times[o][i] if o in times and i < len(times[o]) else 0.0 for o, i in zip(owners.tolist(),
                                                                                     locals_.tolist(), strict=True)],
            np.float32,
        )

    def stats(self) -> list[IndexStat]:
        if self.registry is not None:
            registry = self.registry
            return [IndexStat(self.name, name, len(index), registry.holding(name), 0, index.device)
                    for name, index in self.indexes.items()]
        with self._lock:
            return [
                IndexStat(self.name, name, len(index), len(self._times[name]), index.memory_bytes(),
                          index.device)
                for name, index in self.indexes.items()
            ]

    # -- snapshots ------------------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write a snapshot: files of a new generation first, then the manifest naming them (atomic replace),
        then delete older generations. A crash at any point leaves the previous snapshot or the new one."""
        if self.shared:
            return  # Milvus holds it; PostgreSQL can rebuild it
        directory.mkdir(parents=True, exist_ok=True)
        manifest_path = directory / f"{self.name}.json"
        with self._lock:
            generation = _read_manifest(manifest_path).get("generation", 0) + 1
            prefix = f"{self.name}-{generation}"
            files = {}
            for name, index in self.indexes.items():
                files[name] = f"{prefix}-{name}.idx"
                index.save(directory / files[name])
            meta: dict[str, np.ndarray] = {"owners": np.array(sorted(self._owners), np.int64)}
            for name, times in self._times.items():
                owners = sorted(times)
                meta[f"{name}_owners"] = np.array(owners, np.int64)
                meta[f"{name}_counts"] = np.array([len(times[o]) for o in owners], np.int64)
                meta[f"{name}_times"] = (np.concatenate([times[o] for o in owners]) if owners
                                         else np.zeros(0, np.float32))
            files["meta"] = f"{prefix}-meta.npz"
            atomic_write(directory / files["meta"], lambda f: np.savez(f, **meta))
            manifest = {"version": SNAPSHOT_VERSION, "generation": generation, "files": files,
                        "signals": sorted(self.indexes)}
            atomic_write(manifest_path, lambda f: f.write(json.dumps(manifest).encode()))
            self.changes = 0
        for old in directory.glob(f"{self.name}-*"):
            if not old.name.startswith(prefix + "-"):
                old.unlink(missing_ok=True)

    @classmethod
    def load(cls, name: str, directory: Path, signals: dict[str, Signal] | None = None,
             settings: IndexSettings | None = None) -> Library | None:
        """The snapshot in `directory`, or None when there is none, it cannot be read, or it holds indexes of
        other settings (backend, factory) than `settings` (then the caller rebuilds from the database), or the
        library is shared (Milvus holds it)."""
        if settings is not None and settings.backend == "milvus":
            return None
        manifest = _read_manifest(directory / f"{name}.json")
        library = cls(name, signals, settings)
        if manifest.get("version") != SNAPSHOT_VERSION or sorted(manifest.get("signals", [])) != sorted(
                library.indexes):
            return None
        try:
            files = manifest["files"]
            for signal, fresh in library.indexes.items():
                index = library.signals[signal].make_index(library.settings, directory / files[signal])
                if index.layout == library.pending.get(signal):  # the trained index its stand-in waited for
                    del library.pending[signal]
                elif index.layout != fresh.layout:
                    log.info("%s snapshot: %s index is %r, the settings want %r: not used", name, signal,
                             index.layout, fresh.layout)
                    return None
                library.indexes[signal] = index
            with np.load(directory / files["meta"]) as meta:
                library._owners = set(meta["owners"].tolist())
                for signal in library.indexes:
                    owners, counts = meta[f"{signal}_owners"], meta[f"{signal}_counts"]
                    times = np.split(meta[f"{signal}_times"], np.cumsum(counts)[:-1]) if len(owners) else []
                    library._times[signal] = dict(zip(owners.tolist(), times, strict=True))
        except (OSError, KeyError, ValueError) as err:
            log.info("%s snapshot not used: %s", name, err)
            return None
        return library


def _read_manifest(path: Path) -> dict:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return {}

