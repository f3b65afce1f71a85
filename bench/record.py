"""How every benchmark names its machine and publishes its report: stdlib only, so a GPU host without our model
stack (no tritonclient, no faiss) can still run the benchmarks that need neither."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def publish(text: str, out: str | Path | None) -> None:
    """Print a benchmark's markdown report, and keep a copy in `out` when given (for RESULTS.md)."""
    print(text)
    if out:
        Path(out).write_text(text.rstrip("\n") + "\n")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
