"""Per-model latency and end-to-end images/s of the feature ensemble on this machine.

    .venv/bin/python -m bench.models [--images 40] [--triton] [--workers 2] [--parallelism-only]

Prints a Markdown table to paste into bench/RESULTS.md. With --triton it also starts the bundled Triton
server on model_repo/ and measures the same requests over gRPC.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.record import machine
from bench.transforms import CORPUS, encode, load
from server.config import MatchSettings, ModelSettings, Settings
from server.inference import Inference
from server.inference.inprocess import InProcessInference
from server.matching.cascade import Cascade
from server.service import match_families
from server.signals import configured_signals


def timed(run: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return times


def per_model(inference: InProcessInference, frames: list[np.ndarray],
              face_frames: list[np.ndarray]) -> list[tuple[str, float, float]]:
    """(model, median ms per image, p90 ms per image), each model called alone on one frame at a time.
    The face models run on `face_frames` (images with faces) and are reported per face."""
    rows = []
    for name in ("pdq", "image_embed", "image_embed_fast", "face_detect", "face_embed", "face_embed_sface", "age_head",
                 "ocr"):
        spec = inference.specs[name]
        times = []
        for frame in face_frames if "face_frame" in spec.inputs else frames:
            batch = frame[None]
            inputs = {"frames": batch}
            if "face_frame" in spec.inputs:  # face models run on the detector's faces
                detected = inference.infer("face_detect", inputs,
                                           ["face_boxes", "face_landmarks", "face_keypoints", "face_frame"])
                detected = {k: v for k, v in detected.items() if k in spec.inputs}
                inputs |= detected
                if not len(detected["face_frame"]):
                    continue
            outputs = list(spec.outputs)
            inference.infer(name, inputs, outputs)  # warm: first call loads the model
            elapsed = timed(lambda name=name, inputs=inputs, outputs=outputs: inference.infer(name, inputs, outputs), 1)
            times.append(elapsed[0] / max(1, len(inputs.get("face_frame", [None]))))
        label = f"{name} (per face)" if "face_frame" in spec.inputs else name
        rows.append((label, statistics.median(times), float(np.percentile(times, 90))))
    return rows


def end_to_end(inference: Inference, blobs: list[bytes], families: frozenset[str]) -> tuple[float, float]:
    """(images per second, median ms) through media_features: decode + sample + the asked models."""
    inference.media_features(blobs[0], families)
    started = time.perf_counter()
    times = [timed(lambda blob=blob: inference.media_features(blob, families), 1)[0] for blob in blobs]
    return len(blobs) / (time.perf_counter() - started), statistics.median(times)


def concurrent_rate(inference: Inference, blobs: list[bytes], families: frozenset[str], workers: int) -> float:
    """Images per second with `workers` callers at once, as the service's concurrent calls run them."""
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda blob: inference.media_features(blob, families), blobs[:workers]))  # warm instances
        started = time.perf_counter()
        list(pool.map(lambda blob: inference.media_features(blob, families), blobs))
    return len(blobs) / (time.perf_counter() - started)


