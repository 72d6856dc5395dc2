"""Run configuration: one frozen, typed context object per pipeline.

Precedence is CLI, then environment (``BVLM_<FIELD>`` upper-case), then the
field default; environment strings are converted to the field's type. The
graph receives the context as ``graph.invoke(..., context=ctx)`` and the same
object is dumped to ``run.json``. Nodes never read the environment.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from agent.errors import InputError

ENV_PREFIX = "BVLM_"
T = TypeVar("T")


def _doc(description: str) -> dict[str, str]:
    return {"description": description}


@dataclass(frozen=True, kw_only=True)
class CommonContext:
    """Settings shared by every pipeline."""

    backend: Literal["classical", "openai", "hybrid"] = field(
        default="classical", metadata=_doc("perception backend: classical (no model), openai, hybrid")
    )
    base_url: str | None = field(
        default=None, metadata=_doc("OpenAI-compatible server URL, e.g. http://localhost:8000/v1")
    )
    vlm_model: str | None = field(default=None, metadata=_doc("served vision-language model name"))
    llm_model: str | None = field(
        default=None, metadata=_doc("text model for merging/chat (defaults to vlm_model)")
    )
    structured: Literal["json_schema", "function_calling"] = field(
        default="json_schema", metadata=_doc("how structured answers are requested from the server")
    )
    prompts_dir: str | None = field(
        default=None, metadata=_doc("folder replacing prompts/ (same file names)")
    )
    max_concurrency: int = field(default=8, metadata=_doc("parallel model calls / graph tasks"))
    max_model_retries: int = field(
        default=2, metadata=_doc("retries of a model call for transport errors or invalid answers")
    )
    request_timeout_s: float = field(default=120.0, metadata=_doc("timeout of one model request"))
    disable_thinking: bool = field(
        default=True,
        metadata=_doc("send chat_template_kwargs enable_thinking=false (vLLM/Qwen); off for OpenAI"),
    )
    seed: int = field(default=0, metadata=_doc("seed of every random choice"))

    # The least each setting may be (a float bound: more than it): checked on construction,
    # so a bad value from the command line, the environment or a stored run stops before
    # any output is written.
    _AT_LEAST = {"max_concurrency": 1, "max_model_retries": 0}
    _MORE_THAN = {"request_timeout_s": 0.0}

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and math.isnan(value):
                raise InputError(item.name, "must be a number, got nan")
        if self.prompts_dir is not None and not Path(self.prompts_dir).is_dir():
            raise InputError(self.prompts_dir, "prompts folder not found (--prompts)")
        if not 0 <= self.seed < 2**32:  # numpy's and torch's seeds
            raise InputError("seed", f"must be 0..{2**32 - 1}, got {self.seed}")
        for name, least in self._AT_LEAST.items():
            value = getattr(self, name)
            if value is not None and value < least:
                raise InputError(name, f"must be at least {least}, got {value}")
        for name, bound in self._MORE_THAN.items():
            value = getattr(self, name)
            if value is not None and not value > bound:
                raise InputError(name, f"must be more than {bound}, got {value}")


def _convert(value: str, annotation: Any, name: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and type(None) in args):
        inner = [a for a in args if a is not type(None)]
        if value == "" and type(None) in args:
            return None
        return _convert(value, inner[0], name) if len(inner) == 1 else value
    if origin is Literal:
        if value not in args:
            raise InputError(f"{ENV_PREFIX}{name.upper()}", f"must be one of {', '.join(map(str, args))}")
        return value
    try:
        if annotation is bool:
            if value.lower() in {"1", "true", "yes", "on"}:
                return True
            if value.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        if annotation in (int, float, str, Path):
            return annotation(value)
    except ValueError:
        raise InputError(f"{ENV_PREFIX}{name.upper()}", f"cannot read {value!r} as {annotation.__name__}") from None
    return value


def resolve_context(
    cls: type[T], cli_values: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> T:
    """Build ``cls`` with CLI values first, then ``BVLM_*`` environment, then defaults.

    ``cli_values`` entries that are ``None`` count as "not given on the CLI".
    """
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        cli_value = cli_values.get(spec.name)
        env_value = environ.get(f"{ENV_PREFIX}{spec.name.upper()}")
        if cli_value is not None:
            values[spec.name] = cli_value
        elif env_value is not None:
            values[spec.name] = _convert(env_value, hints[spec.name], spec.name)
    return cls(**values)


def context_to_dict(ctx: Any) -> dict[str, Any]:
    """The context as a JSON-ready dict (for run.json)."""
    return {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in dataclasses.asdict(ctx).items()
    }


# Settings that change how a run talks to its server, not what it computes: a resumed run
# takes the values given now (the server may have moved or be busier).
RUNTIME_SETTINGS = frozenset({"base_url", "max_concurrency", "request_timeout_s"})


def given_settings(ctx: Any, cli_values: Mapping[str, Any], flags: Mapping[str, str],
                   environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, Any]]:
    """The settings of ``ctx`` given on the command line or in a ``BVLM_*`` variable.

    ``{name: (where it was given: its flag in ``flags`` or the variable, its value in ctx as
    JSON)}``; what :func:`resumed_context` checks against the settings a run started with.
    """
    environ = os.environ if environ is None else environ
    given: dict[str, tuple[str, Any]] = {}
    for name, value in context_to_dict(ctx).items():
        if cli_values.get(name) is not None:
            given[name] = (flags.get(name, name), value)
        elif f"{ENV_PREFIX}{name.upper()}" in environ:
            given[name] = (f"{ENV_PREFIX}{name.upper()}", value)
    return given


def context_fields(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of the context class ``cls`` in ``config`` (run.json may hold more)."""
    names = {spec.name for spec in dataclasses.fields(cls)}
    return {key: value for key, value in config.items() if key in names}


def resumed_context(cls: type[T], stored: Mapping[str, Any],
                    given: Mapping[str, tuple[str, Any]], run_dir: Path) -> T:
    """The settings a resumed run continues with: those it started with (``stored``).

    A setting in ``given`` (:func:`given_settings`) that would change the
    results and differs from the stored one is an InputError naming
    ``run_dir``: a resume continues a run, it does not change it (the results
    would mix two configurations, and run.json would name only one).
    ``RUNTIME_SETTINGS`` take the given values.
    """
    values = context_fields(cls, stored)
    for name, (where, value) in given.items():
        if name in RUNTIME_SETTINGS:
            values[name] = value
        elif values.get(name) != value:
            shown = where if isinstance(value, bool) else f"{where} {value}"
            raise InputError(run_dir, f"{shown}: this run started with {name} = {values.get(name)!r}; "
                             "--resume continues a run with the settings it started with "
                             "(--overwrite starts it again)")
    return cls(**values)
