"""Benchmark: issue #8's batch top-N and memory-mapped weights, at ML-1M and ML-25M shapes.

(a) `recommend_all` (k=100, rated movies excluded) on a model trained 2 epochs on synthetic
    ML-1M-shaped data (6,040 x 3,706), against a pure-numpy reference (`predictor.matrix` +
    `ranking_scores` + `argpartition`, same chunks, same parquet writer); time and peak RSS.
(b) the same at ML-25M shape (162,541 x 59,047): a model trained 1 epoch with 65,536-rating
    batches (or, with `--random-25m`, random weights of the right shapes saved with
    `save_artifact`); the numpy reference on the first `--reference-users` users only.
(c) memory of 2 processes serving the 25M artifact, from /proc/PID/smaps_rollup: RSS, PSS,
    shared and private pages, with the weights copied (safetensors `load_file`, the previous
    `_read_weights`) and memory-mapped. Both as 2 plain processes (`load_artifact` +
    `Predictor`) and as `dotrec serve --workers 2` (MODELS_DIR = the artifact, DATABASE_URL =
    a migrated empty SQLite file). The two variants are switched by a `sitecustomize.py` the
    benchmark writes into its scratch folder (env DOTREC_BENCH_WEIGHTS), so no product code
    has a benchmark switch.

Every recommend-all run is a fresh child process, so its peak RSS is its own. Prints Markdown
tables and writes them to `bench/results/scale.md`. The scratch folder (data, models,
parquet files; about 1 GB at 25M) is deleted at the end unless `--keep`.

    python -m bench.bench_scale [--repeat 3] [--skip-25m] [--random-25m] [--skip-serve]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
K = 100
CHUNK_USERS = 1024
SITECUSTOMIZE = '''\
"""Written by bench/bench_scale.py: switches how weights are held, for the memory comparison."""
import os

_MODE = os.environ.get("DOTREC_BENCH_WEIGHTS", "")
if _MODE:
    from safetensors.numpy import load_file

    import app.ml.artifact as _artifact

    if _MODE == "copy":
        _artifact._read_weights = lambda path: load_file(path / _artifact.WEIGHTS_FILE)
'''


@dataclass(frozen=True)
class Prepared:
    """A data set turned into a model folder and the rated pairs, ready for child processes."""

    name: str
    models_dir: Path
    rated_dir: Path
    n_users: int
    n_movies: int
    n_ratings: int
    model_note: str


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    from bench.common import machine, write_result  # imports torch: not in the children

    started = time.time()
    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="dotrec-bench-scale-", dir=args.scratch))
    sections: list[str] = []
    try:
        (scratch / "site").mkdir()
        (scratch / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        ml1m = prepare(scratch, "ml-1m", epochs=2, batch_size=None, random_weights=False)
        sections.append(recommend_section(scratch, ml1m, args.repeat, reference_users=None))
        if not args.skip_25m:
            ml25m = prepare(scratch, "ml-25m", epochs=1, batch_size=65_536, random_weights=args.random_25m)
            repeat = max(1, args.repeat - 1)
            sections.append(recommend_section(scratch, ml25m, repeat, reference_users=args.reference_users))
            if not args.skip_serve:
                sections.append(memory_section(scratch, ml25m))
    finally:
        if args.keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    header = (
        f"# Scale: batch top-N and memory-mapped weights\n\n"
        f"Machine: {machine()}; `python -m bench.bench_scale` took {(time.time() - started) / 60:.1f} min. "
        f"Load average (1/5/15 min) {fmt_load(load_before)} at the start, {fmt_load(os.getloadavg())} "
        f"at the end: **the machine was shared with other jobs, so times are noisy** (best of the runs "
        f"is the fairest figure; memory figures are not affected)."
    )
    write_result("scale.md", "\n\n".join([header, *sections]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="recommend-all runs at ML-1M (25M: one fewer)")
    parser.add_argument("--skip-25m", action="store_true", help="only the ML-1M shape")
    parser.add_argument("--random-25m", action="store_true", help="random 25M weights instead of training")
    parser.add_argument("--skip-serve", action="store_true", help="no memory comparison (c)")
    parser.add_argument(
        "--reference-users", type=int, default=16_384, help="users the 25M numpy reference scores"
    )
    parser.add_argument("--scratch", default=None, help="where the scratch folder goes (default: TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--child", choices=["recommend", "hold"], help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rated", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=["app", "numpy"], default="app", help=argparse.SUPPRESS)
    parser.add_argument("--users", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


def fmt_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.1f}" for v in load)


# --- preparing data and models --------------------------------------------------------------------


def prepare(
    scratch: Path, preset: str, epochs: int, batch_size: int | None, random_weights: bool
) -> Prepared:
    """Generate the preset's synthetic data, make a model of it, save the rated pairs as .npy."""
    from app.config import Settings
    from app.data.movielens import read_ratings_set
    from app.data.synth import PRESETS, write_synthetic
    from app.data.training_set import TrainingSet
    from app.jobs.training import train_and_save
    from app.ml.train import TrainConfig

    started = time.perf_counter()
    folder = write_synthetic(scratch / f"data-{preset}", *PRESETS[preset])
    generated = time.perf_counter()
    ratings_set = read_ratings_set(folder)
    training = TrainingSet.from_frame(ratings_set.ratings)
    del ratings_set
    shutil.rmtree(folder)
    read = time.perf_counter()
    models_dir = scratch / f"models-{preset}"
    settings = Settings(_env_file=None, models_dir=models_dir)
    if random_weights:
        save_random_model(training, settings)
        note = f"random weights of the trained shapes (k=50), saved with `save_artifact` in {timer(read)}"
    else:
        given = {"epochs": epochs} | ({"batch_size": batch_size} if batch_size else {})
        train_and_save(training, settings, TrainConfig(**given))
        described = ", ".join(f"{key}={value}" for key, value in given.items())
        note = f"trained with `TrainConfig({described})` in {timer(read)}"
    rated_dir = scratch / f"rated-{preset}"
    rated_dir.mkdir()
    for name in ("user_rows", "movie_rows", "user_ids", "movie_ids"):
        np.save(rated_dir / f"{name}.npy", getattr(training, name))
    print(
        f"{preset}: generated in {generated - started:.1f}s, read in {read - generated:.1f}s, {note}",
        file=sys.stderr,
    )
    return Prepared(preset, models_dir, rated_dir, training.n_users, training.n_movies, len(training), note)


