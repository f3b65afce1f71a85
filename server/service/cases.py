"""Which case each reference and negative-bank entry belongs to, and each case's thresholds: the maps every search
reads, loaded from the database at start and kept in step with the service's writes (which hold the service's
write lock from the commit to the index update)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable

from server.matching.decisions import Thresholds
from server.storage.store import Store


class Cases:
    def __init__(self, defaults: Thresholds) -> None:
        self.defaults = defaults
        self._thresholds: dict[str, Thresholds] = {}
        self._reference_cases: dict[int, str] = {}
        self._benign_cases: dict[int, str | None] = {}  # negative-bank entry -> its case (None: every case)

    def load(self, store: Store) -> None:
        self._reference_cases = store.reference_cases()
        self._benign_cases = store.benign_cases()
        self._thresholds = {case: self.defaults.with_overrides(t) for case, t in store.case_thresholds().items()}

    # -- thresholds -----------------------------------------------------------------------------------------------

    def thresholds_for_case(self, case_id: str) -> Thresholds:
        return self._thresholds.get(case_id, self.defaults)

    def thresholds_for_reference(self, owner: int) -> Thresholds:
        return self.thresholds_for_case(self.case_of_reference(owner))

    def search_radius(self) -> dict[str, float]:
        """Per signal, the loosest threshold any case uses: one search serves every case."""
        return self.defaults.loosest(list(self._thresholds.values()))

    def set_thresholds(self, case_id: str, thresholds: Thresholds) -> None:
        self._thresholds[case_id] = thresholds

    # -- owners ---------------------------------------------------------------------------------------------------

    def case_of_reference(self, owner: int) -> str:
        """"" for a reference that is not (or no longer) known: being forgotten, it matches no case."""
        return self._reference_cases.get(owner, "")

    def is_reference(self, owner: int) -> bool:
        return owner in self._reference_cases

    def references_of_case(self, case_id: str) -> set[int]:
        return {r for r, c in self._reference_cases.copy().items() if c == case_id}  # copy: atomic

    def case_of_benign(self, owner: int) -> str | None:
        """None: the entry applies to every case. "" for an entry being forgotten with its case (it leaves the
        index first): the caller drops it, so it suppresses nothing rather than everything."""
        return self._benign_cases.get(owner, "")

    def add_reference(self, reference_id: int, case_id: str) -> None:
        self._thresholds.setdefault(case_id, self.defaults)
        self._reference_cases[reference_id] = case_id

    def add_benign(self, benign_id: int, case_id: str | None) -> None:
        self._benign_cases[benign_id] = case_id

    def forget(self, references: Iterable[int], benign: Iterable[int], case_id: str | None) -> None:
        for owner in references:
            self._reference_cases.pop(owner, None)
        for owner in benign:
            self._benign_cases.pop(owner, None)
        if case_id is not None:
            self._thresholds.pop(case_id, None)


class SharedCases(Cases):
    """The same answers for a replica among several (the Milvus backend): what another replica wrote is read from
    PostgreSQL, not held from start. A reference's or an entry's case never changes, so each one seen is
    remembered (up to `remembered`); one PostgreSQL no longer holds is being forgotten and belongs to no case.
    The thresholds are read again when `refresh_s` old: a case configured on another replica applies here then."""

    def __init__(self, defaults: Thresholds, store: Store, refresh_s: float = 0.5, remembered: int = 100_000) -> None:
        super().__init__(defaults)
        self.store = store
        self.refresh_s = refresh_s
        self.remembered = remembered
        self._thresholds_read = -math.inf
        self._lock = threading.Lock()

    def load(self, store: Store) -> None:
        self._read_thresholds()  # the owner maps fill as owners are met: a replica need not read millions

    def _read_thresholds(self) -> None:
        self._thresholds = {case: self.defaults.with_overrides(t) for case, t in self.store.case_thresholds().items()}
        self._thresholds_read = time.monotonic()

    def _fresh_thresholds(self) -> None:
        if time.monotonic() - self._thresholds_read > self.refresh_s:
            with self._lock:
                if time.monotonic() - self._thresholds_read > self.refresh_s:
                    self._read_thresholds()

    def thresholds_for_case(self, case_id: str) -> Thresholds:
        self._fresh_thresholds()
        return super().thresholds_for_case(case_id)

    def search_radius(self) -> dict[str, float]:
        self._fresh_thresholds()
        return super().search_radius()

    def _remember(self, into: dict, found: dict) -> None:
        if len(into) + len(found) > self.remembered:
            into.clear()  # rare, and only costs lookups again
        into.update(found)

    def case_of_reference(self, owner: int) -> str:
        if owner not in self._reference_cases:
            self._remember(self._reference_cases, self.store.reference_cases([owner]))
        return self._reference_cases.get(owner, "")

    def is_reference(self, owner: int) -> bool:
        return self.case_of_reference(owner) != ""

    def references_of_case(self, case_id: str) -> set[int]:
        return self.store.case_references(case_id)

    def case_of_benign(self, owner: int) -> str | None:
        if owner not in self._benign_cases:
            self._remember(self._benign_cases, self.store.benign_cases([owner]))
        return self._benign_cases.get(owner, "")
