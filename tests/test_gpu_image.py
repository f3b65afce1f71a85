"""The production GPU image, checked without Docker or a GPU: model_repo_gpu/'s configs against the ONNX files,
the QDQ-to-float rewrite the SSCD engine is built from, scripts/build_trt_engines with stand-in trtexec and
nvidia-smi, the DALI pipeline script, and Dockerfile.gpu's references.
"""

from __future__ import annotations

import importlib.util
import json
import re
import stat
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from server.inference.model_repo import DEFAULT_REPOSITORY, load_repository

ROOT = Path(__file__).resolve().parents[1]
GPU_REPOSITORY = ROOT / "model_repo_gpu"
SCRIPT = ROOT / "scripts" / "build_trt_engines"
DOCKERFILE = ROOT / "Dockerfile.gpu"
ONNX_TO_TRITON = {
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
}


def load_source(name: str, path: Path) -> ModuleType:
    """A Python file without the .py suffix (or outside any package) as a module."""
    loader = SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


bte = load_source("build_trt_engines", SCRIPT)
SPECS = bte.engine_specs(288)


def config(model: str) -> model_config_pb2.ModelConfig:
    path = GPU_REPOSITORY / model / "config.pbtxt"
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def gpu_models() -> list[str]:
    return sorted(p.parent.name for p in GPU_REPOSITORY.glob("*/config.pbtxt"))


def onnx_io(path: Path) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return list(graph.input), list(graph.output)


def onnx_dims(value: onnx.ValueInfoProto) -> list[int]:
    """-1 for a symbolic dimension."""
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


# --- configs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", gpu_models())
def test_every_production_config_parses_and_names_its_folder(model: str):
    parsed = config(model)
    assert parsed.name == model
    assert parsed.platform == "tensorrt_plan" or parsed.backend == "dali"
    assert all(group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU for group in parsed.instance_group)


def test_production_models_stay_out_of_the_cpu_repository():
    # The CPU Triton of the tests and the in-process runner load every folder of model_repo/; these need a GPU.
    cpu_models = set(load_repository(DEFAULT_REPOSITORY))
    assert GPU_REPOSITORY.resolve() != DEFAULT_REPOSITORY.resolve()
    assert not set(gpu_models()) & cpu_models  # Triton also refuses a name twice across repositories
    assert not any((DEFAULT_REPOSITORY / m).exists() for m in gpu_models())


def test_every_tensorrt_model_has_an_engine_recipe_and_back():
    plans = {m for m in gpu_models() if config(m).platform == "tensorrt_plan"}
    assert plans == set(SPECS)


@pytest.mark.parametrize("model", sorted(SPECS))
def test_tensorrt_configs_match_the_onnx_files(model: str):
    spec, parsed = SPECS[model], config(model)
    inputs, outputs = onnx_io(spec.source())
    assert parsed.max_batch_size == spec.batch[2]  # the profile's max batch
    assert [t.name for t in parsed.input] == [i.name for i in inputs] == [spec.input_name]
    assert [t.name for t in parsed.output] == [o.name for o in outputs]
    for declared, actual in [*zip(parsed.input, inputs, strict=True), *zip(parsed.output, outputs, strict=True)]:
        assert model_config_pb2.DataType.Name(declared.data_type) == ONNX_TO_TRITON[actual.type.tensor_type.elem_type]
        # Triton's dims leave out the batch dimension; a fixed ONNX dimension must be declared as it is.
        onnx_item = onnx_dims(actual)[1:]
        assert len(declared.dims) == len(onnx_item), declared.name
        assert all(want in (-1, got) for want, got in zip(onnx_item, declared.dims, strict=True)), declared.name
    # The engine's optimization profile fits both.
    assert len(spec.item_shape) == len(parsed.input[0].dims)
    assert all(d in (-1, s) for d, s in zip(parsed.input[0].dims, spec.item_shape, strict=True))


