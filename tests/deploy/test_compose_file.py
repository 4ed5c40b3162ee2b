"""docker-compose.yml parses and hangs together: every command is a real dotrec command, every
setting the app reads is passed (with the app's own default), every variable is documented in
.env.example, volumes and depends_on conditions give the order and the sharing the stack needs."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml
from deploy_support import (
    COMPOSE_FILE,
    COMPOSE_ONLY_VARIABLES,
    DOCKERFILE,
    DOTREC_SERVICES,
    ENV_EXAMPLE,
    ONE_SHOT_SERVICES,
    REPO_ROOT,
    depends_on,
    documented_variables,
    dotrec_invocations,
    env_assignments,
    interpolate,
    interpolate_tree,
    load_compose,
    parse_dockerfile,
    parse_dotrec,
    read_env_file,
    referenced_variables,
    service_argv,
    service_environment,
    shell_script,
    start_order,
    volume_mounts,
)
from docker_engine import compose_v1, compose_v2, which

from app.config import Settings

# Keys of the compose specification this file may use (a typo such as `depend_on` fails here).
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "depends_on", "volumes",
    "ports", "expose", "healthcheck", "restart", "profiles", "deploy", "init", "user",
    "working_dir", "stop_grace_period", "labels", "networks", "read_only", "tmpfs", "logging",
}  # fmt: skip
# No `name`: docker-compose 1.29 refuses it (the project name is COMPOSE_PROJECT_NAME).
TOP_LEVEL_KEYS = {"services", "volumes", "networks", "configs", "secrets"}
COMPOSE_VARIABLES = {"COMPOSE_PROJECT_NAME"}
"""Variables compose itself reads from .env (documented there, referenced nowhere in the file)."""
DEPLOYMENT_SETTINGS = {"DATABASE_URL", "MODELS_DIR", "DATA_DIR", "API_KEY"}
"""Settings the compose file sets for its containers rather than leaving at the app's default."""


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], example_env: dict[str, str]) -> dict[str, Any]:
    """The compose file as `docker compose config` would show it with .env.example as .env."""
    return interpolate_tree(raw, example_env)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def test_the_file_uses_only_known_keys(raw: dict[str, Any]) -> None:
    assert set(raw) - TOP_LEVEL_KEYS <= {key for key in raw if key.startswith("x-")}
    assert set(raw["services"]) == {"db", "migrate", "train", "api", "proxy"}
    for name, service in raw["services"].items():
        assert set(service) <= SERVICE_KEYS, f"{name}: unknown keys {set(service) - SERVICE_KEYS}"


def test_it_interpolates_from_nothing_and_from_the_example(raw: dict[str, Any]) -> None:
    """`docker compose up` needs no .env: no `${VAR:?}` is left unsatisfied without one, and the
    result is the same as with .env.example copied to .env."""
    bare = interpolate_tree(raw, {})
    assert bare == interpolate_tree(raw, read_env_file(ENV_EXAMPLE))
    assert service_environment(bare["services"]["api"], {}).get("API_KEY") is None


def test_every_variable_is_documented_and_every_documented_one_is_used(raw: dict[str, Any]) -> None:
    used = referenced_variables(raw)
    documented = documented_variables(ENV_EXAMPLE)
    settings = {name.upper() for name in Settings.model_fields}
    value_less = {
        key for name in DOTREC_SERVICES for key, value in (raw["services"][name]["environment"]).items()
        if value is None
    }  # fmt: skip
    assert (used | value_less) - documented == set(), "used by docker-compose.yml, missing from .env.example"
    assert settings - documented == set(), "read by the app, missing from .env.example"
    assert documented - used - settings - COMPOSE_VARIABLES == set(), (
        ".env.example documents variables nothing reads"
    )
    assert documented >= COMPOSE_VARIABLES
    assert read_env_file(ENV_EXAMPLE)["COMPOSE_PROJECT_NAME"] == "dotrec"


