"""The real Triton server (bundled in nvidia-pytriton, CPU) on our model_repo/ gives the in-process results."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench import transforms as tf
from jiwoom.api.errors import CorruptMedia, InvalidInput, MediaTooLarge, UnsupportedMedia
from jiwoom.triton_launcher import start_triton
from server.inference import Inference
from server.inference.features import ALL_FAMILIES, MediaFeatures
from server.inference.model_repo import DEFAULT_REPOSITORY
from server.inference.triton import TritonInference
from tests.conftest import ASTRONAUT
from tests.media_samples import png_bomb

pytestmark = pytest.mark.triton
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def triton(tmp_path_factory) -> Iterator[TritonInference]:
    log = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    with start_triton(DEFAULT_REPOSITORY, extra_pythonpath=[REPO_ROOT], log_path=log) as server:
        engine = TritonInference(server.grpc_url)
        yield engine
        engine.close()


def assert_same(a: MediaFeatures, b: MediaFeatures) -> None:
    assert a.frame_size == b.frame_size and a.duration_s == pytest.approx(b.duration_s)
    assert len(a.frames) == len(b.frames)
    for fa, fb in zip(a.frames, b.frames, strict=True):
        assert fa.timestamp == pytest.approx(fb.timestamp) and fa.scene_cut == fb.scene_cut
        assert fa.pdq_hash == fb.pdq_hash and fa.pdq_dihedral == fb.pdq_dihedral and fa.pdq_quality == fb.pdq_quality
        assert len(fa.regions) == len(fb.regions)
        for ra, rb in zip(fa.regions, fb.regions, strict=True):
            assert ra.box == pytest.approx(rb.box)
            np.testing.assert_allclose(ra.embedding, rb.embedding, atol=1e-4)
        assert len(fa.faces) == len(fb.faces)
        for face_a, face_b in zip(fa.faces, fb.faces, strict=True):
            assert face_a.box == pytest.approx(face_b.box)
            np.testing.assert_allclose(face_a.embedding, face_b.embedding, atol=1e-4)
            assert face_a.age_mean == pytest.approx(face_b.age_mean, abs=1e-3)
            assert face_a.age_p_under19 == pytest.approx(face_b.age_p_under19, abs=1e-4)
        assert fa.ocr_text == fb.ocr_text


def caption_image(corpus: Path) -> bytes:
    image = tf.load(corpus / "images" / "img_0010.jpg")
    return tf.encode(tf.text_overlay(image, "피해자 지원 센터 TAKEDOWN"), "PNG")


def test_media_ensemble_matches_in_process(triton: TritonInference, inference: Inference, corpus: Path):
    samples = [
        (corpus / "images" / ASTRONAUT).read_bytes(),
        caption_image(corpus),
        (corpus / "videos" / "vid_004.mp4").read_bytes(),
    ]
    for data in samples:
        remote = triton.media_features(data, ALL_FAMILIES)
        assert remote.frames
        assert_same(remote, inference.media_features(data, ALL_FAMILIES))
    astronaut = triton.media_features(samples[0], ALL_FAMILIES)
    assert astronaut.frames[0].faces and astronaut.frames[0].faces[0].age_mean is not None


def test_frame_ensemble_matches_in_process(triton: TritonInference, inference: Inference, corpus: Path):
    frames = np.stack([np.asarray(tf.load(corpus / "images" / name)) for name in ("img_0000.jpg", "img_0001.jpg")])
    families = frozenset({"pdq", "embedding", "faces"})
    assert_same(triton.frame_features(frames, families=families), inference.frame_features(frames, families=families))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", (CorruptMedia, UnsupportedMedia)),
        (bytes(range(256)) * 64, (UnsupportedMedia,)),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 200, (CorruptMedia,)),
    ],
    ids=["empty", "random", "truncated-jpeg"],
)
def test_bad_media_raises_the_same_typed_error_through_triton(triton: TritonInference, data: bytes, error):
    with pytest.raises(error):
        triton.media_features(data)


def test_limits_and_bad_tensors_come_back_typed(triton: TritonInference):
    with pytest.raises(MediaTooLarge):
        triton.media_features(png_bomb(50_000, 50_000))
    with pytest.raises(InvalidInput, match="frames"):
        triton.frame_features(np.zeros((1, 8, 8, 4), np.uint8))


@pytest.fixture(scope="module")
def triton_gpu_configs(tmp_path_factory) -> Iterator[TritonInference]:
    """Triton on the production GPU configs (`--model-config-name=gpu`), with only the device moved to the CPU:
    the same python-backend models, parameters and PyTorch runtime as on the GPU machine, KIND_GPU aside."""
    root = tmp_path_factory.mktemp("gpu_repo")
    repository = root / "model_repo"
    shutil.copytree(DEFAULT_REPOSITORY, repository, ignore=shutil.ignore_patterns("__pycache__"))
    variants = sorted(repository.glob("*/configs/gpu.pbtxt"))
    assert {p.parent.parent.name for p in variants} >= {"image_embed", "age_head"}
    for variant in variants:
        text = variant.read_text()
        assert "KIND_GPU" in text and '"cuda"' in text
        variant.write_text(text.replace("KIND_GPU", "KIND_CPU").replace('"cuda"', '"cpu"'))
    log = root / "tritonserver.log"
    with start_triton(repository, extra_pythonpath=[REPO_ROOT], log_path=log,
                      extra_args=["--model-config-name=gpu"]) as server:
        selected = re.findall(r"jiwoom: (\w+?)_\d+(?:_\d+)?: runtime (\w+), torch_device (\S+)", log.read_text())
        assert {(name, runtime, device) for name, runtime, device in selected if name in ("image_embed", "age_head")} \
            == {("image_embed", "torch", "cpu"), ("age_head", "torch", "cpu")}, log.read_text()[-3000:]
        engine = TritonInference(server.grpc_url)
        yield engine
        engine.close()


def test_gpu_configs_serve_the_torch_ports_with_onnxruntime_results(triton_gpu_configs: TritonInference,
                                                                     inference: Inference, corpus: Path):
    data = (corpus / "images" / ASTRONAUT).read_bytes()
    ported = triton_gpu_configs.media_features(data, ALL_FAMILIES).frames[0]
    reference = inference.media_features(data, ALL_FAMILIES).frames[0]
    assert ported.pdq_hash == reference.pdq_hash and ported.ocr_text == reference.ocr_text
    assert len(ported.regions) == len(reference.regions) > 1
    for a, b in zip(ported.regions, reference.regions, strict=True):
        assert a.box == pytest.approx(b.box)
        # The port emulates SSCD's int8 rounding: cosine with ONNX Runtime's >= 0.9988 over 134 corpus inputs.
        assert float(a.embedding @ b.embedding) > 0.995
    assert len(ported.faces) == len(reference.faces) >= 1
    for a, b in zip(ported.faces, reference.faces, strict=True):
        assert a.box == b.box and a.age_mean is not None
        assert a.age_mean == pytest.approx(b.age_mean, abs=0.01)
        assert a.gender_p_female == pytest.approx(b.gender_p_female, abs=1e-3)
