"""The locust load against one `jiwoom serve` replica, then against two behind gRPC's round_robin, over one
PostgreSQL and one Milvus (the shared index): throughput, p50/p99 and errors side by side.

    .venv/bin/python -m bench.replicas_load [--minutes 3] [--users 6] [--references 30] [--out-dir DIR]

Starts a throwaway PostgreSQL cluster (system binaries) and an Embedded Milvus (the `milvus` package), and for
each arm a fresh database, fresh collections and real `jiwoom serve` processes (`JIWOOM_INDEX_BACKEND=milvus`,
in-process models, no worker). locust (bench/locustfile.py, the soak test's load) runs with `--host
127.0.0.1:A` and then `--host 127.0.0.1:A,127.0.0.1:B`: the client's channel spreads calls over both. Client,
replicas, PostgreSQL and Milvus share this machine's cores, so two replicas add no CPU here: the figures show the
cost and correctness of sharing, not a speed-up (which needs a machine a replica).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.load_soak import add_load_arguments, locust_command, locust_env, read_csv
from bench.milvus_server import start_milvus
from bench.record import machine, publish
from bench.serve_process import ROOT, free_port, start_serve, stop_serve, wait_serving
from server.storage.db import local_postgres, migrate, open_pool
from server.storage.store import Store

SIGNALS = "pdq,embedding,embedding_fast,face_sface"  # the audio signal's index cannot be shared


def new_database(cluster: str) -> str:
    name = f"load_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return make_conninfo(cluster, dbname=name)


def run_arm(args: argparse.Namespace, cluster: str, milvus_uri: str, replicas: int, out: Path
            ) -> dict[str, dict[str, str]]:
    """One arm: `replicas` serve processes and the load; locust's rows by name, and "copies": how many copies of
    the references were sent and found, and how many unrelated items were sent and matched."""
    url = new_database(cluster)
    migrate(url)
    with open_pool(url, max_size=1) as pool:
        store = Store(pool)
        crawler, admin = store.create_token("load-crawler", "crawler"), store.create_token("load-admin", "admin")
    env = {"JIWOOM_INDEX_BACKEND": "milvus", "JIWOOM_INDEX_MILVUS_URI": milvus_uri,
           "JIWOOM_INDEX_MILVUS_PREFIX": f"load{uuid.uuid4().hex[:8]}", "JIWOOM_MATCH_SIGNALS": SIGNALS,
           "JIWOOM_SERVICE_IDENTIFIER_KEY_FILE": str(out / "identifier.key")}
    ports = [free_port() for _ in range(replicas)]
    processes = [start_serve(url, out / f"data{i}", port, out / f"serve{i}.log", env, "--no-worker")
                 for i, port in enumerate(ports)]
    try:
        for process, port, i in zip(processes, ports, range(replicas), strict=True):
            wait_serving(process, port, out / f"serve{i}.log")
        host = ",".join(f"127.0.0.1:{port}" for port in ports)
        with (out / "locust.out").open("w") as log:
            subprocess.run(locust_command(args, host, out), cwd=ROOT, env=locust_env(args, crawler, admin, out),
                           stdout=log, stderr=subprocess.STDOUT, timeout=args.minutes * 60 + 600, check=False)
    finally:
        for process in processes:
            stop_serve(process)
    rows: dict[str, dict[str, str]] = {row["Name"]: row for row in read_csv(out / "locust_stats.csv")}
    tally = json.loads((out / "summary.json").read_text()).get("tally", {}) if (out / "summary.json").exists() else {}
    rows["copies"] = {k: str(sum(v for key, v in tally.items() if key.endswith(f" {k}")))
                      for k in ("copies", "copies_found", "others", "others_matched")}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, minutes=3.0)  # per arm
    parser.add_argument("--out-dir", default="/tmp/replicas_load", help="report.md and each arm's locust files")
    args = parser.parse_args()
    root = Path(args.out_dir)
    load_at_start = os.getloadavg()
    started = time.perf_counter()
    results: dict[int, dict[str, dict[str, str]]] = {}
    with tempfile.TemporaryDirectory(prefix="jiwoom-replicas-") as tmp, \
            local_postgres(Path(tmp) / "postgres", binaries="system") as cluster:
        milvus = start_milvus(Path(tmp) / "milvus")
        try:
            for replicas in (1, 2):
                out = root / f"{replicas}-replica{'s' if replicas > 1 else ''}"
                out.mkdir(parents=True, exist_ok=True)
                print(f"{replicas} replica(s): {args.minutes:g} min of load", file=sys.stderr, flush=True)
                results[replicas] = run_arm(args, cluster, f"http://127.0.0.1:{milvus.listen_port}", replicas, out)
        finally:
            milvus.stop()
    lines = ["# Load against one replica and two behind round_robin (`python -m bench.replicas_load`)\n",
             f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"- Machine: {machine()}; no GPU; load average at the start "
             + " / ".join(f"{v:.2f}" for v in load_at_start) + ", at the end "
             + " / ".join(f"{v:.2f}" for v in os.getloadavg()),
             f"- Command: `python -m bench.replicas_load{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`; "
             f"locust `-u {args.users} -r {args.spawn_rate} -t {round(args.minutes * 60)}s` per arm; "
             f"{args.references} references, image pool {args.pool}",
             "- Each arm: a fresh database and fresh Milvus collections (Embedded Milvus 2.3.5, HNSW, staleness "
             "0.5 s), `jiwoom serve --no-worker` processes with in-process models; everything on the same cores",
             f"- Wall time {(time.perf_counter() - started) / 60:.1f} min\n",
             "| replicas | request | calls | failures | req/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for replicas, rows in results.items():
        for name in sorted((n for n in rows if n != "copies"), key=lambda n: (n != "Aggregated", n)):
            row = rows[name]
            lines.append(f"| {replicas} | {name} | {row['Request Count']} | {row['Failure Count']} | "
                         f"{float(row['Requests/s']):.2f} | {row['50%']} | {row['99%']} |")
    lines += ["", "| replicas | copies of references found | unrelated items that matched |", "|---|---|---|"]
    for replicas, rows in results.items():
        c = rows["copies"]
        lines.append(f"| {replicas} | {c['copies_found']}/{c['copies']} | {c['others_matched']}/{c['others']} |")
    publish("\n".join(lines), root / "report.md")


if __name__ == "__main__":
    main()