def test_the_example_env_is_valid_for_the_app(
    example_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The values .env.example sets are the app's defaults, and the app accepts them."""
    settings_names = {name.upper() for name in Settings.model_fields}
    for name in settings_names:
        monkeypatch.delenv(name, raising=False)
    defaults = Settings(_env_file=None)
    for name, value in example_env.items():
        if name in settings_names:
            monkeypatch.setenv(name, value)
    assert Settings(_env_file=None) == defaults


def test_dotrec_services_pass_every_setting_with_the_apps_default(
    raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """migrate, train and api get one environment with every setting of app/config.py; without a
    .env each has the app's own default, except where the deployment sets it on purpose."""
    bare = interpolate_tree(raw, {})
    settings_names = {name.upper() for name in Settings.model_fields}
    environments = {name: service_environment(bare["services"][name], {}) for name in DOTREC_SERVICES}
    declared = {name: set(raw["services"][name]["environment"]) for name in DOTREC_SERVICES}
    for name in DOTREC_SERVICES:
        assert declared[name] - COMPOSE_ONLY_VARIABLES == settings_names, name
    assert declared["train"] - declared["api"] == COMPOSE_ONLY_VARIABLES
    shared = {key: environments["api"].get(key) for key in settings_names}
    for name in ONE_SHOT_SERVICES:
        assert {key: environments[name].get(key) for key in settings_names} == shared, name

    for key in settings_names:
        monkeypatch.delenv(key, raising=False)
    defaults = Settings(_env_file=None)
    for key, value in environments["api"].items():
        monkeypatch.setenv(key, value)
    composed = Settings(_env_file=None)
    for field in Settings.model_fields:
        if field.upper() not in DEPLOYMENT_SETTINGS:
            assert getattr(composed, field) == getattr(defaults, field), field
    assert composed.database_url == "postgresql://dotrec:dotrec@db:5432/dotrec"
    assert composed.api_key is None, "API_KEY must be left unset, not empty, when not given"


def test_database_url_follows_the_postgres_settings(raw: dict[str, Any]) -> None:
    env = {"POSTGRES_USER": "u", "POSTGRES_PASSWORD": "p", "POSTGRES_DB": "d"}
    api = interpolate_tree(raw, env)["services"]["api"]
    assert service_environment(api, env)["DATABASE_URL"] == "postgresql://u:p@db:5432/d"
    env |= {"POSTGRES_HOST": "elsewhere", "POSTGRES_PORT": "6543"}
    api = interpolate_tree(raw, env)["services"]["api"]
    assert service_environment(api, env)["DATABASE_URL"] == "postgresql://u:p@elsewhere:6543/d"


def test_no_default_holds_another_variable(raw: dict[str, Any]) -> None:
    """docker-compose 1.29 takes a default literally: `${A:-x${B}}` gives the text `x${B}`
    (and `config --quiet` does not object), so no default may interpolate anything."""

    def strings(node: Any) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [text for value in node.values() for text in strings(value)]
        if isinstance(node, list):
            return [text for value in node for text in strings(value)]
        return []

    nested = [
        text for text in strings(raw)
        if re.search(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?[-?+][^}]*(?<!\$)\$(?!\$)", text.replace("$$", ""))
    ]  # fmt: skip
    assert nested == []


def test_db_is_postgres_with_a_volume_and_a_readiness_check(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    db = services["db"]
    image, _, tag = db["image"].partition(":")
    assert image == "postgres" and tag and tag != "latest"
    assert load_compose()["services"]["db"]["image"] == f"${{POSTGRES_IMAGE:-{db['image']}}}", "a setting"
    assert volume_mounts(db)["/var/lib/postgresql/data"][0] in compose["volumes"]
    test = db["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and test[1].startswith("pg_isready ")
    # The check names the user and database the image creates ($$ reaches the container as $).
    assert '-U "${POSTGRES_USER}"' in test[1] and '-d "${POSTGRES_DB}"' in test[1]
    assert set(db["environment"]) == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    assert db["restart"] == "unless-stopped"


def test_every_command_is_a_real_dotrec_command(services: dict[str, dict[str, Any]]) -> None:
    migrate = parse_dotrec(service_argv(services["migrate"]))
    assert (migrate.parent.info_name, migrate.info_name) == ("db", "upgrade")

    script = shell_script(service_argv(services["train"]))
    assert script is not None
    train_env = service_environment(services["train"], {})
    invocations = dotrec_invocations(script, {**train_env, "TRAIN_ARGS": "--epochs 3 --dim 16"})
    assert [argv[:2] for argv in invocations] == [["dotrec", "import"], ["dotrec", "train"]]
    imported, trained = (parse_dotrec(argv) for argv in invocations)
    assert imported.params["source"] is None, "import reads DATA_SOURCE"
    assert trained.params["data"] is None, "train reads the database"
    assert trained.params["epochs"] == 3 and trained.params["dim"] == 16, "TRAIN_ARGS reach dotrec train"

    serve = parse_dotrec(service_argv(services["api"]))
    assert serve.info_name == "serve"
    assert serve.params["host"] == "0.0.0.0", "reachable from outside the container"
    assert serve.params["workers"] == 1


def test_train_imports_only_into_an_empty_database(services: dict[str, dict[str, Any]]) -> None:
    script = shell_script(service_argv(services["train"]))
    assert script is not None
    assert script.startswith("set -eu\n")
    import_line = next(line for line in script.splitlines() if "dotrec import" in line)
    assert "--if-empty" in import_line.split()
    assert script.rstrip().splitlines()[-1].startswith("exec dotrec train"), "train's exit code is the job's"


def test_depends_on_gives_migrate_then_train_then_api(services: dict[str, dict[str, Any]]) -> None:
    assert depends_on(services["migrate"]) == {"db": "service_healthy"}
    assert depends_on(services["train"]) == {
        "db": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    assert depends_on(services["api"]) == {
        "db": "service_healthy",
        "migrate": "service_completed_successfully",
        "train": "service_completed_successfully",
    }
    assert depends_on(services["proxy"]) == {"api": "service_healthy"}
    assert start_order(services, list(services)) == ["db", "migrate", "train", "api", "proxy"]


def test_one_shot_services_do_not_restart_or_report_health(services: dict[str, dict[str, Any]]) -> None:
    for name in ONE_SHOT_SERVICES:
        assert services[name]["restart"] == "no", name
        assert services[name]["healthcheck"] == {"disable": True}, name
    for name in ("db", "api", "proxy"):
        assert services[name]["restart"] == "unless-stopped", name


def test_the_dotrec_services_share_one_image_built_here(services: dict[str, dict[str, Any]]) -> None:
    stages = [i.value.split()[-1] for i in parse_dockerfile(DOCKERFILE.read_text()) if i.keyword == "FROM"]
    for name in DOTREC_SERVICES:
        service = services[name]
        assert service["image"] == services["api"]["image"] == "dotrec:local", name
        assert service["build"]["context"] == "."
        assert service["build"]["target"] == stages[-1], "the runtime stage"
    assert (REPO_ROOT / services["api"]["build"]["context"] / "Dockerfile").is_file()


def test_volumes_share_models_and_keep_data(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    env = service_environment(services["api"], {})
    models_dir, data_dir = env["MODELS_DIR"], env["DATA_DIR"]
    train, api = volume_mounts(services["train"]), volume_mounts(services["api"])
    assert train[models_dir] == ("models", False), "train writes models"
    assert api[models_dir] == ("models", True), "api only reads them"
    assert train[data_dir] == ("data", False), "downloads are kept between runs"
    assert train["/import"] == ("./data", True), "a host folder for DATA_SOURCE=/import/..."
    named = {
        source for service in services.values() for source, _ in volume_mounts(service).values()
        if not source.startswith((".", "/"))
    }  # fmt: skip
    assert named == set(compose["volumes"]) == {"pgdata", "models", "data"}
    # The image creates these folders (owned by its user), so fresh volumes are writable.
    image_env: dict[str, str] = {}
    for instruction in parse_dockerfile(DOCKERFILE.read_text()):
        if instruction.keyword == "ENV" and instruction.stage == 1:
            image_env.update(env_assignments(instruction))
    assert (image_env["MODELS_DIR"], image_env["DATA_DIR"]) == (models_dir, data_dir)


def test_only_the_proxy_is_published_and_on_loopback_by_default(
    raw: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """Clients reach the api through the proxy only; the proxy's port is 127.0.0.1:8000 unless
    PROXY_BIND and PROXY_PORT say otherwise."""
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert published == {"proxy": ["127.0.0.1:8000:8000"]}
    moved = interpolate_tree(raw, {"PROXY_BIND": "0.0.0.0", "PROXY_PORT": "9000", "API_WORKERS": "4"})
    assert moved["services"]["proxy"]["ports"] == ["0.0.0.0:9000:8000"]
    assert parse_dotrec(service_argv(moved["services"]["api"])).params["workers"] == 4
    assert not any("expose" in service for service in services.values())


def test_networks_keep_the_backend_without_a_route_out(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    """Every service is on backend, which is internal; only the proxy (its published port) and
    train (DATA_SOURCE downloads) are also on edge, the network with a route out."""
    assert compose["networks"]["backend"] == {"internal": True}
    assert not (compose["networks"]["edge"] or {}).get("internal")
    on = {name: set(service["networks"]) for name, service in services.items()}
    assert all("backend" in networks for networks in on.values()), on
    assert {name for name, networks in on.items() if "edge" in networks} == {"proxy", "train"}


def test_the_build_takes_the_base_image_and_the_offline_wheelhouse(raw: dict[str, Any]) -> None:
    """PYTHON_IMAGE reaches the Dockerfile's ARG (same default); WHEELHOUSE_URL and BUILD_NETWORK
    are empty and "default" unless deploy/offline-build.sh sets them."""
    dockerfile_args: dict[str, str] = {}
    for instruction in parse_dockerfile(DOCKERFILE.read_text()):
        if instruction.keyword == "ARG":
            dockerfile_args.update(env_assignments(instruction))
    bare = interpolate_tree(raw, {})["services"]["api"]["build"]
    assert set(bare["args"]) <= set(dockerfile_args), "every build argument is an ARG of the Dockerfile"
    assert bare["args"] == {"PYTHON_IMAGE": dockerfile_args["PYTHON_IMAGE"], "WHEELHOUSE_URL": ""}
    assert bare["network"] == "default"
    offline = {
        "WHEELHOUSE_URL": "http://127.0.0.1:8731/",
        "BUILD_NETWORK": "host",
        "PYTHON_IMAGE": "m/py:3.11",
    }
    build = interpolate_tree(raw, offline)["services"]["api"]["build"]
    assert build["args"] == {"PYTHON_IMAGE": "m/py:3.11", "WHEELHOUSE_URL": "http://127.0.0.1:8731/"}
    assert build["network"] == "host"


def test_the_proxy_balances_over_the_api_replicas(services: dict[str, dict[str, Any]]) -> None:
    proxy = services["proxy"]
    assert "profiles" not in proxy, "in front by default: started by a plain `docker compose up`"
    image, _, tag = proxy["image"].partition(":")
    assert image == "nginx" and tag and tag != "latest"
    assert load_compose()["services"]["proxy"]["image"] == f"${{NGINX_IMAGE:-{proxy['image']}}}", "a setting"
    script = shell_script(service_argv(proxy))
    assert script is not None
    config = script.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    api_port = parse_dotrec(service_argv(services["api"])).params["port"]
    listen = int(re.search(r"listen (\d+);", config).group(1))  # type: ignore[union-attr]
    assert proxy["ports"] == [f"127.0.0.1:8000:{listen}"]
    assert "resolver 127.0.0.11 " in config, "Docker's DNS, re-read as replicas come and go"
    assert f"set $api_upstream http://api:{api_port};" in config
    assert "proxy_pass $api_upstream;" in config
    body = int(re.search(r"client_max_body_size (\d+);", config).group(1))  # type: ignore[union-attr]
    assert body == Settings.model_fields["max_body_bytes"].default
    assert config.count("{") == config.count("}")
    assert script.rstrip().endswith("exec nginx -g 'daemon off;'")


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("$$SET ${SET} $SET", env) == "$SET v v"
    assert interpolate("${EMPTY:-d} ${EMPTY-d} ${UNSET-d} ${UNSET:-${SET}}", env) == "d  d v"
    assert interpolate("${SET:+alt}${EMPTY:+alt}${EMPTY+alt}", env) == "altalt"
    with pytest.raises(ValueError, match="UNSET: needed"):
        interpolate("${UNSET:?needed}", env)


def test_the_proxy_holds_slow_and_oversized_clients(services: dict[str, dict[str, Any]]) -> None:
    """Timeouts for every stage of a client's request and limits on its headers (issue 15): a
    client that sends slowly or too much is dropped by nginx before the api sees anything."""
    script = shell_script(service_argv(services["proxy"]))
    assert script is not None
    config = script.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    directives = dict(re.findall(r"^\s*([a-z_]+) ([^;]+);", config, re.MULTILINE))
    for timeout in ("client_header_timeout", "client_body_timeout", "keepalive_timeout", "send_timeout"):
        value = re.fullmatch(r"(\d+)s", directives.get(timeout, ""))
        assert value and 0 < int(value.group(1)) <= 60, f"{timeout}: {directives.get(timeout)}"
    count, size = re.fullmatch(r"(\d+) (\d+)k", directives["large_client_header_buffers"]).groups()  # type: ignore[union-attr]
    assert int(count) * int(size) <= 64, "at most 64 KiB of headers a request"
    assert directives["server_tokens"] == "off"


COMPOSE_CLIS = {"docker-compose (1.29)": compose_v1, "docker compose (v2)": compose_v2}


@pytest.mark.parametrize("cli", list(COMPOSE_CLIS))
def test_the_compose_cli_accepts_the_file(cli: str) -> None:
    """The real `docker-compose config` (1.29) and `docker compose config` (v2) accept the file, with
    .env.example as the env file; `config` reads the file only, no engine needed."""
    docker = which("docker")
    found = compose_v1() if cli.startswith("docker-compose") else (compose_v2(docker) if docker else None)
    if found is None:
        pytest.skip(f"no {cli} here to validate the file with (the compose test installs docker-compose)")
    done = subprocess.run(
        [*found, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed = subprocess.run(
        [*found, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "config", "--services"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert set(listed.stdout.split()) == {"db", "migrate", "train", "api", "proxy"}, listed.stderr
    resolved = subprocess.run(
        [*found, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "config"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    services = yaml.safe_load(resolved.stdout)["services"]
    for name in DOTREC_SERVICES:
        assert services[name]["environment"]["DATABASE_URL"] == "postgresql://dotrec:dotrec@db:5432/dotrec"