def test_dali_config_matches_its_pipeline_script():
    # DALI is imported only inside build_pipeline(): loading the file needs none.
    module = load_source("decode_dali_pipeline", GPU_REPOSITORY / "decode_dali" / "pipeline.py")
    parsed = config("decode_dali")
    assert parsed.backend == "dali"
    assert [t.name for t in parsed.input] == [module.INPUT]
    assert [t.name for t in parsed.output] == [module.OUTPUT]
    assert parsed.max_batch_size == module.MAX_BATCH_SIZE
    assert parsed.input[0].data_type == parsed.output[0].data_type == model_config_pb2.TYPE_UINT8
    assert list(parsed.output[0].dims) == [-1, -1, 3]
    assert module.main([]) == 2  # usage, without DALI


# --- the SSCD rewrite -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sscd_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    source = SPECS["sscd_trt"].source()
    rewritten = tmp_path_factory.mktemp("sscd") / "sscd_float.onnx"
    onnx.save(bte.dequantize_qdq(onnx.load(str(source))), str(rewritten))
    return source, rewritten


def test_rewritten_sscd_has_no_quantization_nodes_and_the_same_interface(sscd_pair):
    source, rewritten = sscd_pair
    graph = onnx.load(str(rewritten)).graph
    assert not {n.op_type for n in graph.node} & {"QuantizeLinear", "DequantizeLinear"}
    assert [(i.name, i.type.tensor_type.elem_type) for i in graph.input] == [
        (i.name, i.type.tensor_type.elem_type) for i in onnx_io(source)[0]]
    assert [o.name for o in graph.output] == [o.name for o in onnx_io(source)[1]]


def test_rewritten_sscd_gives_the_int8_embeddings(sscd_pair):
    """What TensorRT builds must embed like the int8 model the index was built with (ONNX Runtime, CPU)."""
    source, rewritten = sscd_pair
    crops = []
    for image in (skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()):
        height, width = image.shape[:2]
        for crop in (image, image[height // 4 :, : width // 2]):  # whole and a region, as image_embed embeds
            crops.append(cv2.resize(crop, (288, 288), interpolation=cv2.INTER_AREA))
    batch = np.stack(crops)
    int8 = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"image": batch})[0]
    floats = ort.InferenceSession(str(rewritten), providers=["CPUExecutionProvider"]).run(None, {"image": batch})[0]
    assert floats.shape == int8.shape == (len(crops), 512)
    same = (int8 * floats).sum(axis=1)
    assert same.min() > 0.995, same  # measured 0.9985 at worst; without the rounding it was 0.85
    others = int8 @ floats.T
    assert (others[~np.eye(len(crops), dtype=bool)] < same.min()).all()


def test_rewrite_refuses_quantization_it_cannot_express():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])
    y = onnx.helper.make_tensor_value_info("q", onnx.TensorProto.UINT8, [4])
    scale = onnx.numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    zero = onnx.numpy_helper.from_array(np.array(0, np.uint8), "zero")
    quantize = onnx.helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"])
    model = onnx.helper.make_model(onnx.helper.make_graph([quantize], "g", [x], [y], [scale, zero]))
    with pytest.raises(ValueError, match="feeds something other than a DequantizeLinear"):
        bte.dequantize_qdq(model)


# --- scripts/build_trt_engines --------------------------------------------------------------------------------

FAKE_TRTEXEC = """#!/bin/bash
# Stands in for trtexec: prints its banner, logs its arguments, writes --saveEngine.
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v101100] # trtexec $*"
printf '%s\\n' "$*" >> "$FAKE_LOG"
for arg in "$@"; do
  case "$arg" in
    --saveEngine=*) [ -n "${FAKE_FAIL:-}" ] || printf 'engine' > "${arg#--saveEngine=}" ;;
  esac
done
[ -z "${FAKE_FAIL:-}" ] || { echo "[E] Error[4]: unsupported operator"; exit 1; }
"""
FAKE_NVIDIA_SMI_OK = """#!/bin/bash
echo "NVIDIA H100 80GB HBM3, 9.0"
"""
FAKE_NVIDIA_SMI_NO_DRIVER = """#!/bin/bash
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
exit 9
"""


def write_tool(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env=env, check=False)


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, Path]:
    """A copy of model_repo_gpu/'s configs, a work folder, and a PATH folder holding nothing yet."""
    repository = tmp_path / "repo"
    for model in gpu_models():
        (repository / model).mkdir(parents=True)
        (repository / model / "config.pbtxt").write_text((GPU_REPOSITORY / model / "config.pbtxt").read_text())
    return {"repo": repository, "work": tmp_path / "work", "bin": tmp_path / "bin", "log": tmp_path / "calls"}


