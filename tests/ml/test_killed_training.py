"""A training run killed halfway leaves `models/` exactly as it was (issue: reliability)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.data.synth import write_synthetic
from app.ml.artifact import current_version_dir

pytestmark = pytest.mark.slow


def test_killed_training_leaves_current_and_versions_untouched(tmp_path: Path) -> None:
    data = write_synthetic(tmp_path / "synth", 300, 200, 20_000, seed=0)
    models = tmp_path / "models"
    environment = os.environ | {"MODELS_DIR": str(models), "DATA_DIR": str(tmp_path / "data")}
    base = [sys.executable, "-m", "app.cli", "train", "--data", str(data), "--quiet"]
    first = subprocess.run(
        [*base, "--epochs", "1"], env=environment, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr
    before_current = current_version_dir(models)
    before = sorted(p.name for p in models.iterdir())

    run = subprocess.Popen(
        [*base, "--epochs", "200", "--batch-size", "64"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    for line in run.stdout:
        if "epoch 1 " in line or time.monotonic() > deadline:
            break
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)

    assert run.returncode == -signal.SIGKILL
    assert current_version_dir(models) == before_current
    assert sorted(p.name for p in models.iterdir()) == before
