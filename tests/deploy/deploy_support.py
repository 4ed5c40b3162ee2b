"""What the deploy tests share: docker-compose.yml, .env.example, the Dockerfile and .dockerignore
read the way Docker reads them (compose interpolation and environment resolution, Dockerfile
instructions, .dockerignore matching), and `dotrec` argument lists parsed by the real CLI.

There is no Docker engine here, so these readers stand in for it; each follows the documented
rules of the compose specification and the Dockerfile reference for the parts the files use.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer.main
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

DOTREC_SERVICES = ("migrate", "train", "api")
"""The services that run the dotrec image, in the order `docker compose up` starts them."""
ONE_SHOT_SERVICES = ("migrate", "train")
COMPOSE_ONLY_VARIABLES = {"TRAIN_MODE", "TRAIN_ARGS"}
"""Variables of the dotrec services' environment that the train command reads, not app/config.py."""


# --- docker-compose.yml -----------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    """docker-compose.yml as YAML (anchors and `<<` merges resolved), before interpolation."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


class InterpolationError(ValueError):
    """A `${VAR:?message}` whose variable is missing, or a malformed `${...}`."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """`text` with compose's interpolation applied: `$$` is a literal `$`; `$VAR`, `${VAR}`,
    `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}` and
    `${VAR+alt}` as in the compose specification, defaults nesting further `${...}`."""
    value, _ = _interpolate(text, 0, env, closing=False)
    return value


def _interpolate(text: str, i: int, env: Mapping[str, str], closing: bool) -> tuple[str, int]:
    parts: list[str] = []
    while i < len(text):
        char = text[i]
        if closing and char == "}":
            return "".join(parts), i
        if char != "$":
            parts.append(char)
            i += 1
            continue
        following = text[i + 1 : i + 2]
        if following == "$":
            parts.append("$")
            i += 2
        elif following == "{":
            value, i = _braced(text, i + 2, env)
            parts.append(value)
        elif match := _NAME.match(text, i + 1):
            parts.append(env.get(match.group(), ""))
            i = match.end()
        else:
            parts.append("$")
            i += 1
    if closing:
        raise InterpolationError(f"unclosed ${{ in {text!r}")
    return "".join(parts), i


def _braced(text: str, i: int, env: Mapping[str, str]) -> tuple[str, int]:
    match = _NAME.match(text, i)
    if match is None:
        raise InterpolationError(f"invalid interpolation at offset {i} of {text!r}")
    name, i = match.group(), match.end()
    if text[i : i + 1] == "}":
        return env.get(name, ""), i + 1
    operator = next((op for op in _OPERATORS if text.startswith(op, i)), None)
    if operator is None:
        raise InterpolationError(f"invalid interpolation of {name} in {text!r}")
    argument, i = _interpolate(text, i + len(operator), env, closing=True)
    value = env.get(name)
    missing = not value if operator.startswith(":") else value is None
    kind = operator[-1]
    if kind == "-":
        return (argument if missing else value), i + 1  # type: ignore[return-value]
    if kind == "?":
        if missing:
            raise InterpolationError(f"{name}: {argument}")
        return value, i + 1  # type: ignore[return-value]
    return ("" if missing else argument), i + 1


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Every string value of a parsed compose file interpolated (keys are left as they are)."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    return node


def referenced_variables(node: Any) -> set[str]:
    """The names of every variable the compose file interpolates, those inside defaults included
    (`$$` escapes excluded)."""
    if isinstance(node, str):
        found = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)|\$([A-Za-z_][A-Za-z0-9_]*)", node.replace("$$", ""))
        return {braced or bare for braced, bare in found}
    if isinstance(node, dict):
        return set().union(*(referenced_variables(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(referenced_variables(value) for value in node))
    return set()


def read_env_file(path: Path) -> dict[str, str]:
    """A `.env` file as compose reads it: KEY=VALUE lines; blank lines and `#` comments skipped;
    quotes around a value removed; ` #` starts a comment after an unquoted value."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ")
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        values[key.strip()] = value
    return values


