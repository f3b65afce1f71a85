"""One way to open an ONNX Runtime session for every in-process model."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def open_session(path: Path | str, threads: int = 0, providers: str = "CPUExecutionProvider") -> ort.InferenceSession:
    """`providers`: comma-separated, in order of preference; those this ONNX Runtime build lacks are skipped."""
    available = set(ort.get_available_providers())
    chosen = [p.strip() for p in providers.split(",") if p.strip() in available] or ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ONNX Runtime picks one per core
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=chosen)
