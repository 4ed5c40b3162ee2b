"""Distributed training at ML-25M scale: epoch time, ratings/s and peak memory per rank for 1 and 2
processes (torchrun + DDP, gloo, sparse gradients) on the synthetic `dotrec synth --like ml-25m` set.

    python -m bench.bench_ddp [--ratings N]     # writes bench/results/ddp.md

Each run is `dotrec train --data SYNTH --sparse --epochs 1 --nproc N`, as a user would start it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.data.synth import PRESETS, write_synthetic
from bench.common import machine, markdown_table, write_result

EPOCH = re.compile(r"epoch 1 loss [0-9.]+ val RMSE [0-9.-]+ \(([0-9.]+)s\)")
PEAK = re.compile(r"rank (\d+) peak RSS (\d+) MiB")


def run_training(folder: Path, models: Path, nproc: int, batch_size: int) -> dict:
    command = [sys.executable, "-m", "app.cli", "train", "--data", str(folder), "--quiet", "--sparse",
               "--epochs", "1", "--batch-size", str(batch_size), "--nproc", str(nproc)]  # fmt: skip
    environment = os.environ | {"MODELS_DIR": str(models), "DATA_DIR": str(models.parent / "data")}
    started = time.perf_counter()
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    log = finished.stdout + finished.stderr
    return {
        "epoch_seconds": float(EPOCH.search(log).group(1)),
        "peak_mib": {int(rank): int(mib) for rank, mib in PEAK.findall(log)},
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ratings", type=int, default=PRESETS["ml-25m"][2])
    parser.add_argument("--batch-size", type=int, default=8192)
    arguments = parser.parse_args()
    n_users, n_movies, _ = PRESETS["ml-25m"]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        folder = write_synthetic(Path(work) / "synth", n_users, n_movies, arguments.ratings, seed=0)
        print(f"generated in {time.perf_counter() - started:.1f} s", flush=True)
        for nproc in (1, 2):
            result = run_training(folder, Path(work) / f"models-{nproc}", nproc, arguments.batch_size)
            per_rank = ", ".join(f"{mib:,}" for _, mib in sorted(result["peak_mib"].items()))
            seconds = result["epoch_seconds"]
            rate = arguments.ratings * 0.98 / seconds  # 2 % is the validation share
            rows.append([nproc, f"{seconds:.1f}", f"{rate:,.0f}", per_rank, f"{result['wall_seconds']:.0f}"])
            print(rows[-1], flush=True)
    header = ["processes", "epoch s", "ratings/s", "peak RSS MiB per rank", "wall s (read + train + save)"]
    title = (
        f"Machine: {machine()}. Synthetic ML-25M shape: {n_users:,} users x {n_movies:,} movies x "
        f"{arguments.ratings:,} ratings, k = 50, batch {arguments.batch_size}, sparse gradients, gloo."
    )
    write_result("ddp.md", title + "\n\n" + markdown_table(header, rows))


if __name__ == "__main__":
    main()