def save_random_model(training: object, settings: object) -> Path:
    from app.jobs.training import y_range_for
    from app.ml import evaluate
    from app.ml.artifact import new_version_name, save_artifact

    rng = np.random.default_rng(0)
    n_users, n_movies, k = training.n_users, training.n_movies, 50
    weights = {
        "user_emb": rng.normal(0, 0.3, (n_users, k)),
        "movie_emb": rng.normal(0, 0.3, (n_movies, k)),
        "user_bias": rng.normal(0, 0.3, n_users),
        "movie_bias": rng.normal(0, 0.3, n_movies),
        "baseline_user_bias": rng.normal(0, 0.3, n_users),
        "baseline_movie_bias": rng.normal(0, 0.3, n_movies),
        "movie_popularity": evaluate.movie_popularity(training),
    }
    meta = {
        "version": new_version_name(training.fingerprint),
        "n_factors": k,
        "n_ratings": len(training),
        "y_range": list(y_range_for(settings)),
        "rating_scale": {
            "min": settings.rating_min,
            "max": settings.rating_max,
            "step": settings.rating_step,
        },
        "global_mean": float(training.ratings.mean()),
        "user_ids": training.user_ids.tolist(),
        "movie_ids": training.movie_ids.tolist(),
    }
    return save_artifact(settings.models_dir, weights, meta)


