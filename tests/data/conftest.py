"""Fixtures of the data-layer tests."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


@pytest.fixture(scope="session")
def shared_archive() -> Callable[[str], Path | None]:
    """The root conftest's `shared_archive(name)`: the real archive `name`, or None.

    Loaded from its file because `tests` is no package and the name `conftest` is ambiguous
    between the folders' conftest modules.
    """
    spec = importlib.util.spec_from_file_location("dotrec_tests_root_conftest", ROOT_CONFTEST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.shared_archive
