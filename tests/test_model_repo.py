"""model_repo/ is what both Triton and the in-process runner execute: check that it holds together."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.model_repo import DEFAULT_REPOSITORY, load_repository, load_spec
from server.models import MODEL_CLASSES

SPECS = load_repository(DEFAULT_REPOSITORY)


def test_every_role_has_a_config_and_a_python_entry():
    assert set(MODEL_CLASSES) <= set(SPECS)
    for role in MODEL_CLASSES:
        entry = DEFAULT_REPOSITORY / role / "1" / "model.py"
        assert "TritonPythonModel" in entry.read_text()


@pytest.mark.parametrize("ensemble", ["frame_features", "media_features"])
def test_ensemble_steps_wire_declared_tensors(ensemble):
    spec = SPECS[ensemble]
    available = set(spec.inputs)
    for step in spec.steps:
        model = SPECS[step.model]
        assert set(step.input_map) == set(model.inputs), step.model
        assert set(step.output_map) <= set(model.outputs), step.model
        assert set(step.input_map.values()) <= available, f"{step.model} reads a tensor not produced before it"
        for model_output, tensor in step.output_map.items():
            if tensor in spec.outputs:  # the ensemble re-declares it: types must agree
                assert spec.outputs[tensor].data_type == model.outputs[model_output].data_type
        available |= set(step.output_map.values())
    assert set(spec.outputs) <= available


VARIANTS = sorted(DEFAULT_REPOSITORY.glob("*/configs/*.pbtxt"))


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda p: p.parent.parent.name)
def test_production_variants_keep_the_tensor_contract(variant: Path):
    production = load_spec(variant)
    default = SPECS[variant.parent.parent.name]
    assert production.name == default.name
    assert production.inputs == default.inputs and production.outputs == default.outputs


@pytest.mark.parametrize(("kind", "device_id", "expected"), [("GPU", "1", "cuda:1"), ("CPU", "0", "cuda")])
def test_triton_gpu_instances_run_on_the_device_triton_gives_them(monkeypatch, kind, device_id, expected):
    """Triton places each KIND_GPU instance on one GPU; a torch model must follow it rather than use cuda:0."""
    import json

    from server import triton_python

    loaded = {}
    monkeypatch.setattr(triton_python, "load_model", lambda name, settings: loaded.setdefault(name, settings))
    config = {"name": "age_head", "input": [], "output": [],
              "parameters": {"runtime": {"string_value": "torch"}, "torch_device": {"string_value": "cuda"}}}
    triton_python.TritonPythonModel().initialize({"model_config": json.dumps(config), "model_instance_kind": kind,
                                                  "model_instance_device_id": device_id})
    assert loaded["age_head"].models.runtime == "torch"
    assert loaded["age_head"].models.torch_device == expected
