"""Reads model_repo/: each model's declared tensors and each ensemble's steps, from the Triton configs.

The in-process runner executes exactly what these files declare, so a config change means the same thing to
Triton and to the embedded default, and CI checks the files Triton will load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from jiwoom.api.errors import InvalidInput

DEFAULT_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repo"

# Triton config type -> (numpy dtype, Triton wire datatype)
DATA_TYPES: dict[str, tuple[type, str]] = {
    "TYPE_UINT8": (np.uint8, "UINT8"),
    "TYPE_INT16": (np.int16, "INT16"),
    "TYPE_INT32": (np.int32, "INT32"),
    "TYPE_INT64": (np.int64, "INT64"),
    "TYPE_FP32": (np.float32, "FP32"),
    "TYPE_BOOL": (np.bool_, "BOOL"),
    "TYPE_STRING": (np.object_, "BYTES"),
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton config name, e.g. TYPE_FP32
    dims: tuple[int, ...]  # -1 = any size
    optional: bool = False  # a request may leave it out

    @property
    def dtype(self) -> type:
        return DATA_TYPES[self.data_type][0]

    @property
    def wire_type(self) -> str:
        return DATA_TYPES[self.data_type][1]

    def fits(self, array: np.ndarray) -> bool:
        if array.dtype != np.dtype(self.dtype) or array.ndim != len(self.dims):
            return False
        return all(want in (-1, got) for want, got in zip(self.dims, array.shape, strict=True))


@dataclass(frozen=True)
class EnsembleStep:
    model: str
    input_map: dict[str, str]  # the model's input name -> the ensemble tensor it reads
    output_map: dict[str, str]  # the model's output name -> the ensemble tensor it writes


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    steps: tuple[EnsembleStep, ...] = field(default=())
    instances: int = 1  # instance_group count: how many copies run at once (Triton's, and the in-process runner's)

    @property
    def is_ensemble(self) -> bool:
        return bool(self.steps)

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> None:
        """Refuse, as InvalidInput, tensors that do not fit the declared inputs (both backends call this)."""
        missing = {name for name, spec in self.inputs.items() if not spec.optional} - set(inputs)
        if missing:
            raise InvalidInput(f"{self.name} needs inputs {sorted(missing)}")
        unknown = set(inputs) - set(self.inputs)
        if unknown:
            raise InvalidInput(f"{self.name} has no inputs {sorted(unknown)}")
        for name, array in inputs.items():
            tensor_spec = self.inputs[name]
            if not tensor_spec.fits(array):
                raise InvalidInput(
                    f"{self.name} input {name!r} must be {tensor_spec.data_type} with dims {list(tensor_spec.dims)}, "
                    f"got {array.dtype} {list(array.shape)}"
                )


def _tensors(entries: object) -> dict[str, TensorSpec]:
    return {
        t.name: TensorSpec(t.name, model_config_pb2.DataType.Name(t.data_type), tuple(t.dims),
                           bool(getattr(t, "optional", False)))
        for t in entries  # type: ignore[attr-defined]
    }


def load_spec(config_path: Path) -> ModelSpec:
    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    steps = tuple(
        EnsembleStep(s.model_name, dict(s.input_map), dict(s.output_map)) for s in config.ensemble_scheduling.step
    )
    instances = sum(group.count or 1 for group in config.instance_group) or 1
    return ModelSpec(config.name, _tensors(config.input), _tensors(config.output), steps, instances)


def repository_path() -> Path:
    return Path(os.environ.get("JIWOOM_MODEL_REPO", DEFAULT_REPOSITORY))


def load_repository(path: Path | None = None) -> dict[str, ModelSpec]:
    root = path or repository_path()
    specs = {p.parent.name: load_spec(p) for p in sorted(root.glob("*/config.pbtxt"))}
    if not specs:
        raise FileNotFoundError(f"no Triton model configs under {root}")
    return specs