def parallelism(blobs: list[bytes], workers: int) -> None:
    """Before and after the fast path, in one run: images/s with `workers` concurrent callers, and the ratio to
    PDQ-only images/s measured with the same configuration."""
    before = Settings(models=ModelSettings(threads=0, face_detector="hog"),
                      match=MatchSettings(signals="pdq,embedding,face", screen_signal="", face_min_score=0.3,
                                          face_min_width=0))
    after = Settings()
    cascade = Cascade.of(after.match, configured_signals(after.match))
    assert cascade is not None
    full = match_families(configured_signals(before.match).values()) - {"local"}
    stage_one = cascade.stage_one(match_families(configured_signals(after.match).values()))
    rows = [
        ("before: HOG + dlib faces, full SSCD, one instance per model, threads = cores",
         InProcessInference(before, instances=1), full),
        ("after, an item the screen rules out: PDQ, distilled SSCD, YuNet + SFace, age", InProcessInference(after),
         stage_one),
        ("after, a candidate: the above, then the full SSCD and keypoints", None,
         stage_one | cascade.stage_two()),
    ]
    print(f"\n| {workers} concurrent callers | families | images/s | PDQ only images/s | ratio |")
    print("|---|---|---|---|---|")
    engine: Inference | None = None
    for label, made, families in rows:
        engine = made or engine
        assert engine is not None
        pdq_rate = concurrent_rate(engine, blobs, frozenset({"pdq"}), workers)
        rate = concurrent_rate(engine, blobs, families, workers)
        print(f"| {label} | {', '.join(sorted(families))} | {rate:.1f} | {pdq_rate:.1f} | {rate / pdq_rate:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--triton", action="store_true")
    parser.add_argument("--workers", type=int, default=2, help="concurrent callers in the parallelism table")
    parser.add_argument("--parallelism-only", action="store_true", help="only the before/after parallelism table")
    args = parser.parse_args()
    paths = sorted((CORPUS / "images").glob("*.jpg"))[:: max(1, 266 // args.images)][: args.images]
    images = [load(p) for p in paths]
    frames = [np.asarray(i) for i in images]
    blobs = [encode(i, "JPEG", 90) for i in images]
    video = (CORPUS / "videos" / "vid_001.mp4").read_bytes()
    print(f"machine: {machine()}; {len(images)} corpus images, median size "
          f"{int(statistics.median(i.width for i in images))}x{int(statistics.median(i.height for i in images))}\n")
    parallelism(blobs, args.workers)
    if args.parallelism_only:
        return
    inference = InProcessInference(Settings())
    face_frames = [np.asarray(load(CORPUS / "images" / name)) for name in ("img_0243.jpg", "img_0265.jpg")]
    print("| model (in-process) | median ms/image | p90 ms/image |\n|---|---|---|")
    for name, median, p90 in per_model(inference, frames, face_frames):
        print(f"| {name} | {median:.1f} | {p90:.1f} |")
    suites = {
        "pdq + embedding + faces (the Match set)": frozenset({"pdq", "embedding", "faces"}),
        "pdq only": frozenset({"pdq"}),
        "everything (+ age, OCR)": frozenset({"pdq", "embedding", "faces", "age", "ocr"}),
    }
    backends: list[tuple[str, Inference]] = [
        ("in-process", inference),
        # The grid of half-size windows is most of the embedding cost; without it only the whole frame and the
        # content blocks are embedded (faster, but a copy pasted on a busy background is missed).
        ("in-process, region_grid=0", InProcessInference(Settings(models=ModelSettings(region_grid=0)))),
    ]
    launcher = None
    if args.triton:
        from jiwoom.triton_launcher import start_triton
        from server.inference.triton import TritonInference

        repo_root = Path(__file__).resolve().parent.parent
        launcher = start_triton(repo_root / "model_repo", extra_pythonpath=[repo_root])
        server = launcher.__enter__()
        backends.append(("Triton (CPU, python backend, gRPC)", TritonInference(server.grpc_url)))
    print("\n| backend | features | images/s | median ms/image |\n|---|---|---|---|")
    for backend, engine in backends:
        for label, families in suites.items():
            rate, median = end_to_end(engine, blobs, families)
            print(f"| {backend} | {label} | {rate:.1f} | {median:.0f} |")
        started = time.perf_counter()
        media = engine.media_features(video, frozenset({"pdq", "embedding", "faces"}))
        seconds = time.perf_counter() - started
        print(f"| {backend} | video vid_001 (79.5 s, 640x480), Match set | {len(media.frames) / seconds:.1f} frames/s "
              f"| {seconds * 1000:.0f} ms total |")
    if launcher is not None:
        launcher.__exit__(None, None, None)


if __name__ == "__main__":
    main()
