"""Atomic file writes: a crash never leaves a half-written output file.

Every writer renders its whole content in memory (or in a temporary file in
the same directory) and then ``os.replace``-s it over the target, which is
atomic on POSIX file systems.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; outputs should get the usual 0666 & ~umask.
        os.chmod(tmp_name, 0o666 & ~_current_umask())
        os.replace(tmp_name, target)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return target


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically, with ``\\n`` line endings."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as stable, indented JSON (sorted keys) atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


@contextmanager
def replaced_directory(out: str | Path, *, keep_others: bool = False) -> Iterator[Path]:
    """A staging folder beside ``out`` that replaces ``out`` when the block ends.

    Where the block raises (or is interrupted), the staging folder goes and
    ``out`` stays as it was: a directory is never left half old, half new
    (but for the instant of the swap with ``keep_others``). With
    ``keep_others`` only the entries the block wrote replace their
    namesakes in ``out``; other files there stay.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staging.chmod(0o777 & ~_current_umask())  # mkdtemp makes it private
        yield staging
        if not keep_others or not out.exists():
            if out.exists():
                shutil.rmtree(out)
            os.replace(staging, out)
            return
        for entry in sorted(staging.iterdir()):
            target = out / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
        staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
