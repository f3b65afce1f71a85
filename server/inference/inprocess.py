"""The embedded default: model_repo/'s models and ensembles executed in this process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from server.config import Settings
from server.inference import Inference
from server.inference.model_repo import ModelSpec, load_repository
from server.models import Model, load_model

if TYPE_CHECKING:
    from collections.abc import Callable


class Instances:
    """Up to `count` copies of one model, each used by one call at a time (dlib and Tesseract are not
    thread-safe), made on first need: Triton's instance_group, in this process."""

    def __init__(self, make: Callable[[], Model], count: int) -> None:
        self._make = make
        self._free: list[Model] = []
        self._made = 0
        self._slots = threading.BoundedSemaphore(max(1, count))
        self._lock = threading.Lock()

    @contextmanager
    def one(self) -> Iterator[Model]:
        with self._slots:
            with self._lock:
                model = self._free.pop() if self._free else None
                if model is None:
                    self._made += 1  # counted first, so a failed load is retried by the next call
            if model is None:
                try:
                    model = self._make()
                except BaseException:
                    with self._lock:
                        self._made -= 1
                    raise
            try:
                yield model
            finally:
                with self._lock:
                    self._free.append(model)

    @property
    def made(self) -> int:
        return self._made


class InProcessInference(Inference):
    def __init__(self, settings: Settings, repository: Path | None = None, instances: int | None = None) -> None:
        """`instances`: every model's count instead of its config's (benchmarks compare the two)."""
        self.settings = settings
        self.specs = load_repository(repository)
        # Each model runs as its config's instance_group count says; with one intra-op thread each
        # (ModelSettings.threads), concurrent calls then use the cores instead of contending for them.
        self._instances = {name: Instances(lambda name=name: load_model(name, settings), instances or spec.instances)
                           for name, spec in self.specs.items()}

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        spec = self._spec(model)
        unknown = set(outputs) - set(spec.outputs)
        if unknown:
            raise ValueError(f"{model} has no outputs {sorted(unknown)}")
        spec.check_inputs(inputs)
        if spec.is_ensemble:
            return self._run_ensemble(spec, inputs, outputs)
        with self._instances[model].one() as instance:
            produced = instance(**inputs)
        for name, tensor_spec in spec.outputs.items():  # what Triton would refuse, we refuse too
            if not tensor_spec.fits(produced[name]):
                raise RuntimeError(f"{model} produced {name!r} as {produced[name].dtype} {list(produced[name].shape)}, "
                                   f"but its config declares {tensor_spec.data_type} {list(tensor_spec.dims)}")
        return {name: produced[name] for name in outputs}

    def _spec(self, model: str) -> ModelSpec:
        if model not in self.specs:
            raise ValueError(f"unknown model {model!r}; the repository has {sorted(self.specs)}")
        return self.specs[model]

    def _run_ensemble(
        self, spec: ModelSpec, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        # Walk back from the asked outputs to the steps that produce them, so unasked models never run.
        needed_tensors = set(outputs)
        needed_steps = []
        for step in reversed(spec.steps):
            if needed_tensors & set(step.output_map.values()):
                needed_steps.append(step)
                needed_tensors |= set(step.input_map.values())
        tensors = dict(inputs)
        for step in reversed(needed_steps):  # config order is a valid execution order
            step_inputs = {model_input: tensors[name] for model_input, name in step.input_map.items()}
            step_outputs = list(step.output_map)
            produced = self.infer(step.model, step_inputs, step_outputs)
            for model_output, name in step.output_map.items():
                tensors[name] = produced[model_output]
        return {name: tensors[name] for name in outputs}
