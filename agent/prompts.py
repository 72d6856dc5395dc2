"""Prompt templates: text files in ``prompts/<pipeline>/<node>.md``.

A template starts with an HTML comment that documents its placeholders; the
comment is stripped before sending. Placeholders use ``$name`` (Python's
``string.Template``) so JSON braces in prompts need no escaping. ``--prompts
DIR`` swaps the whole folder; run.json records each prompt's SHA-256.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from pathlib import Path

from agent.errors import InputError

DEFAULT_PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"
_HEADER = re.compile(r"\A\s*<!--.*?-->\s*", re.DOTALL)


@dataclass(frozen=True)
class Prompt:
    """One loaded template.

    Attributes
    ----------
    name : str
        ``pipeline/node`` (e.g. ``pose/locate_regions``).
    path : Path
        File it was read from.
    text : str
        Template body without the documentation header.
    sha256 : str
        Hash of the whole file, header included.
    """

    name: str
    path: Path
    text: str
    sha256: str

    @property
    def placeholders(self) -> set[str]:
        return {
            match.group("named") or match.group("braced")
            for match in string.Template.pattern.finditer(self.text)
            if match.group("named") or match.group("braced")
        }

    def render(self, **values: object) -> str:
        """Fill every placeholder; a missing value is a programming error (KeyError)."""
        missing = self.placeholders - values.keys()
        if missing:
            raise KeyError(f"prompt {self.name} needs values for {sorted(missing)}")
        return string.Template(self.text).substitute({k: str(v) for k, v in values.items()})


def load_prompt(name: str, prompts_dir: str | Path | None = None) -> Prompt:
    """Load ``<prompts_dir>/<name>.md`` (default: the project's ``prompts/``)."""
    root = DEFAULT_PROMPTS_DIR if prompts_dir is None else Path(prompts_dir)
    path = root / f"{name}.md"
    if not path.is_file():
        raise InputError(path, f"prompt template {name!r} not found in {root}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "prompt template is not UTF-8 text") from None
    return Prompt(name=name, path=path, text=_HEADER.sub("", text, count=1), sha256=hashlib.sha256(raw).hexdigest())


def prompt_hashes(names: list[str], prompts_dir: str | Path | None = None) -> dict[str, str]:
    """``{name: sha256}`` of the given prompts, for run.json."""
    return {name: load_prompt(name, prompts_dir).sha256 for name in names}
