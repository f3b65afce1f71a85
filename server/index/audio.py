"""The audio signal's index: Chromaprint codes per owner, found by exact code and scored by aligned windows.

As AcoustID's index does, a query's codes are looked up exactly (a sorted array of every stored code, plus a small
unsorted tail of recent additions merged in when it grows); each hit proposes an alignment (owner, offset). Codes
stored more than `max_postings` times (hum, silence, a site's jingle) propose nothing. Each proposed alignment is
then scored row by row: the share of agreeing bits over the window of `window` codes around the row, as a
similarity 1 - 2 * bit error rate (about 0.15 for unrelated sound, above 0.7 for a re-encoded copy). One exact code
in a stretch of sound is enough to find it; every row of that stretch is then scored, seed or not. Pure numpy:
it works with either index backend.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from server.index.base import (
    LOCAL_BITS,
    Owned,
    batch_owners,
    check_owner_sections,
    owner_sections,
    unpack_ids,
)
from server.index.snapshot import read_snapshot, write_snapshot

_POPCOUNT16 = np.array([bin(i).count("1") for i in range(1 << 16)], np.uint8)
_MERGE_TAIL = 1 << 16  # unsorted codes searched linearly before they are merged into the sorted array


def bit_errors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Differing bits of each pair of uint32 codes."""
    x = np.bitwise_xor(a, b)
    return (_POPCOUNT16[x & 0xFFFF] + _POPCOUNT16[x >> 16]).astype(np.int32)


def _codes(rows: np.ndarray) -> np.ndarray:
    x = np.asarray(rows)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1 or x.dtype != np.uint32:
        raise ValueError(f"expected Chromaprint codes as uint32 [n, 1], got {x.dtype} {np.shape(rows)}")
    return np.ascontiguousarray(x)


