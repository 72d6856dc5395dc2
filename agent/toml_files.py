"""Reading TOML input files with one clear error for a missing or malformed file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from agent.errors import InputError


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed table of ``path``; InputError if it is missing or not valid TOML."""
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid TOML: {exc}") from None
