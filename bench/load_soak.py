"""Soak test: the locust load (bench/locustfile.py) against a throwaway local service, with the server's memory.

    .venv/bin/python -m bench.load_soak [--minutes 30] [--users 6] [--spawn-rate 1] [--references 30]
                                        [--sample-s 10] [--grid N] [--out-dir /tmp/locust_soak]

Starts the real service in this process (`server.app.running_service`, in-process models) on a throwaway
PostgreSQL cluster (system binaries), makes a crawler token for the load and an admin token for the references,
and runs `locust --headless` on bench/locustfile.py as a subprocess; the locustfile registers the references
before the users start. Meanwhile it samples this process's RSS (the server: gRPC, models, indexes) every
`--sample-s` seconds, so memory that grows under a steady load shows as a slope. At the end it writes
`report.md` (throughput, p50/p95/p99 per request kind, errors, copies found, the RSS trend) into `--out-dir`,
beside locust's CSV files, the RSS samples (rss.csv) and locust's log. Client and server share the machine.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from bench.record import machine, publish
from bench.service_latency import progress
from server.app import running_service
from server.config import Settings, load_settings
from server.storage.db import local_postgres

ROOT = Path(__file__).resolve().parent.parent
WINDOW_S = 300.0  # the RSS trend compares the first and the last five minutes (a third each of shorter runs)


@dataclass(frozen=True)
class Sample:
    at: float  # unix time
    rss_mb: float
    cpu_percent: float  # of one core, since the previous sample
    load1: float


def locust_command(args: argparse.Namespace, host: str, out: Path) -> list[str]:
    """locust on bench/locustfile.py against `host` (host:port, or several comma-separated: round-robin)."""
    return [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
            "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{round(args.minutes * 60)}s",
            "--host", host, "--csv", str(out / "locust"), "--only-summary",
            "--logfile", str(out / "locust.log")]


def locust_env(args: argparse.Namespace, crawler_token: str, admin_token: str, out: Path) -> dict[str, str]:
    return os.environ | {
        "JIWOOM_TOKEN": crawler_token, "JIWOOM_LOAD_REGISTER": "1", "JIWOOM_LOAD_REGISTER_TOKEN": admin_token,
        "JIWOOM_LOAD_FORGET": "0",  # a throwaway database; the counts at the end still show the references
        "JIWOOM_LOAD_REFERENCES": str(args.references), "JIWOOM_LOAD_POOL": str(args.pool),
        "JIWOOM_LOAD_SEED": str(args.seed), "JIWOOM_LOAD_SUMMARY": str(out / "summary.json"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def sample_until_done(process: subprocess.Popen, every_s: float, out: Path) -> list[Sample]:
    """RSS of this process (the server) every `every_s` until locust exits; also appended to rss.csv as it goes,
    so a run that is cut short still leaves its samples."""
    me = psutil.Process()
    me.cpu_percent()  # the first call only starts the measurement
    samples: list[Sample] = []
    with (out / "rss.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["unix_time", "rss_mb", "server_cpu_percent", "load1"])
        while True:
            sample = Sample(time.time(), me.memory_info().rss / 2**20, me.cpu_percent(), os.getloadavg()[0])
            samples.append(sample)
            writer.writerow([f"{sample.at:.1f}", f"{sample.rss_mb:.1f}", f"{sample.cpu_percent:.0f}",
                             f"{sample.load1:.2f}"])
            file.flush()
            try:
                process.wait(timeout=every_s)
                return samples
            except subprocess.TimeoutExpired:
                continue


def wait_idle(process: psutil.Process, limit_s: float) -> None:
    """Until `process` uses under a tenth of a core for a second, or `limit_s` has passed."""
    process.cpu_percent()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if process.cpu_percent() < 10:
            return


@dataclass(frozen=True)
class RssTrend:
    at_load_start_mb: float
    first_mb: float  # mean over the first window of the load
    last_mb: float  # mean over the last window
    max_mb: float
    slope_mb_per_h: float  # least squares over the samples after the first window (the warm-up)
    window_s: float


def rss_trend(samples: list[Sample], load_started: float) -> RssTrend | None:
    during = [s for s in samples if s.at >= load_started]
    if len(during) < 3:
        return None
    duration = during[-1].at - during[0].at
    window = min(WINDOW_S, duration / 3)
    first = [s.rss_mb for s in during if s.at <= during[0].at + window]
    last = [s.rss_mb for s in during if s.at >= during[-1].at - window]
    settled = [s for s in during if s.at > during[0].at + window] or during
    hours = np.array([(s.at - settled[0].at) / 3600 for s in settled])
    rss = np.array([s.rss_mb for s in settled])
    slope = float(np.polyfit(hours, rss, 1)[0]) if len(settled) >= 2 and hours[-1] > 0 else float("nan")
    return RssTrend(during[0].rss_mb, float(np.mean(first)), float(np.mean(last)), max(s.rss_mb for s in during),
                    slope, window)


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def throughput_by_window(history: list[dict[str, str]], window_s: float) -> tuple[float, float]:
    """Aggregated requests/s over the first and the last window of the run, from locust's cumulative counts."""
    rows = [(float(r["Timestamp"]), int(r["Total Request Count"])) for r in history if r["Name"] == "Aggregated"]
    if len(rows) < 2:
        return float("nan"), float("nan")
    start, end = rows[0][0], rows[-1][0]

    def count_at(t: float) -> int:
        return max((c for at, c in rows if at <= t), default=0)

    first = (count_at(start + window_s) - count_at(start)) / window_s
    last = (count_at(end) - count_at(end - window_s)) / window_s
    return first, last