class AudioIndex(Owned):
    dim = 1
    metric = "audio"
    device = "cpu"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._counts: dict[int, int] = {}
        self._by_owner: dict[int, np.ndarray] = {}
        self._sorted_codes = np.zeros(0, np.uint32)
        self._sorted_ids = np.zeros(0, np.int64)
        self._tail_codes: list[np.ndarray] = []
        self._tail_ids: list[np.ndarray] = []
        self._removed: set[int] = set()  # owners still in the sorted array, dropped at the next merge

    @property
    def layout(self) -> str:
        return "audio:exact-codes"

    def memory_bytes(self) -> int:
        with self._lock:
            stored = sum(len(c) for c in self._by_owner.values())
            searched = len(self._sorted_codes) + sum(map(len, self._tail_codes))
            return stored * 4 + searched * 12 + 100 * len(self._counts)

    def add(self, owner: int, vectors: np.ndarray) -> None:
        self.add_many([(owner, vectors)])

    def add_many(self, items: Iterable[tuple[int, np.ndarray]]) -> None:
        owners, blocks, codes, ids = batch_owners(items, _codes)
        with self._lock:
            taken = [o for o in owners if o in self._counts]
            if taken:
                raise ValueError(f"owners {taken[:5]} are in the index already")
            for owner, block in zip(owners, blocks, strict=True):
                self._counts[owner] = len(block)
                self._by_owner[owner] = block.copy()
                self._removed.discard(owner)
            if len(codes):
                self._tail_codes.append(np.asarray(codes, np.uint32))
                self._tail_ids.append(ids)
            if sum(map(len, self._tail_codes)) > _MERGE_TAIL:
                self._merge()

    def remove(self, owners: Iterable[int]) -> int:
        with self._lock:
            gone = [o for o in set(owners) if o in self._counts]
            for owner in gone:
                del self._counts[owner], self._by_owner[owner]
                self._removed.add(owner)
            if len(self._removed) > max(16, len(self._counts) // 5):
                self._merge()
            return len(gone)

    def _merge(self) -> None:
        codes = np.concatenate([self._sorted_codes, *self._tail_codes])
        ids = np.concatenate([self._sorted_ids, *self._tail_ids])
        if self._removed:
            keep = ~np.isin(ids >> LOCAL_BITS, np.fromiter(self._removed, np.int64))
            codes, ids = codes[keep], ids[keep]
        order = np.argsort(codes, kind="stable")
        self._sorted_codes, self._sorted_ids = codes[order], ids[order]
        self._tail_codes, self._tail_ids = [], []
        self._removed.clear()

    def _postings(self, codes: np.ndarray, max_postings: int) -> tuple[np.ndarray, np.ndarray]:
        """(query positions, stored ids) of every exact code hit, without codes stored over `max_postings` times."""
        starts = np.searchsorted(self._sorted_codes, codes, "left")
        ends = np.searchsorted(self._sorted_codes, codes, "right")
        tail_codes = np.concatenate(self._tail_codes) if self._tail_codes else np.zeros(0, np.uint32)
        tail_ids = np.concatenate(self._tail_ids) if self._tail_ids else np.zeros(0, np.int64)
        positions, found = [], []
        for q, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            in_tail = np.nonzero(tail_codes == codes[q])[0] if len(tail_codes) else np.zeros(0, np.int64)
            if end - start + len(in_tail) > max_postings or end - start + len(in_tail) == 0:
                continue
            ids = np.concatenate([self._sorted_ids[start:end], tail_ids[in_tail]])
            positions.append(np.full(len(ids), q, np.int64))
            found.append(ids)
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(positions), np.concatenate(found)

    def search(self, queries: np.ndarray, threshold: float, window: int, max_postings: int,
               max_alignments: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(query rows, owners, locals, similarities) of every query row whose window agrees with the aligned
        stored window to at least `threshold`, over the `max_alignments` alignments most seeds propose."""
        query = _codes(queries)
        empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
        with self._lock:
            if not len(query) or not self._counts:
                return empty
            positions, ids = self._postings(query, max_postings)
            owners, locals_ = unpack_ids(ids)
            alive = np.fromiter((o in self._counts for o in owners.tolist()), bool, len(owners))
            if not alive.any():
                return empty
            pairs, votes = np.unique(np.stack([owners[alive], locals_[alive] - positions[alive]], 1), axis=0,
                                     return_counts=True)
            best = pairs[np.argsort(-votes, kind="stable")[:max_alignments]]
            out = [self._score(query, int(owner), int(offset), threshold, window) for owner, offset in best]
        rows = [o for o in out if len(o[0])]
        if not rows:
            return empty
        return tuple(np.concatenate([r[i] for r in rows]) for i in range(4))  # type: ignore[return-value]

    def _score(self, query: np.ndarray, owner: int, offset: int, threshold: float, window: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        stored = self._by_owner[owner]
        first, last = max(0, -offset), min(len(query), len(stored) - offset)
        if last - first < 1:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        errors = bit_errors(query[first:last], stored[first + offset:last + offset]).astype(np.float64)
        # the bits over the window centred on each row (shorter at the ends of the overlap)
        kernel = np.ones(window)
        wrong = np.convolve(errors, kernel, "same")
        bits = 32.0 * np.convolve(np.ones_like(errors), kernel, "same")
        similarity = (1.0 - 2.0 * wrong / bits).astype(np.float32)
        # at the ends of the overlap, half a window is still enough to say
        keep = np.nonzero((similarity >= threshold) & (bits >= 32.0 * min(window // 2, last - first)))[0]
        rows = keep + first
        return rows.astype(np.int64), np.full(len(rows), owner, np.int64), (rows + offset).astype(np.int64), \
            similarity[keep]

    def save(self, path: Path) -> None:
        with self._lock:
            owners = sorted(self._counts)
            codes = np.concatenate([self._by_owner[o] for o in owners]) if owners else np.zeros(0, np.uint32)
            counts = {o: self._counts[o] for o in owners}
            write_snapshot(path, {"kind": "audio"}, {"codes": codes, **owner_sections(counts)})

    @classmethod
    def load(cls, path: Path) -> AudioIndex:
        _, sections = read_snapshot(path, "audio")
        codes = sections.get("codes")
        if codes is None or codes.dtype != np.uint32 or codes.ndim != 1:
            raise ValueError(f"{path}: malformed audio-index snapshot")
        counts = check_owner_sections(path, sections, len(codes))
        index = cls()
        bounds = np.cumsum([0, *counts.values()])
        index.add_many((o, codes[bounds[i]:bounds[i + 1]]) for i, o in enumerate(counts))
        return index
