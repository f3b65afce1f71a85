"""The service's three libraries (references, sightings, benign) over the signals: loaded from their snapshots,
brought in step with PostgreSQL (the truth) at start, and snapshotted to disk periodically and on demand.

With the Milvus backend the libraries are shared by every replica (`Library.shared`): nothing is snapshotted, and
the start only adds what PostgreSQL holds and Milvus lacks, and removes what Milvus holds and PostgreSQL no longer
does (a replica killed between its two writes leaves such rows)."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

from server.config import Settings
from server.matching.library import Library
from server.signals import Signal, negative_bank_signals
from server.storage.store import Collection, Store

log = logging.getLogger(__name__)

NAMES = ("references", "sightings", "benign")


class Collections:
    def __init__(self, settings: Settings, store: Store, snapshot_dir: Path | None) -> None:
        self.settings = settings
        self.store = store
        self.shared = settings.index.backend == "milvus"
        self.snapshot_dir = None if self.shared else snapshot_dir
        self.libraries: dict[str, Library] = {}
        self._snapshot_lock = threading.Lock()
        self._snapshotter: threading.Thread | None = None

    def __getitem__(self, name: str) -> Library:
        return self.libraries[name]

    def load(self, signals: dict[str, Signal]) -> None:
        """Each library over the signals queries are searched with (the negative bank: those of them it holds)."""
        bank = negative_bank_signals()
        chosen = {name: {n: s for n, s in signals.items() if n in bank} if name == "benign" else signals
                  for name in NAMES}
        if self.shared:  # Milvus loads each collection in seconds: the three libraries open together
            with ThreadPoolExecutor(len(NAMES)) as pool:
                self.libraries.update(zip(NAMES, pool.map(lambda name: self._reconcile(name, chosen[name]), NAMES),
                                          strict=True))
        else:
            for name in NAMES:
                self.libraries[name] = self._reconcile(name, chosen[name])

    def _reconcile(self, name: str, signals: dict[str, Signal]) -> Library:
        started = time.monotonic()
        library = None
        if self.snapshot_dir is not None:
            library = Library.load(name, self.snapshot_dir, signals, self.settings.index)
        from_snapshot = library is not None
        library = library or Library(name, signals, self.settings.index)
        collection = cast("Collection", name)
        # A shared library's newest owners only (where a replica killed between its two writes leaves them); the
        # rest is as the replicas left it. An empty database: everything the index holds is stale
        since = (self.store.newest_owners_from(collection, self.settings.index.milvus_reconcile_newest)
                 if self.shared else None)
        # The index's owners before the database's: an owner another replica is adding meanwhile is in the
        # database before it is in the index, so it is never taken for stale
        indexed = library.owners(since)
        in_database = self.store.owner_ids(collection, since)
        stale = indexed - in_database
        library.remove(stale)
        missing = in_database - indexed
        for batch in self.store.load_vector_batches(collection, missing):
            library.add_many(batch.items())
        if self.shared and missing:  # forgotten on another replica while this one re-added them: not again
            library.remove(missing - self.store.owner_ids(collection, since))
        log.info("%s: %d owners (%s), %d added from the database, %d stale removed, %.1f s", name, len(library),
                 "snapshot" if from_snapshot else "no snapshot", len(missing), len(stale),
                 time.monotonic() - started)
        if library.pending:  # trainable factories (IVF*) start as exact Flat; train once there are enough vectors
            started = time.monotonic()
            trained = library.train_pending()
            log.info("%s: %s trained from the stored vectors in %.1f s; %s still exact Flat (too few vectors)",
                     name, trained or "nothing", time.monotonic() - started, sorted(library.pending) or "none")
        return library

    def snapshot(self, names: tuple[str, ...] | None = None, force: bool = False) -> None:
        if self.snapshot_dir is None:
            return
        with self._snapshot_lock:
            for name, library in self.libraries.items():
                if (names is None or name in names) and (force or library.changes):
                    library.save(self.snapshot_dir)

    def start_snapshots(self, stop: threading.Event) -> None:
        """Snapshot every `snapshot_interval_s` until `stop` is set."""
        if self.snapshot_dir is None:
            return

        def loop() -> None:
            while not stop.wait(self.settings.service.snapshot_interval_s):
                try:
                    self.snapshot()
                except Exception:  # keep serving; the next interval retries, the database is the truth
                    log.exception("index snapshot failed")

        self._snapshotter = threading.Thread(target=loop, name="snapshots", daemon=True)
        self._snapshotter.start()

    def stop(self) -> None:
        """After the snapshot loop's `stop` is set: wait for it, and write a last snapshot."""
        if self._snapshotter is not None:
            self._snapshotter.join(timeout=5)
        self.snapshot()


def rebuild(settings: Settings, store: Store) -> dict[str, int]:
    """The indexes written again from PostgreSQL: with the Milvus backend this install's collections are dropped
    and refilled (run it with the replicas stopped: meanwhile their searches fail UNAVAILABLE); with an in-process
    backend the snapshots are deleted, and the next start reads everything from the database. Returns the owners
    per library (Milvus) or the snapshot files deleted (in-process)."""
    from server.service.versions import signals_in_use
    from server.signals import configured_signals

    if settings.index.backend != "milvus":
        snapshots = Path(settings.service.data_dir).expanduser() / "index"
        files = [f for f in snapshots.glob("*") if f.is_file()] if snapshots.is_dir() else []
        for file in files:
            file.unlink()
        return {"snapshot files": len(files)}
    from server.index.milvus import drop_collections

    dropped = drop_collections(settings.index, NAMES)
    log.info("dropped %d Milvus collections: %s", len(dropped), ", ".join(dropped) or "none")
    collections = Collections(settings, store, None)
    collections.load(signals_in_use(store, configured_signals(settings.match), store.signal_models))
    # counted Strong: a search's staleness would not see the rows just written
    return {name: collections[name].registry.count(strong=True) for name in NAMES}  # type: ignore[union-attr]
