"""The `current` link of a folder of versions (models, export caches): moved atomically."""

from __future__ import annotations

import os
from pathlib import Path

CURRENT_LINK = "current"


def point_current_at(folder: Path, version: str) -> None:
    """Atomically make `folder/current` a relative symlink to `version` (a name in `folder`):
    readers see the old target or the new one, never a missing link."""
    temporary = folder / f".{CURRENT_LINK}-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(version)
    os.replace(temporary, folder / CURRENT_LINK)