def script_env(sandbox: dict[str, Path], **extra: str) -> dict[str, str]:
    # Only the sandbox's tools are found: no system trtexec or nvidia-smi can leak in.
    return {"PATH": str(sandbox["bin"]), "HOME": str(sandbox["work"]), "FAKE_LOG": str(sandbox["log"]), **extra}


def test_script_help_and_dry_run_need_no_tensorrt(sandbox):
    env = script_env(sandbox)
    assert run_script("--help", env=env).returncode == 0
    dry = run_script("--dry-run", "--repository", str(sandbox["repo"]), env=env)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert len(lines) == len(SPECS)
    sscd = next(line for line in lines if "sscd_trt" in line)
    assert "--minShapes=image:1x288x288x3" in sscd and "--maxShapes=image:64x288x288x3" in sscd
    assert "--fp16" not in sscd  # GeM's Pow(x, 3) overflows FP16
    assert "--noTF32" in sscd  # TF32 on scaled floats breaks the int8 rounding
    assert all("--fp16" in line for line in lines if "age_trt" in line or "gender_trt" in line)
    assert not list(sandbox["repo"].glob("*/1/model.plan"))


def test_script_fails_clearly_without_trtexec(sandbox):
    result = run_script("--repository", str(sandbox["repo"]), env=script_env(sandbox))
    assert result.returncode == 2
    assert "trtexec not found" in result.stderr


@pytest.mark.parametrize("nvidia_smi", [None, FAKE_NVIDIA_SMI_NO_DRIVER], ids=["no-nvidia-smi", "no-driver"])
def test_script_fails_clearly_without_a_gpu(sandbox, nvidia_smi):
    write_tool(sandbox["bin"], "trtexec", FAKE_TRTEXEC)
    if nvidia_smi:
        write_tool(sandbox["bin"], "nvidia-smi", nvidia_smi)
    result = run_script("--repository", str(sandbox["repo"]), env=script_env(sandbox))
    assert result.returncode == 3
    assert "no NVIDIA GPU" in result.stderr


def test_script_builds_each_engine_once(sandbox):
    write_tool(sandbox["bin"], "trtexec", FAKE_TRTEXEC)
    write_tool(sandbox["bin"], "nvidia-smi", FAKE_NVIDIA_SMI_OK)
    args = ("--repository", str(sandbox["repo"]), "--work-dir", str(sandbox["work"]))
    first = run_script(*args, env=script_env(sandbox))
    assert first.returncode == 0, first.stderr
    calls = sandbox["log"].read_text().splitlines()
    builds = [c for c in calls if "--saveEngine" in c]
    assert len(builds) == len(SPECS)
    for model, spec in SPECS.items():
        version = sandbox["repo"] / model / "1"
        assert (version / "model.plan").read_text() == "engine"
        assert not (version / "model.plan.partial").exists()
        stamp = json.loads((version / "model.plan.json").read_text())
        assert stamp["gpu"] == "NVIDIA H100 80GB HBM3, 9.0" and stamp["tensorrt"] == "10.11.0"
        assert stamp["onnx_sha256"] == bte.sha256(spec.source())
    sscd_build = next(c for c in builds if "sscd_trt" in c)
    assert re.search(r"--onnx=\S+-float-v\d+\.onnx", sscd_build)  # the rewritten graph, not the QDQ file

    again = run_script(*args, env=script_env(sandbox))
    assert again.returncode == 0, again.stderr
    assert len([c for c in sandbox["log"].read_text().splitlines() if "--saveEngine" in c]) == len(SPECS)
    assert again.stdout.count("up to date") == len(SPECS)

    # Another GPU model: the engines no longer fit and are built again.
    write_tool(sandbox["bin"], "nvidia-smi", FAKE_NVIDIA_SMI_OK.replace("H100 80GB HBM3, 9.0", "L4, 8.9"))
    moved = run_script(*args, "--models", "age_trt", env=script_env(sandbox))
    assert moved.returncode == 0 and "age_trt: built" in moved.stdout


