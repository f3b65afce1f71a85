"""The embedded default: model_repo/'s models and ensembles executed in this process."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from server.config import Settings
from server.inference import Inference
from server.inference.model_repo import ModelSpec, load_repository
from server.models import Model, load_model


class InProcessInference(Inference):
    def __init__(self, settings: Settings, repository: Path | None = None) -> None:
        self.settings = settings
        self.specs = load_repository(repository)
        self._models: dict[str, Model] = {}
        # One lock per model, as Triton runs one instance per model (dlib and Tesseract are not thread-safe).
        self._locks = {name: threading.Lock() for name in self.specs}
        self._loading = threading.Lock()

    def model(self, name: str) -> Model:
        with self._loading:
            if name not in self._models:
                self._models[name] = load_model(name, self.settings)
            return self._models[name]

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        spec = self._spec(model)
        unknown = set(outputs) - set(spec.outputs)
        if unknown:
            raise ValueError(f"{model} has no outputs {sorted(unknown)}")
        spec.check_inputs(inputs)
        if spec.is_ensemble:
            return self._run_ensemble(spec, inputs, outputs)
        with self._locks[model]:
            produced = self.model(model)(**inputs)
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
