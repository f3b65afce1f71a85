"""One way to open an ONNX Runtime session for every in-process model, and one way to run an ONNX network on
numpy batches in either runtime (`ModelSettings.runtime`): ONNX Runtime, or the PyTorch port of the same graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from server.config import ModelSettings
from server.models.batches import Network, in_batches

RUNTIMES = ("onnxruntime", "torch")


def open_session(path: Path | str, threads: int = 0, providers: str = "CPUExecutionProvider") -> ort.InferenceSession:
    """`providers`: comma-separated, in order of preference; those this ONNX Runtime build lacks are skipped."""
    available = set(ort.get_available_providers())
    chosen = [p.strip() for p in providers.split(",") if p.strip() in available] or ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ONNX Runtime picks one per core
    options.inter_op_num_threads = 1
    # Idle pool threads would spin for work, burning the cores that other models' instances need
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=chosen)


class OrtNetwork:
    def __init__(self, session: ort.InferenceSession, max_batch: int) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.max_batch = max(1, max_batch)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return in_batches(lambda chunk: self.session.run(None, {self.input_name: chunk})[0], batch, self.max_batch)


def open_network(path: Path | str, config: ModelSettings, max_batch: int) -> Network:
    """The ONNX file at `path`, run by the runtime `config` names, at most `max_batch` rows per call."""
    if config.runtime == "onnxruntime":
        return OrtNetwork(open_session(path, config.threads, config.onnx_providers), max_batch)
    if config.runtime == "torch":
        from server.models.torch_port import TorchNetwork  # PyTorch loads only in processes that run it

        return TorchNetwork(path, device=config.torch_device, fp16=config.torch_fp16,
                            cuda_graphs=config.torch_cuda_graphs, max_batch=max_batch, qdq=config.torch_qdq)
    raise ValueError(f"runtime must be one of {RUNTIMES}, not {config.runtime!r}")