def timer(since: float) -> str:
    return f"{time.perf_counter() - since:.0f} s"


# --- (a), (b): recommend-all ---------------------------------------------------------------------


def recommend_section(scratch: Path, data: Prepared, repeat: int, reference_users: int | None) -> str:
    from bench.common import markdown_table

    runs = [run_child(scratch, data, "app", 0) for _ in range(repeat)]
    reference_runs = [run_child(scratch, data, "numpy", reference_users or 0) for _ in range(repeat)]
    rows = [
        summary_row("`recommend_all` (numpy matmul, torch in place + `topk`)", data.n_users, runs),
        summary_row(
            "reference: `predictor.matrix` + `ranking_scores` + numpy `argpartition`",
            reference_users or data.n_users,
            reference_runs,
        ),
    ]
    header = [
        "method",
        "users scored",
        "best (s)",
        "runs (s)",
        "users/s (best)",
        "RSS before (MiB)",
        "peak RSS (MiB)",
        "rows written",
    ]
    cells = data.n_users * data.n_movies
    title = (
        f"## Recommend-all, {data.name} shape: {data.n_users:,} users x {data.n_movies:,} movies "
        f"({cells / 1e9:.2f} G scores), k = {K}, {CHUNK_USERS} users a chunk\n\n"
        f"Model: synthetic `{data.name}`-shaped data ({data.n_ratings:,} ratings), {data.model_note}. "
        f"Rated movies (all {data.n_ratings:,} ratings, standing for the database export) are excluded. "
        f"Each run is a fresh process: time of `recommend_all` alone (artifact and rated arrays "
        f"already loaded; RSS before = after that loading), peak RSS of the whole process."
    )
    return title + "\n\n" + markdown_table(header, rows)


def summary_row(label: str, users: int, runs: list[dict]) -> list[object]:
    seconds = [run["run_s"] for run in runs]
    best = min(seconds)
    return [
        label,
        f"{users:,}",
        f"{best:.2f}",
        ", ".join(f"{s:.2f}" for s in seconds),
        f"{users / best:,.0f}",
        f"{statistics.median(run['rss_before_mib'] for run in runs):.0f}",
        f"{max(run['peak_rss_mib'] for run in runs):.0f}",
        f"{runs[0]['rows']:,}",
    ]


