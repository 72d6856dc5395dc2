"""Run directories: each run owns its output directory.

Layout shared by every pipeline::

    OUT/
      run.json                 what ran (written last, atomically)
      calls.jsonl              model-call log (model backends only)
      .bvlm/meta.json          kind of run and its input, written first
      .bvlm/checkpoints.sqlite LangGraph SQLite checkpointer (one thread per run)
      .bvlm/cache/             arrays referenced by path from graph state

A directory that holds another run is refused unless ``resume`` or
``overwrite`` is given.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.atomic import write_json_atomic
from agent.errors import InputError

META_DIR = ".bvlm"


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory."""

    path: Path

    @property
    def meta_dir(self) -> Path:
        return self.path / META_DIR

    @property
    def meta_file(self) -> Path:
        return self.meta_dir / "meta.json"

    @property
    def checkpoint_db(self) -> Path:
        return self.meta_dir / "checkpoints.sqlite"

    @property
    def cache_dir(self) -> Path:
        return self.meta_dir / "cache"

    @property
    def calls_log(self) -> Path:
        return self.path / "calls.jsonl"

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    def read_meta(self) -> dict[str, Any]:
        """The meta written by :func:`prepare_run_dir`; InputError if absent or corrupt."""
        if not self.meta_file.is_file():
            raise InputError(self.path, "not a run directory of this tool (no .bvlm/meta.json)")
        try:
            meta = json.loads(self.meta_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(self.meta_file, f"corrupt run metadata: {exc}") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("context"), dict):
            raise InputError(self.meta_file, "corrupt run metadata: not a table of this tool's fields")
        return meta


@contextmanager
def open_checkpoints(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to a run's checkpoint database (created where absent), closed on exit.

    A damaged file (a disk error, a copy cut short, another program's file in
    its place) is one InputError naming it, checked before LangGraph reads it.
    """
    connection = sqlite3.connect(path, check_same_thread=False)
    try:
        try:
            # WAL with synchronous=NORMAL survives a killed process (not a power cut) at a
            # fraction of the cost of a full fsync per checkpoint.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            (verdict,) = connection.execute("PRAGMA quick_check(1)").fetchone()
        except sqlite3.DatabaseError as exc:
            verdict = str(exc)
        if verdict != "ok":
            raise InputError(path, f"damaged checkpoint database ({verdict}): the run cannot be "
                                   "continued or replayed from it; run it again with --overwrite")
        yield connection
    finally:
        connection.close()


def input_fingerprint(input_dir: str | Path, out: str | Path) -> str:
    """SHA-256 of the names, sizes and modification times of every file under ``input_dir``.

    What a resume compares: a recording or session edited in place since the
    run started (new seed labels, a re-simulated video) would otherwise mix
    into the finished frames. Files are not read (image folders can be
    large); files under ``out`` or any other run directory of this tool
    (runs kept inside their input) do not count.
    """
    root = Path(input_dir).resolve()
    runs = {Path(out).resolve(), *(meta.parent.parent for meta in root.rglob(f"{META_DIR}/meta.json"))}
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if not path.is_file() or not runs.isdisjoint(path.parents):
            continue
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def made_from_other_input(results: str | Path, input_dir: str | Path) -> str | None:
    """A warning where the run in ``results`` was made from files other than ``input_dir``'s now.

    None where ``results`` is no run of this tool (any results folder can be
    scored), keeps no fingerprint, or the fingerprints agree. A copy of the
    input with other modification times also differs: hence a warning.
    """
    run = RunDir(Path(results))
    if not run.meta_file.is_file():
        return None
    meta = run.read_meta()
    started_on = meta.get("recording", meta.get("session"))
    fingerprint = meta.get("input_fingerprint")
    if fingerprint is None or fingerprint == input_fingerprint(input_dir, results):
        return None
    return (f"{run.path} was made from {started_on}, whose files differ from {input_dir}'s now "
            "(names, sizes or times): these scores compare two inputs unless one is a copy")


def prepare_run_dir(
    out: str | Path, kind: str, meta: dict[str, Any], *, resume: bool, overwrite: bool,
    input_key: str | None = None,
) -> RunDir:
    """Create or reopen ``out`` for a run of ``kind`` (``pose`` or ``behavior``).

    * empty or absent: created, ``meta`` written;
    * holds a run and ``resume``: must be the same kind and, with
      ``input_key`` (``recording`` or ``session``), the input ``meta`` names
      must be the one the run started on, unchanged where both metas hold an
      ``input_fingerprint`` (:func:`input_fingerprint`); returned as is;
    * holds a run of this tool and ``overwrite``: emptied first (a directory
      of other files, a recording or a session above all, is never emptied,
      nor one that holds the input ``meta[input_key]`` names);
    * otherwise: InputError naming the directory.
    """
    run = RunDir(Path(out))
    if resume and overwrite:
        raise InputError("--resume/--overwrite", "choose one of --resume and --overwrite")
    if run.path.exists() and not run.path.is_dir():
        raise InputError(run.path, "output path exists and is not a directory")
    occupied = run.path.is_dir() and any(run.path.iterdir())
    if occupied and resume:
        previous = run.read_meta()
        if previous.get("kind") != kind:
            raise InputError(run.path, f"holds a {previous.get('kind')} run, cannot resume it as {kind}")
        started_on = previous.get(input_key) if input_key is not None else None
        if started_on is not None and Path(started_on).resolve() != Path(meta[input_key]).resolve():
            raise InputError(run.path, f"holds a run of {started_on}, not of {meta[input_key]}: "
                             f"resume it with that {input_key}, or start again with --overwrite")
        fingerprints = previous.get("input_fingerprint"), meta.get("input_fingerprint")
        if None not in fingerprints and fingerprints[0] != fingerprints[1]:
            raise InputError(run.path, f"its {input_key} {started_on} changed since the run started "
                             "(files added, removed or edited): start again with --overwrite")
        return run
    if resume and not occupied:
        raise InputError(run.path, "nothing to resume: the directory holds no run")
    if occupied and not overwrite:
        if not run.meta_file.is_file():
            raise InputError(run.path, "holds files that are not a run of this tool: choose another --out")
        raise InputError(
            run.path, "already holds files of another run; pass --resume to continue it or --overwrite"
        )
    if occupied:
        if not run.meta_file.is_file():
            raise InputError(run.path, "holds files that are not a run of this tool; --overwrite "
                             "replaces only a run directory: choose another --out")
        given_input = Path(meta[input_key]).resolve() if input_key in meta else None
        if given_input is not None and run.path.resolve() in (given_input, *given_input.parents):
            raise InputError(run.path, f"holds the {input_key} {given_input}: choose another --out")
        for child in run.path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    try:
        run.cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(run.path, f"cannot create the output directory ({exc.strerror})") from None
    write_json_atomic(run.meta_file, {"kind": kind, **meta})
    return run


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape results, for run.json."""
    versions = {"python": platform.python_version()}
    for name in ("behaviorvlm-agent", "numpy", "scipy", "opencv-python-headless", "opencv-contrib-python",
                 "torch", "langgraph", "langchain-core", "langchain-openai", "openai", "pydantic"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
