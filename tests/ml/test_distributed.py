"""DDP on 2 CPU ranks (gloo), launched the way users launch it: `dotrec train --nproc 2`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.data.synth import PRESETS, write_synthetic

pytestmark = pytest.mark.slow
DOTREC = [sys.executable, "-m", "app.cli"]


@pytest.fixture(scope="module")
def ml100k_source(ml100k_archive, tmp_path_factory) -> Path:
    if ml100k_archive is not None:
        return ml100k_archive
    return write_synthetic(tmp_path_factory.mktemp("synth"), *PRESETS["ml-100k"], seed=0)


def train(source: Path, models: Path, *extra: str) -> subprocess.CompletedProcess:
    environment = os.environ | {"MODELS_DIR": str(models), "DATA_DIR": str(models.parent / "data")}
    command = [*DOTREC, "train", "--data", str(source), "--quiet", "--sparse", "--epochs", "4", *extra]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)


def meta_of(models: Path) -> dict:
    return json.loads((models / "current" / "meta.json").read_text())


def test_two_ranks_match_one_process(ml100k_source, tmp_path) -> None:
    single = train(ml100k_source, tmp_path / "single")
    assert single.returncode == 0, single.stderr
    double = train(ml100k_source, tmp_path / "ddp", "--nproc", "2")
    assert double.returncode == 0, double.stderr
    one, two = meta_of(tmp_path / "single"), meta_of(tmp_path / "ddp")
    assert one["training_processes"] == 1 and two["training_processes"] == 2
    assert abs(one["metrics"]["rmse"] - two["metrics"]["rmse"]) < 0.01, (one["metrics"], two["metrics"])
    assert two["metrics"]["rmse"] < two["metrics"]["bias_only_rmse"] + 0.02
    versions = [p for p in (tmp_path / "ddp").iterdir() if p.name != "current"]
    assert len(versions) == 1, "only rank 0 writes an artifact"


def child_pids(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def test_a_crashed_rank_fails_the_run_and_leaves_no_artifact(ml100k_source, tmp_path) -> None:
    models = tmp_path / "models"
    environment = os.environ | {"MODELS_DIR": str(models), "DATA_DIR": str(tmp_path / "data")}
    command = [*DOTREC, "train", "--data", str(ml100k_source), "--quiet", "--sparse", "--epochs", "50",
               "--nproc", "2"]  # fmt: skip
    launcher = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    for line in launcher.stdout:
        if "epoch 1 " in line or time.monotonic() > deadline:
            break
    workers = child_pids(launcher.pid)
    assert workers, f"torchrun started no worker processes: {line!r}, exit {launcher.poll()}"
    os.kill(workers[-1], signal.SIGKILL)
    output = launcher.stdout.read()
    assert launcher.wait(timeout=120) != 0
    assert "failed" in output.lower()
    assert not models.exists() or not any(models.iterdir()), "a failed run must write nothing"
