"""What the dashboard's tests share: the browser-side helpers and constants (the fixtures are in conftest)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.api.live_server import LiveServer

ARTIFACTS = Path(os.environ.get("DOTREC_UI_ARTIFACTS", Path(__file__).resolve().parent / "artifacts"))
UI_API_KEY = "ui-key-\u00e9t\u00e9"
"""Non-ASCII on purpose: the page must send it as its UTF-8 bytes."""
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 360, "height": 740}


def chromium_executable() -> str | None:
    """DOTREC_CHROMIUM, else Debian's chromium, else one on PATH."""
    for candidate in (os.environ.get("DOTREC_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@dataclass
class Ui:
    """One browser context (its own cache and sessionStorage) and page, with what went wrong in it."""

    page: Any
    base_url: str
    problems: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    def open(self, path: str, server: LiveServer | None = None) -> Any:
        self.page.goto((server.url if server is not None else self.base_url) + path)
        return self.page

    def allow(self, text: str) -> None:
        """Console errors containing `text` are expected (e.g. a refused key's 403)."""
        self.allowed.append(text)

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(a in p for a in self.allowed)]
