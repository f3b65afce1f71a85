"""model_repo/ is what both Triton and the in-process runner execute: check that it holds together."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.inference.model_repo import DEFAULT_REPOSITORY, load_repository, load_spec
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
        required = {name for name, tensor in model.inputs.items() if not tensor.optional}
        assert required <= set(step.input_map) <= set(model.inputs), step.model  # optional ones may be left out
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


def test_triton_gpu_instances_run_on_the_device_triton_gives_them():
    """Triton places each KIND_GPU instance on one GPU; a torch model must follow it rather than use cuda:0."""
    import json

    import torch

    from server.inference.triton_python import TritonPythonModel

    config = {"name": "age_head", "input": [], "output": [],
              "parameters": {"runtime": {"string_value": "torch"}, "torch_device": {"string_value": "cuda"}}}
    args = {"model_config": json.dumps(config), "model_instance_kind": "GPU", "model_instance_device_id": "7"}
    if torch.cuda.device_count() > 7:
        pytest.skip("this host has a cuda:7")
    with pytest.raises(ValueError, match="'cuda:7' asked for"):  # the real loader, asked for the instance's GPU
        TritonPythonModel().initialize(args)
    config["parameters"]["torch_device"] = {"string_value": "cpu"}  # CPU instances keep their setting
    model = TritonPythonModel()
    model.initialize({**args, "model_config": json.dumps(config), "model_instance_kind": "CPU"})
    assert model.model.age.device.type == "cpu"


def test_instances_run_side_by_side_up_to_the_config_count_and_no_further():
    """The in-process runner honours instance_group counts: `count` calls at once, each on its own copy."""
    import threading
    import time

    from server.inference.inprocess import Instances

    assert SPECS["image_embed"].instances == 2 and SPECS["ocr"].instances == 1
    made: list[object] = []
    instances = Instances(lambda: made.append(object()) or made[-1], count=2)  # type: ignore[func-returns-value]
    lock, inside, most, held = threading.Lock(), [0], [0], []

    def call() -> None:
        with instances.one() as model:
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                held.append(model)
            time.sleep(0.3)
            with lock:
                inside[0] -= 1

    workers = [threading.Thread(target=call) for _ in range(5)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)
    assert most[0] == 2, "calls beyond the instance count ran at once (or none ran side by side)"
    assert len(made) == 2 and len(held) == 5 and len({id(m) for m in held}) == 2  # two copies, reused