def run_child(scratch: Path, data: Prepared, method: str, users: int) -> dict:
    out = scratch / f"top-{data.name}-{method}.parquet"
    command = [
        sys.executable,
        "-m",
        "bench.bench_scale",
        "--child",
        "recommend",
        "--models",
        str(data.models_dir),
        "--rated",
        str(data.rated_dir),
        "--out",
        str(out),
        "--method",
        method,
        "--users",
        str(users),
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    out.unlink(missing_ok=True)
    print(f"{data.name} {method}: {result}", file=sys.stderr)
    return result


def child(args: argparse.Namespace) -> None:
    from app.ml.artifact import current_version_dir, load_artifact
    from app.ml.predictor import Predictor

    predictor = Predictor(load_artifact(current_version_dir(args.models)))
    if args.child == "hold":
        print("ready", flush=True)
        sys.stdin.read()
        return
    from app.data.training_set import TrainingSet
    from app.ml.recommend_all import recommend_all

    arrays = {name: np.load(args.rated / f"{name}.npy") for name in ("user_rows", "movie_rows")}
    ids = {name: np.load(args.rated / f"{name}.npy") for name in ("user_ids", "movie_ids")}
    n = len(arrays["user_rows"])
    rated = TrainingSet(**arrays, ratings=np.zeros(n, np.float32), timestamps=np.zeros(n, np.int64), **ids)
    if args.users:
        predictor = first_users(predictor, args.users)
    rss_before = proc_status_mib("VmRSS")
    started = time.perf_counter()
    if args.method == "app":
        recommend_all(predictor, rated, K, args.out, chunk_users=CHUNK_USERS)
    else:
        numpy_recommend_all(predictor, rated, K, args.out, CHUNK_USERS)
    seconds = time.perf_counter() - started
    import pyarrow.parquet as pq

    result = {
        "run_s": seconds,
        "rss_before_mib": rss_before,
        "peak_rss_mib": proc_status_mib("VmHWM"),
        "rows": pq.read_metadata(args.out).num_rows,
    }
    print(json.dumps(result))


def first_users(predictor: object, n: int) -> object:
    """The predictor restricted to its first n users (what recommend_all reads of users)."""
    restricted = copy.copy(predictor)
    for name in ("user_ids", "user_emb", "user_bias", "baseline_user_bias"):
        setattr(restricted, name, getattr(predictor, name)[:n])
    return restricted


def numpy_recommend_all(predictor: object, rated: object, k: int, out: Path, chunk_users: int) -> None:
    """The straightforward numpy version, for comparison: predictor.matrix, ranking_scores,
    argpartition + argsort, the same rated mask and the same parquet writer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from app.ml.recommend_all import _rated_by_user
    from app.ml.recommendations_table import SCHEMA

    offsets, (rated_users, rated_movies) = _rated_by_user(predictor, rated)
    movies = np.arange(predictor.n_movies)
    with pq.ParquetWriter(out, SCHEMA.with_metadata({"model_version": predictor.version})) as writer:
        for start in range(0, predictor.n_users, chunk_users):
            stop = min(start + chunk_users, predictor.n_users)
            rows = np.arange(start, stop)
            ratings = predictor.matrix(rows, movies)
            scores = predictor.ranking_scores(ratings)
            lo, hi = offsets[start], offsets[stop]
            scores[rated_users[lo:hi] - start, rated_movies[lo:hi]] = -np.inf
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
            top = np.take_along_axis(top, order, 1)
            kept = np.isfinite(np.take_along_axis(scores, top, 1))
            users = np.broadcast_to(rows[:, None], top.shape)[kept]
            ranks = np.broadcast_to(np.arange(1, k + 1, dtype=np.int16), top.shape)[kept]
            table = {
                "user_id": predictor.user_ids[users],
                "rank": ranks,
                "movie_id": predictor.movie_ids[top[kept]],
                "predicted_rating": np.take_along_axis(ratings, top, 1)[kept],
            }
            writer.write_table(pa.table(table, schema=SCHEMA))


def proc_status_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, MiB. Not `ru_maxrss`: Linux carries that
    over exec from the parent, so a child started by a big parent reports the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- (c): memory of two serving processes ---------------------------------------------------------

SMAPS_FIELDS = ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty")


def memory_section(scratch: Path, data: Prepared) -> str:
    from app.ml.artifact import WEIGHTS_FILE, current_version_dir
    from bench.common import markdown_table

    version = current_version_dir(data.models_dir)
    weights_mib = (version / WEIGHTS_FILE).stat().st_size / 2**20
    rows: list[list[object]] = []
    for mode, label in (("copy", "weights copied (`load_file`, before)"), ("", "weights memory-mapped")):
        with plain_processes(scratch, data.models_dir, mode) as pids:
            rows += memory_rows(f"2 plain processes: {label}", pids)
    database = scratch / "serve.db"
    from app.db.schema import upgrade

    upgrade(f"sqlite:///{database}")
    for mode, label in (
        ("copy", "weights copied (`load_file`, before)"),
        ("", "weights memory-mapped (`ServingModel` views them as plain ndarrays, no copy)"),
    ):
        with serving(scratch, data.models_dir, database, mode) as pids:
            rows += memory_rows(f"`dotrec serve --workers 2`: {label}", pids)
    header = [
        "processes",
        "process",
        "RSS (MiB)",
        "PSS (MiB)",
        "shared (MiB)",
        "private (MiB)",
        "PSS sum (MiB)",
    ]
    title = (
        f"## Memory of two processes serving the {data.name} artifact\n\n"
        f"`weights.safetensors` is {weights_mib:.1f} MiB ({data.n_users:,} + {data.n_movies:,} rows "
        f"x 50 factors, plus biases). From `/proc/PID/smaps_rollup` once each process has loaded "
        f"the model (`load_artifact` reads every page once: its NaN check). Shared = Shared_Clean + "
        f"Shared_Dirty, private = Private_Clean + Private_Dirty; PSS charges each shared page "
        f"1/n to each of its n users, so the PSS sum is what the processes cost the machine."
    )
    return title + "\n\n" + markdown_table(header, rows)


def memory_rows(label: str, pids: list[int]) -> list[list[object]]:
    rollups = [smaps_rollup(pid) for pid in pids]
    total = sum(r["Pss"] for r in rollups)
    rows = []
    for index, (pid, r) in enumerate(zip(pids, rollups, strict=True)):
        rows.append(
            [
                label if index == 0 else "",
                f"#{index + 1} (pid {pid})",
                f"{r['Rss']:.0f}",
                f"{r['Pss']:.0f}",
                f"{r['Shared_Clean'] + r['Shared_Dirty']:.0f}",
                f"{r['Private_Clean'] + r['Private_Dirty']:.0f}",
                f"{total:.0f}" if index == 0 else "",
            ]
        )
    print(label, rollups, file=sys.stderr)
    return rows


def smaps_rollup(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value, *_ = line.split()
        values[key.rstrip(":")] = int(value) / 1024
    return {key: values.get(key, 0.0) for key in SMAPS_FIELDS}


def child_env(scratch: Path, mode: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(scratch / "site"), env.get("PYTHONPATH")) if p)
    env["DOTREC_BENCH_WEIGHTS"] = mode
    return env


@contextmanager
def plain_processes(scratch: Path, models_dir: Path, mode: str) -> Iterator[list[int]]:
    command = [sys.executable, "-m", "bench.bench_scale", "--child", "hold", "--models", str(models_dir)]
    env = child_env(scratch, mode)
    processes = [
        subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        for process in processes:
            if process.stdout is None or process.stdout.readline().strip() != "ready":
                raise RuntimeError("a holding process did not load the model")
        yield [process.pid for process in processes]
    finally:
        for process in processes:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=60)


@contextmanager
def serving(scratch: Path, models_dir: Path, database: Path, mode: str) -> Iterator[list[int]]:
    port = free_port()
    env = child_env(scratch, mode, MODELS_DIR=str(models_dir), DATABASE_URL=f"sqlite:///{database}")
    dotrec = Path(sys.executable).with_name("dotrec")
    command = [str(dotrec), "serve", "--workers", "2", "--port", str(port), "--log-level", "info"]
    log_path = scratch / f"serve-{mode or 'mmap'}.log"
    log = log_path.open("w")
    server = subprocess.Popen(command, cwd=scratch, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        workers = wait_for_workers(server, log_path, timeout_s=300)
        if not ready(port):
            raise RuntimeError(f"dotrec serve is not ready: {log_path.read_text()[-2000:]}")
        yield workers
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def wait_for_workers(server: subprocess.Popen, log: Path, timeout_s: float) -> list[int]:
    """The 2 worker pids once both logged the end of their start-up (each loaded the model)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"dotrec serve exited with {server.returncode}: {log.read_text()[-2000:]}")
        if log.read_text().count("Application startup complete") >= 2:
            workers = worker_pids(server.pid)
            if len(workers) == 2:
                time.sleep(2)
                return workers
        time.sleep(1)
    raise RuntimeError(f"dotrec serve did not start both workers: {log.read_text()[-2000:]}")


def worker_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    workers = []
    for child_pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{child_pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(child_pid)
    return sorted(workers)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    main()