def test_script_reports_a_failed_build_and_leaves_no_engine(sandbox):
    write_tool(sandbox["bin"], "trtexec", FAKE_TRTEXEC)
    write_tool(sandbox["bin"], "nvidia-smi", FAKE_NVIDIA_SMI_OK)
    result = run_script("--repository", str(sandbox["repo"]), "--work-dir", str(sandbox["work"]),
                        "--models", "gender_trt", env=script_env(sandbox, FAKE_FAIL="1"))
    assert result.returncode == 1
    assert "trtexec failed for gender_trt" in result.stderr and "unsupported operator" in result.stderr
    assert not list((sandbox["repo"] / "gender_trt").rglob("model.plan*"))


def test_script_refuses_a_folder_that_is_not_model_repo_gpu(tmp_path, sandbox):
    result = run_script("--repository", str(tmp_path), "--dry-run", env=script_env(sandbox))
    assert result.returncode == 2 and "config.pbtxt does not exist" in result.stderr


# --- Dockerfile.gpu -------------------------------------------------------------------------------------------


def dockerfile_lines() -> list[str]:
    """Instructions with their continuation lines joined, heredoc bodies and comments left out."""
    lines, current, heredoc_end = [], "", None
    for raw in DOCKERFILE.read_text().splitlines():
        if heredoc_end is not None:
            heredoc_end = None if raw.strip() == heredoc_end else heredoc_end
            continue
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.endswith("\\"):
            lines.append(current.strip())
            marker = re.search(r"<<-?'?(\w+)'?", current)
            heredoc_end = marker.group(1) if marker else None
            current = ""
    return lines


def dockerfile_heredoc(name: str) -> str:
    text = DOCKERFILE.read_text()
    match = re.search(rf"<<'EOF' {re.escape(name)}\n(.*?)\nEOF\n", text, re.S)
    assert match, name
    return match.group(1)


def test_dockerfile_copies_only_files_that_exist():
    sources = []
    for line in dockerfile_lines():
        words = line.split()
        if words[0] == "COPY" and not any(w.startswith(("--from", "<<")) for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    assert sources, "no COPY found"
    for source in sources:
        assert (ROOT / source).exists(), source
        if source.endswith("/"):  # a folder: it must be tracked, not a local leftover
            assert list((ROOT / source).iterdir()), source


def test_dockerfile_runs_only_scripts_that_exist():
    text = "\n".join(dockerfile_lines()) + dockerfile_heredoc("/usr/local/bin/jiwoom-triton")
    paths = set(re.findall(r"(?:scripts|model_repo_gpu|model_repo)/[\w./-]+\.?\w*", text))
    for path in paths - {"model_repo_gpu/decode_dali/1/model.dali"}:  # that one the build writes
        assert (ROOT / path).exists(), path


def test_dockerfile_gpu_swaps_pins_that_the_lock_has():
    lock = {line.split("==")[0] for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line}
    swapped = re.findall(r"-e 's/\^([\w-]+)==/", DOCKERFILE.read_text()) + re.findall(
        r"-e '/\^([\w-]+)==/d'", DOCKERFILE.read_text())
    assert sorted(swapped) == ["faiss-cpu", "onnxruntime", "torch"]
    assert set(swapped) <= lock


def test_dockerfile_uses_one_ngc_release_for_triton_and_trtexec():
    froms = [line.split()[1] for line in dockerfile_lines() if line.startswith("FROM ")]
    assert froms == ["nvcr.io/nvidia/tensorrt:${TRITON_TAG}-py3", "nvcr.io/nvidia/tritonserver:${TRITON_TAG}-py3"]
    tag = re.search(r"^ARG TRITON_TAG=(\d\d\.\d\d)$", DOCKERFILE.read_text(), re.M)
    assert tag, "TRITON_TAG must default to a release (yy.mm)"


def test_container_entrypoint_is_valid_bash(tmp_path):
    script = tmp_path / "jiwoom-triton"
    script.write_text(dockerfile_heredoc("/usr/local/bin/jiwoom-triton") + "\n")
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "--model-config-name=gpu" in script.read_text()
