"""What every runtime's network shares: the call contract and running it on bounded slices of a batch. A leaf
module, so ONNX Runtime's side (`onnx_session`) and PyTorch's (`torch_port`) both build on it, not on each other."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np


class Network(Protocol):
    """A single-input, single-output network: a numpy batch in, its float32 output out (rows in order)."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def in_batches(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, size: int) -> np.ndarray:
    """run() on slices of at most `size` rows (bounded memory), outputs joined as float32. Needs rows."""
    if not len(batch):
        raise ValueError("an empty batch: callers answer empty inputs themselves")
    return np.concatenate([np.asarray(run(batch[start:start + size]), np.float32)
                           for start in range(0, len(batch), size)])