def documented_variables(path: Path) -> set[str]:
    """Every NAME a `.env` file mentions as `NAME=...`, set or commented out."""
    return set(re.findall(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=", path.read_text(), re.MULTILINE))


def service_environment(service: Mapping[str, Any], project_env: Mapping[str, str]) -> dict[str, str]:
    """A service's (interpolated) `environment` as its container gets it: an entry without a
    value takes the project environment's value (shell or .env), and is left out without one."""
    declared = service.get("environment") or {}
    if isinstance(declared, list):
        pairs = [
            (item.partition("=")[0], item.partition("=")[2] if "=" in item else None) for item in declared
        ]
    else:
        pairs = list(declared.items())
    resolved: dict[str, str] = {}
    for key, value in pairs:
        if value is None:
            if key in project_env:
                resolved[key] = project_env[key]
            continue
        resolved[key] = _compose_scalar(value)
    return resolved


def _compose_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def service_argv(service: Mapping[str, Any]) -> list[str]:
    """A service's `command` as an argument vector (a string is split the way compose splits it)."""
    command = service["command"]
    if isinstance(command, str):
        return shlex.split(command)
    return [_compose_scalar(item) for item in command]


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """{dependency: condition} of a service (the short list form means service_started)."""
    declared = service.get("depends_on") or {}
    if isinstance(declared, list):
        return dict.fromkeys(declared, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in declared.items()}


def start_order(services: Mapping[str, Mapping[str, Any]], names: list[str]) -> list[str]:
    """`names` ordered so that each comes after everything it depends on (as compose starts them)."""
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered:
            return
        if name in visiting:
            raise ValueError(f"depends_on cycle through {name}")
        visiting.add(name)
        for dependency in depends_on(services[name]):
            visit(dependency)
        visiting.discard(name)
        ordered.append(name)

    for name in names:
        visit(name)
    return [name for name in ordered if name in names]


def volume_mounts(service: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """{container path: (source, read_only)} of a service's short-syntax `volumes`."""
    mounts: dict[str, tuple[str, bool]] = {}
    for entry in service.get("volumes") or []:
        source, target, *mode = entry.split(":")
        mounts[target] = (source, "ro" in (mode[0].split(",") if mode else []))
    return mounts


def shell_script(argv: list[str]) -> str | None:
    """The script of a `sh -c SCRIPT` command, None for any other command."""
    if len(argv) >= 3 and argv[0] in ("sh", "/bin/sh", "bash") and argv[1] == "-c":
        return argv[2]
    return None


_INVOCATION = re.compile(r"(?:^|&&|\|\||;|\bexec\s)\s*(dotrec\s[^;&|\n]*)", re.MULTILINE)


def dotrec_invocations(script: str, env: Mapping[str, str]) -> list[list[str]]:
    """Each `dotrec ...` command line of a shell script, with `$VAR`/`${VAR}` expanded from `env`
    and split into words as sh would (unquoted expansions split on blanks)."""
    invocations = []
    for match in _INVOCATION.finditer(script):
        words = []
        for word in shlex.split(match.group(1)):
            expanded = re.sub(
                r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)",
                lambda m: env.get(m.group(1) or m.group(2), ""),
                word,
            )
            words.extend(expanded.split() if "$" in word else [expanded])
        invocations.append(words)
    return invocations


# --- the dotrec CLI ---------------------------------------------------------------------------------


class NotADotrecCommand(ValueError):
    """An argument list the real `dotrec` CLI refuses (unknown command or option, bad value)."""


def parse_dotrec(argv: list[str]) -> Any:
    """The (click) context the real `dotrec` CLI builds for `argv` (argv[0] == "dotrec"), whose
    `.command.name` and `.params` say what would run; raises NotADotrecCommand for an unknown
    command or option, a missing argument or a value of the wrong type."""
    from app.cli import app

    if not argv or Path(argv[0]).name != "dotrec":
        raise NotADotrecCommand(f"not a dotrec command: {argv}")
    command = typer.main.get_command(app)
    name, rest, parent = "dotrec", list(argv[1:]), None
    try:
        while hasattr(command, "list_commands"):  # a group: its options, then a subcommand
            i = 0
            while i < len(rest) and rest[i].startswith("-"):
                i += 1
            if i == len(rest):
                raise NotADotrecCommand(f"{name}: no command given in {argv}")
            context = command.make_context(name, rest[: i + 1], parent=parent)
            sub = command.get_command(context, rest[i])
            if sub is None:
                raise NotADotrecCommand(f"{name}: no such command {rest[i]!r} in {argv}")
            parent, name, command, rest = context, rest[i], sub, rest[i + 1 :]
        return command.make_context(name, rest, parent=parent)
    except NotADotrecCommand:
        raise
    except Exception as error:  # typer's (vendored click's) UsageError, BadParameter, ...
        raise NotADotrecCommand(f"{argv}: {error}") from error


def settings_variables() -> dict[str, Any]:
    """{ENV_NAME: default} of every field of app.config.Settings."""
    from app.config import Settings

    return {name.upper(): field.default for name, field in Settings.model_fields.items()}


# --- Dockerfile -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    """Upper case: FROM, RUN, COPY, ..."""
    value: str
    """The rest of the logical line, continuations joined with a space."""
    line: int
    stage: int
    """0 for the first FROM's stage, 1 for the next, ..."""

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form CMD/ENTRYPOINT/RUN (or HEALTHCHECK's CMD), else None."""
        value = self.value
        if self.keyword == "HEALTHCHECK":
            value = re.sub(r"^(--\S+\s+)*", "", value)
            if not value.startswith("CMD"):
                return None
            value = value[3:].strip()
        if not value.startswith("["):
            return None
        parsed = json.loads(value)
        return parsed if isinstance(parsed, list) else None

    def options(self) -> dict[str, str]:
        """`--name=value` flags at the start of the value (COPY --from=..., HEALTHCHECK --interval=...)."""
        return dict(re.findall(r"(?:^|\s)--([a-z-]+)=(\S+)", self.value.split(" CMD ")[0]))


def parse_dockerfile(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile: comment lines dropped (inside continuations too),
    backslash continuations joined."""
    instructions: list[Instruction] = []
    stage = -1
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].strip() if continued else stripped)
        if continued:
            continue
        logical = " ".join(part for part in pending if part)
        pending = []
        keyword, _, value = logical.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, value.strip(), start, stage))
    return instructions


def env_assignments(instruction: Instruction) -> dict[str, str]:
    """NAME=value pairs of an ENV (or ARG) instruction."""
    pairs = {}
    for word in shlex.split(instruction.value):
        name, sep, value = word.partition("=")
        pairs[name] = value if sep else ""
    return pairs


# --- .dockerignore ----------------------------------------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match syntax plus `**`) as a regex on slash paths."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    return re.compile("".join(out))


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception, pattern) for each rule of a .dockerignore, in order."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line[1:].strip() if exception else line
        pattern = re.sub(r"/+", "/", pattern).strip("/")
        if pattern:
            rules.append((exception, _glob_regex(pattern)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves `path` (relative to the context, slash-separated) out of the build
    context: the last rule matching the path or one of its parent folders decides."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    result = False
    for exception, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not exception
    return result
