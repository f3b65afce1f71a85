"""Which case each reference and negative-bank entry belongs to, and each case's thresholds: the maps every search
reads, loaded from the database at start and kept in step with the service's writes (which hold the service's
write lock from the commit to the index update)."""

from __future__ import annotations

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
        return self.thresholds_for_case(self._reference_cases.get(owner, ""))

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
