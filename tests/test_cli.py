"""The `dotrec` command line, end to end on a small generated data set and a SQLite file."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from app.cli import app
from app.config import get_settings


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'dotrec.db'}")
    monkeypatch.setenv("MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def invoke(*arguments: str) -> str:
    result = CliRunner().invoke(app, list(arguments))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_synth_import_train_evaluate(workspace) -> None:
    synth = workspace / "synth"
    invoke("synth", str(synth), "--users", "120", "--movies", "80", "--ratings", "3000", "--quiet")
    invoke("db", "upgrade")
    assert "3,000 ratings added" in invoke("import", str(synth), "--quiet")
    assert "not importing" in invoke("import", str(synth), "--if-empty", "--quiet")
    assert "0 ratings added" in invoke("import", str(synth), "--quiet")

    output = invoke("train", "--epochs", "3", "--dim", "8", "--quiet", "--plot")
    assert "validation RMSE" in output
    current = workspace / "models" / "current"
    meta = json.loads((current / "meta.json").read_text())
    assert meta["n_ratings"] == 3000 and meta["hyper_parameters"]["n_factors"] == 8
    assert (current / "training_curves.png").stat().st_size > 1000
    assert (current / "movie_map.png").stat().st_size > 1000

    table = workspace / "top.parquet"
    invoke("recommend-all", "--k", "5", "--out", str(table), "--quiet")
    recommended = pq.read_table(table).to_pandas()
    assert recommended.groupby("user_id").size().max() == 5
    assert recommended["user_id"].nunique() == meta["n_users"]

    reports = json.loads(invoke("evaluate", "--folds", "2", "--epochs", "2", "--dim", "4", "--json"))
    assert [r["fold"] for r in reports] == [1, 2]
    assert all(r["n_train"] + r["n_test"] == 3000 for r in reports)


def test_import_fail_mode_refuses_bad_lines_and_writes_nothing(workspace) -> None:
    ratings = workspace / "bad.csv"
    ratings.write_text("user_id,movie_id,rating\n1,10,4\n2,10,9.5\nnot,a,line\n")
    invoke("db", "upgrade")
    result = CliRunner().invoke(app, ["import", str(ratings), "--on-error", "fail", "--quiet"])
    assert result.exit_code == 1
    assert "line 3" in result.output and "line 4" in result.output
    assert "nothing was written" in result.output
    assert "1 ratings added" in invoke("import", str(ratings), "--quiet")


def test_train_without_ratings_says_what_to_do(workspace) -> None:
    invoke("db", "upgrade")
    result = CliRunner().invoke(app, ["train", "--quiet"])
    assert result.exit_code == 1
    assert "dotrec import" in result.output


def test_commands_refuse_an_unmigrated_database(workspace) -> None:
    result = CliRunner().invoke(app, ["train", "--quiet"])
    assert result.exit_code == 1
    assert "dotrec db upgrade" in result.output


def test_scale_checks_use_the_numbers_as_written() -> None:
    from app.config import Settings

    settings = Settings(_env_file=None, rating_min=1, rating_max=2, rating_step=0.1)
    assert all(settings.is_on_scale(value) for value in settings.allowed_ratings())  # 1.1, 1.2, ... too
    assert not settings.is_on_scale(1.15) and not settings.is_on_scale(2.1)


def _synthetic(workspace: Path) -> Path:
    synth = workspace / "synth"
    invoke("synth", str(synth), "--users", "120", "--movies", "80", "--ratings", "3000", "--quiet")
    return synth


def test_train_picks_its_defaults_from_the_data_size_and_records_them(workspace, monkeypatch) -> None:
    synth = _synthetic(workspace)
    current = workspace / "models" / "current"
    train = ("train", "--data", str(synth), "--dim", "4", "--objective", "rating", "--quiet")
    output = invoke(*train)
    used = json.loads((current / "meta.json").read_text())["hyper_parameters"]
    assert (used["batch_size"], used["epochs"], used["lr"]) == (1024, 10, 0.005)  # small: as tuned
    assert "10 epochs of 1,024 at lr 0.005" in " ".join(output.split())

    monkeypatch.setattr("app.ml.train.LARGE_TRAINING_SET", 2_000)  # 3,000 ratings count as large
    output = invoke(*train)
    meta = json.loads((current / "meta.json").read_text())
    used = meta["hyper_parameters"]
    assert (used["batch_size"], used["epochs"], used["lr"]) == (4096, 5, 0.015)
    assert (used["weight_decay"], used["validation_share"]) == (0.08, 0.01)
    assert len(meta["history"]) <= 5 and meta["metrics"]["n_held_out"] == 30  # 1 % of 3,000
    assert "5 epochs of 4,096 at lr 0.015" in " ".join(output.split())

    invoke(*train, "--batch-size", "256", "--epochs", "2", "--lr", "0.02")
    used = json.loads((current / "meta.json").read_text())["hyper_parameters"]
    assert (used["batch_size"], used["epochs"], used["lr"]) == (256, 2, 0.02)
    assert used["weight_decay"] == 0.08, "an option not given still follows the size rule"


def test_evaluate_sizes_its_defaults_by_the_training_part(workspace, monkeypatch) -> None:
    synth = _synthetic(workspace)
    seen = []

    def evaluate_folds(data, settings, config, *arguments, **keywords) -> list:
        seen.append(config)
        return []

    monkeypatch.setattr("app.jobs.evaluation.evaluate_folds", evaluate_folds)
    monkeypatch.setattr("app.ml.train.LARGE_TRAINING_SET", 2_000)
    invoke("evaluate", "--data", str(synth), "--folds", "2", "--json")  # trains on 1,500
    invoke("evaluate", "--data", str(synth), "--holdout", "0.1", "--json")  # trains on 2,700
    invoke("evaluate", "--data", str(synth), "--holdout", "0.1", "--epochs", "2", "--json")
    assert [(c.batch_size, c.epochs) for c in seen] == [(1024, 10), (4096, 5), (4096, 2)]