def render(args: argparse.Namespace, settings: Settings, samples: list[Sample], out: Path, load_at_start: tuple,
           load_at_end: tuple, wall_s: float, returncode: int, counts: dict[str, int]) -> str:
    stats = read_csv(out / "locust_stats.csv")
    history = read_csv(out / "locust_stats_history.csv")
    failures = read_csv(out / "locust_failures.csv")
    exceptions = read_csv(out / "locust_exceptions.csv")
    load_started = float(history[0]["Timestamp"]) if history else samples[0].at
    trend = rss_trend(samples, load_started)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    lines = [f"# Soak: locust over gRPC for {args.minutes:g} min (`python -m bench.load_soak`)\n"]
    add = lines.append
    add(f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    add(f"- Machine: {machine()}; no GPU; load average (1/5/15 min) at the start "
        + " / ".join(f"{v:.2f}" for v in load_at_start) + ", at the end " + " / ".join(f"{v:.2f}" for v in load_at_end))
    add(f"- Command: `python -m bench.load_soak{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`; locust "
        f"`-u {args.users} -r {args.spawn_rate} -t {round(args.minutes * 60)}s` (exit code {returncode})")
    add(f"- Service: in-process models (region grid {settings.models.region_grid}), PostgreSQL (system binaries), "
        f"gRPC on loopback without TLS, max_workers {settings.service.max_workers}; locust runs on the same "
        f"{os.cpu_count()} cores. References: {args.references} corpus images and one video; image pool {args.pool}.")
    add("- Store at the end: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    add(f"- Wall time {wall_s / 60:.1f} min (service start, registration and the media pool included)\n")
    add("| request | calls | failures | p50 ms | p95 ms | p99 ms | avg ms | req/s |")
    add("|---|---|---|---|---|---|---|---|")
    for row in stats:
        add(f"| {row['Name']} | {row['Request Count']} | {row['Failure Count']} | {row['50%']} | {row['95%']} | "
            f"{row['99%']} | {float(row['Average Response Time']):.0f} | {float(row['Requests/s']):.2f} |")
    first_rate, last_rate = throughput_by_window(history, trend.window_s if trend else WINDOW_S)
    add("")
    if trend:
        minutes = trend.window_s / 60
        add(f"Throughput: {first_rate:.2f} req/s over the first {minutes:.0f} min, {last_rate:.2f} over the last "
            f"{minutes:.0f} min.\n")
        add(f"Server RSS: {trend.at_load_start_mb:.0f} MB when the load started (models loaded, references "
            f"registered), {trend.first_mb:.0f} MB mean over the first {minutes:.0f} min, {trend.last_mb:.0f} MB "
            f"over the last {minutes:.0f} min, {trend.max_mb:.0f} MB at most; slope after the first {minutes:.0f} "
            f"min {trend.slope_mb_per_h:+.1f} MB/h ({len(samples)} samples every {args.sample_s:g} s: rss.csv).\n")
    if failures:
        add("Failures:\n")
        add("| request | error | occurrences |\n|---|---|---|")
        for row in failures:
            add(f"| {row['Name']} | {row['Error']} | {row['Occurrences']} |")
        add("")
    else:
        add("Failures: none.\n")
    if exceptions:
        add(f"Exceptions in the locustfile: {len(exceptions)} (locust_exceptions.csv).\n")
    tally = summary.get("tally", {})
    if tally:
        add("Copies found (a copy counts when it matched the load case; unrelated media should match nothing):\n")
        add("| call | media | copies found | unrelated that matched |\n|---|---|---|---|")
        keys = sorted({" ".join(k.split()[:2]) for k in tally if k.endswith((" copies", " others"))})
        for key in keys:
            call, kind = key.split()
            add(f"| {call} | {kind} | {tally.get(key + ' copies_found', 0)}/{tally.get(key + ' copies', 0)} | "
                f"{tally.get(key + ' others_matched', 0)}/{tally.get(key + ' others', 0)} |")
        add(f"\nStreams opened: {tally.get('MatchStream streams', 0)}.")
    return "\n".join(lines)


def add_load_arguments(parser: argparse.ArgumentParser, minutes: float) -> None:
    """The locust load's options (what `locust_command` and `locust_env` read)."""
    parser.add_argument("--minutes", type=float, default=minutes, help="locust run time")
    parser.add_argument("--users", type=int, default=6, help="locust -u: a third Match users, the rest crawlers")
    parser.add_argument("--spawn-rate", type=float, default=1.0, help="locust -r")
    parser.add_argument("--references", type=int, default=30)
    parser.add_argument("--pool", type=int, default=36, help="distinct images sent")
    parser.add_argument("--seed", type=int, default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, minutes=30.0)
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--grid", type=int, default=None, help="ModelSettings.region_grid (default: the settings')")
    parser.add_argument("--out-dir", default="/tmp/locust_soak", help="report.md, rss.csv and locust's files")
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    load_at_start = os.getloadavg()  # a shared machine skews the timings; say how busy it was
    started = time.perf_counter()
    settings = load_settings()  # JIWOOM_* overrides apply, as they do for `jiwoom serve`
    if args.grid is not None:
        settings = dataclasses.replace(settings, models=dataclasses.replace(settings.models, region_grid=args.grid))
    with tempfile.TemporaryDirectory(prefix="jiwoom-soak-") as tmp:
        service = dataclasses.replace(settings.service, listen="127.0.0.1:0", data_dir=str(Path(tmp) / "data"),
                                      tls_cert="", tls_key="")
        settings = dataclasses.replace(settings, service=service)
        with local_postgres(Path(tmp) / "postgres", binaries="system") as url, \
                running_service(settings, url) as running:
            crawler = running.store.create_token("soak-crawler", "crawler")
            admin = running.store.create_token("soak-admin", "admin")
            command = locust_command(args, f"127.0.0.1:{running.port}", out)
            progress(f"service on 127.0.0.1:{running.port}; {' '.join(command)}")
            with (out / "locust.out").open("w") as log:
                process = subprocess.Popen(command, cwd=ROOT, env=locust_env(args, crawler, admin, out),
                                           stdout=log, stderr=subprocess.STDOUT)
                try:
                    samples = sample_until_done(process, args.sample_s, out)
                finally:
                    if process.poll() is None:  # interrupted: stop locust too
                        process.terminate()
                        process.wait(timeout=30)
            # Items of streams that locust cancelled at the end are still being matched: stopping now would close
            # the database pool under them (server.stop's grace does not wait for cancelled calls' threads).
            wait_idle(psutil.Process(), 60.0)
            counts, _ = running.service.stats()
    text = render(args, settings, samples, out, load_at_start, os.getloadavg(), time.perf_counter() - started,
                  process.returncode, counts)
    publish(text, out / "report.md")


if __name__ == "__main__":
    main()
