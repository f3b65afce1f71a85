"""`jiwoom serve` as a child process: started, waited for until its health says SERVING, stopped. The replica
tests and the replica load benchmark run the real command, as an operator would."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jiwoom.api.client import open_channel

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free loopback port, for servers that cannot bind port 0 themselves (aiosmtpd's Controller, a child
    process whose port the parent must know)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_serve(url: str, data_dir: Path, port: int, log: Path, env: dict[str, str] | None = None,
                *args: str) -> subprocess.Popen[bytes]:
    """A `jiwoom serve` process (not waited for: see `wait_serving`), its output appended to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "jiwoom.cli", "serve", "--database-url", url, "--data-dir", str(data_dir),
             "--listen", f"127.0.0.1:{port}", *args], cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)  # a group of its own: see kill_hard


def wait_serving(process: subprocess.Popen[bytes], port: int, log: Path, timeout_s: float = 180) -> None:
    """Until the process's gRPC health says SERVING (its indexes are loaded); RuntimeError with the end of its log
    if it dies or takes longer."""
    channel = open_channel(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with contextlib.suppress(grpc.RpcError):
                if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1:
                    return
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start: {log.read_text()[-3000:]}")
            time.sleep(0.3)
    finally:
        channel.close()


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started in a session of its own, and everything it started (its worker's chromedriver
    and Chromium, which a SIGKILLed parent cannot end)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def stop_serve(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


@contextlib.contextmanager
def serve(url: str, data_dir: Path, port: int, log: Path, env: dict[str, str] | None = None,
          *args: str) -> Iterator[subprocess.Popen[bytes]]:
    process = start_serve(url, data_dir, port, log, env, *args)
    try:
        wait_serving(process, port, log)
        yield process
    finally:
        stop_serve(process)
