"""The `jiwoom` command."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from server.config import load_settings
from server.errors import MediaError
from server.features import ALL_FAMILIES, MediaFeatures
from server.inference import make_inference
from server.model_repo import DEFAULT_REPOSITORY


def summarise(features: MediaFeatures) -> dict[str, Any]:
    """A JSON-safe summary of one media file's features: hashes, ages and text, no embeddings."""
    return {
        "frame_size": features.frame_size,
        "duration_s": round(features.duration_s, 3),
        "frames": [
            {
                "t": round(f.timestamp, 3),
                "scene_cut": f.scene_cut,
                "pdq": f.pdq_hash.hex() if f.pdq_hash else None,
                "pdq_quality": f.pdq_quality,
                "regions": len(f.regions),
                "faces": [
                    {
                        "box": [round(v) for v in face.box],
                        "age": None if face.age_mean is None else round(face.age_mean, 1),
                        "age_std": None if face.age_std is None else round(face.age_std, 1),
                        "p_under19": None if face.age_p_under19 is None else round(face.age_p_under19, 3),
                    }
                    for face in f.faces
                ],
                "ocr": f.ocr_text,
            }
            for f in features.frames
        ],
    }


def features_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.triton_url:
        settings = replace(settings, inference="triton", triton_url=args.triton_url)
    families = frozenset(args.families.split(",")) if args.families else ALL_FAMILIES
    failures = 0
    with make_inference(settings) as inference:
        for path in args.paths:
            started = time.perf_counter()
            try:
                result: dict[str, Any] = summarise(inference.media_features(Path(path).read_bytes(), families))
            except MediaError as error:
                result, failures = {"error": error.kind, "message": str(error)}, failures + 1
            except OSError as error:
                result, failures = {"error": "OSError", "message": str(error)}, failures + 1
            result = {"file": str(path), "ms": round((time.perf_counter() - started) * 1000, 1), **result}
            print(json.dumps(result, ensure_ascii=False), flush=True)
    return 1 if failures else 0


def triton_command(args: argparse.Namespace) -> int:
    from server.triton_launcher import main as triton_main

    return triton_main(["--model-repository", str(args.model_repository)]) or 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jiwoom", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    features = commands.add_parser("features", help="compute the features of image or video files (JSON lines)")
    features.add_argument("paths", nargs="+")
    features.add_argument("--families", help=f"comma-separated subset of {','.join(sorted(ALL_FAMILIES))}")
    features.add_argument("--triton-url", help="use a Triton server (host:grpc_port) instead of in-process models")
    features.set_defaults(run=features_command)
    triton = commands.add_parser("triton", help="run the bundled Triton server (CPU) on model_repo/")
    triton.add_argument("--model-repository", type=Path, default=DEFAULT_REPOSITORY)
    triton.set_defaults(run=triton_command)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
