"""What every benchmark shares: where the real data is, peak memory, a Markdown table."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"


def shared_archive(name: str) -> Path | None:
    """The real archive `name` from DOTREC_SHARED_DATA or ../shared/data, if present."""
    folder = Path(os.environ.get("DOTREC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    path = folder / f"{name}.tar.gz"
    return path if path.exists() else None


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a freshly spawned
    benchmark process would report its parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def machine() -> str:
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{platform.machine()}, {cpu} cores, Python {platform.python_version()}, torch {torch.__version__}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, text: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    path.write_text(text + "\n")
    print(text)
    return path
