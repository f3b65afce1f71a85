"""The `jiwoom` command: the composition root, the one place that wires the service, the action worker, the
console and the crawler together (they never import each other; see the import contracts in pyproject.toml)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from psycopg_pool import ConnectionPool

from clients.cli import add_commands
from ingest.cli import add_commands as add_crawl_commands
from jiwoom.api.errors import MediaError
from server.config import Settings, load_settings
from server.inference import make_inference
from server.inference.features import ALL_FAMILIES, MediaFeatures


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
                "keypoints": None if f.local is None else len(f.local),
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
    from jiwoom.triton_launcher import main as triton_main
    from server.inference.model_repo import DEFAULT_REPOSITORY  # tritonclient: not on every machine (the GPU test host)

    return triton_main(["--model-repository", str(args.model_repository or DEFAULT_REPOSITORY)]) or 0


def _service_settings(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    overrides = {k: v for k, v in (("listen", args.listen), ("data_dir", args.data_dir),
                                   ("tls_cert", args.tls_cert), ("tls_key", args.tls_key)) if v}
    if bool(overrides.get("tls_cert", settings.service.tls_cert)) != bool(
            overrides.get("tls_key", settings.service.tls_key)):
        raise SystemExit("TLS needs both --tls-cert and --tls-key")
    return replace(settings, service=replace(settings.service, **overrides))


def serve_command(args: argparse.Namespace) -> int:
    from clients.metrics import WorkerQueues
    from clients.worker import worker_beside_service
    from server.app import running_service

    settings = _service_settings(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        running = stack.enter_context(running_service(settings, args.database_url))
        if running.metrics is not None:  # the worker's queues are in the database: shown with or without it here
            running.metrics.register(WorkerQueues(running.store.pool, settings.notices.max_attempts))
        if not args.no_worker:  # entered after the service, so it stops before the service does
            stack.enter_context(worker_beside_service(settings, running.database_url, running.service))
        if running.store.token_count() == 0:  # a fresh install: one admin token, shown once
            token = running.store.create_token("first-admin", "admin", actor="serve")
            print(f"no API tokens yet; created an admin token (shown once, keep it safe): {token}", flush=True)
        host = settings.service.listen.rsplit(":", 1)[0]
        scheme = "TLS" if settings.service.tls_cert else "plaintext"
        print(f"jiwoom serving jiwoom.v1.Matcher on {host}:{running.port} ({scheme}); Ctrl-C stops", flush=True)
        if running.metrics is not None:
            metrics_host = settings.service.metrics_listen.rsplit(":", 1)[0]
            print(f"metrics on http://{metrics_host}:{running.metrics_port}/metrics (/live, /ready)", flush=True)
        stop.wait()
        print("stopping", flush=True)
    return 0


def token_command(args: argparse.Namespace) -> int:
    from server.app import database
    from server.storage.db import open_pool
    from server.storage.store import Store

    settings = _service_settings(args)
    with database(settings, args.database_url) as url, open_pool(url, max_size=1) as pool:
        print(Store(pool).create_token(args.name, args.role, actor="cli"))
    return 0


def index_command(args: argparse.Namespace) -> int:
    from server.app import database
    from server.service.collections import rebuild
    from server.storage.db import open_pool
    from server.storage.store import Store

    settings = _service_settings(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with database(settings, args.database_url) as url, open_pool(url, max_size=2) as pool:
        result = rebuild(settings, Store(pool, settings.models))
    print(json.dumps({"backend": settings.index.backend, **result}), flush=True)
    return 0


@contextlib.contextmanager
def crawl_database(database_url: str | None, data_dir: str | None) -> Iterator[ConnectionPool]:
    """The crawler's frontier lives in the service's database (given, or the embedded one in the data dir)."""
    from server.app import database
    from server.storage.db import open_pool

    settings = load_settings()
    if data_dir:
        settings = replace(settings, service=replace(settings.service, data_dir=data_dir))
    with database(settings, database_url) as url, open_pool(url, max_size=4) as pool:
        yield pool


def token_holder(pool: ConnectionPool, token: str) -> tuple[str, str] | None:
    from server.storage.store import Store

    who = Store(pool).principal(token)
    return None if who is None else (who.name, who.role)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jiwoom", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    features = commands.add_parser("features", help="compute the features of image or video files (JSON lines)")
    features.add_argument("paths", nargs="+")
    features.add_argument("--families", help=f"comma-separated subset of {','.join(sorted(ALL_FAMILIES))}")
    features.add_argument("--triton-url", help="use a Triton server (host:grpc_port) instead of in-process models")
    features.set_defaults(run=features_command)
    triton = commands.add_parser("triton", help="run the bundled Triton server (CPU) on model_repo/")
    triton.add_argument("--model-repository", type=Path, help="default: this checkout's model_repo/")
    triton.set_defaults(run=triton_command)
    for name, run, help_text in (("serve", serve_command, "run the gRPC matching service"),
                                 ("token", token_command, "create an API token (printed once)")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--database-url", help="PostgreSQL conninfo (default $DATABASE_URL, else embedded)")
        command.add_argument("--data-dir", help="embedded PostgreSQL and index snapshots (JIWOOM_SERVICE_DATA_DIR)")
        command.add_argument("--listen", help="host:port (JIWOOM_SERVICE_LISTEN, default 127.0.0.1:50051)")
        command.add_argument("--tls-cert", help="PEM certificate: with --tls-key, serve TLS")
        command.add_argument("--tls-key", help="PEM private key")
        command.set_defaults(run=run)
        if name == "serve":
            command.add_argument("--no-worker", action="store_true",
                                 help="do not run the evidence/notice/removal worker beside the service")
        if name == "token":
            command.add_argument("--role", required=True, choices=("crawler", "case_system", "officer", "admin"))
            command.add_argument("--name", required=True, help="who or what holds the token (for the audit log)")
    index = commands.add_parser("index", help="rebuild the indexes from PostgreSQL (Milvus: this install's "
                                "collections; in-process backends: the snapshots are dropped)")
    index.add_argument("action", choices=("rebuild",))
    index.add_argument("--database-url", help="PostgreSQL conninfo (default $DATABASE_URL, else embedded)")
    index.add_argument("--data-dir", help="embedded PostgreSQL and index snapshots (JIWOOM_SERVICE_DATA_DIR)")
    index.set_defaults(run=index_command, listen=None, tls_cert=None, tls_key=None)
    add_commands(commands)
    add_crawl_commands(commands, crawl_database, token_holder)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
