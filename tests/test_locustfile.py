"""The locust load test (bench/locustfile.py), headless against the real service on loopback: it drives Match and
MatchStream without a failure, and a failing call is counted as a locust failure while the users go on."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench.load_soak import wait_idle
from server.app import Running, running_service
from server.config import ServiceSettings, Settings
from tests.conftest import fresh_database

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def service(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data_dir = tmp_path_factory.mktemp("locust-service")
    settings = Settings(service=ServiceSettings(listen="127.0.0.1:0", data_dir=str(data_dir)))
    with fresh_database(postgres_server) as url, running_service(settings, url) as running:
        yield running
        wait_idle(psutil.Process(), 30.0)  # items of the streams locust cancelled at its end are still matching


def run_locust(running: Running, out: Path, seconds: int, users: int, env: dict[str, str]
               ) -> tuple[subprocess.CompletedProcess[str], dict[str, list[dict[str, Any]]]]:
    """locust --headless on the locustfile, from the repository root as documented; its CSV files, by kind."""
    ours = ("JIWOOM_LOAD_", "JIWOOM_TOKEN", "JIWOOM_TLS_CA", "JIWOOM_HOST")  # what the locustfile reads
    base = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env = base | {
        "JIWOOM_LOAD_POOL": "6", "JIWOOM_LOAD_WAIT_S": "0.5,1.5", "JIWOOM_LOAD_PACE_S": "0.3,1",
        "JIWOOM_LOAD_STREAM_ITEMS": "2,5",  # short streams, so some end (and open again) within the run
    } | env
    command = [sys.executable, "-m", "locust", "-f", "bench/locustfile.py", "--headless", "-u", str(users),
               "-r", str(users), "-t", f"{seconds}s", "--host", f"127.0.0.1:{running.port}", "--csv", str(out / "run"),
               "--only-summary"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    tables = {}
    for kind in ("stats", "failures", "exceptions"):
        with (out / f"run_{kind}.csv").open(newline="") as file:
            tables[kind] = list(csv.DictReader(file))
    return done, tables


def requests_by_call(stats: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in stats:
        if row["Name"] != "Aggregated":
            call = row["Name"].split()[0]
            counts[call] = counts.get(call, 0) + int(row["Request Count"])
    return counts


def test_load_drives_match_and_match_stream_without_failures(service: Running, tmp_path: Path) -> None:
    env = {
        "JIWOOM_TOKEN": service.store.create_token("locust-crawler", "crawler"),
        "JIWOOM_LOAD_REGISTER": "1",
        "JIWOOM_LOAD_REGISTER_TOKEN": service.store.create_token("locust-admin", "admin"),
        "JIWOOM_LOAD_REFERENCES": "3",
        "JIWOOM_LOAD_SUMMARY": str(tmp_path / "summary.json"),
    }
    done, tables = run_locust(service, tmp_path, seconds=15, users=3, env=env)  # 1 MatchUser, 2 CrawlerUsers
    assert done.returncode == 0, done.stderr[-3000:]
    counts = requests_by_call(tables["stats"])
    assert counts.get("Match", 0) >= 1 and counts.get("MatchStream", 0) >= 1, counts
    assert not tables["failures"] and not tables["exceptions"], (tables["failures"], tables["exceptions"])
    tally = json.loads((tmp_path / "summary.json").read_text())["tally"]
    assert sum(v for k, v in tally.items() if k.endswith("copies_found")) > 0, tally  # the calls did real work
    assert "forgot case 'load-test'" in done.stderr  # the references it registered, cleaned up


def test_failed_calls_are_counted_and_the_users_go_on(service: Running, tmp_path: Path) -> None:
    env = {"JIWOOM_TOKEN": "not-a-token"}
    done, tables = run_locust(service, tmp_path, seconds=3, users=3, env=env)
    assert done.returncode == 1, done.stderr[-3000:]  # locust's exit code when any request failed
    assert "Traceback" not in done.stderr and not tables["exceptions"], done.stderr[-3000:]
    failed = {row["Name"].split()[0] for row in tables["failures"] if "UNAUTHENTICATED: " in row["Error"]}
    assert failed == {"Match", "MatchStream"}, tables["failures"]
    counts = requests_by_call(tables["stats"])
    assert counts.get("Match", 0) >= 2, counts  # the user went on after its first failure
