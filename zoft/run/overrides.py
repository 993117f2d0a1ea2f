"""Command-line overrides checked before Hydra composes them, so a typo gets a message that names
it, suggests close matches and lists the valid choices (Hydra's own errors name the key but
suggest nothing, and a wrong type only surfaces as an OmegaConf conversion error)."""

from __future__ import annotations

import dataclasses
import difflib
import enum
import importlib.resources
import typing
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zoft.config import (
    ExperimentInfo,
    GuardConfig,
    LoggerConfig,
    LoraConfig,
    ModelConfig,
    TaskConfig,
    TinyConfig,
    ZoftConfig,
)
from zoft.errors import ZoftError

GROUPS = ("model", "task", "optimizer", "logger", "experiment")
# the schema of each config node a dotted key can reach (optimizer: every optimizer's schema)
_NESTED = {
    "model": [ModelConfig],
    "model.tiny": [TinyConfig],
    "task": [TaskConfig],
    "logger": [LoggerConfig],
    "guard": [GuardConfig],
    "experiment": [ExperimentInfo],
    "optimizer.lora": [LoraConfig],
}


class OverrideError(ZoftError):
    """A command-line override naming a key, option or value that does not exist."""


def group_options(group: str) -> list[str]:
    """The YAML names of a config group (conf/<group>/*.yaml)."""
    folder = importlib.resources.files("zoft.conf") / group
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def check_overrides(arguments: list[str]) -> None:
    """Refuse unknown group options, unknown keys and values of the wrong type."""
    overrides = [a for a in arguments if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise OverrideError(f"could not parse the command line: {err}") from err
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") or override.is_delete():
            continue
        if key in GROUPS:
            _check_group(key, override)
        else:
            _check_key(key, override)


def _values(override: Override) -> list[Any]:
    """The values an override names; none for sweeps that cannot be listed (glob, interval)."""
    if override.is_sweep_override():
        try:
            return list(override.sweep_iterator())
        except HydraException:
            return []
    return [override.value()]


def _close(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _check_group(group: str, override: Override) -> None:
    options = group_options(group)
    for value in _values(override):
        if str(value) not in options:
            raise OverrideError(
                f"Unknown {group} '{value}' ({override.input_line}).{_close(str(value), options)} "
                f"Known {group}s: {', '.join(options)}."
            )


def _schemas(parent: str) -> list[type]:
    if parent == "":
        return [ZoftConfig]
    if parent == "optimizer":
        from zoft.optim import OPTIMIZERS

        return [OPTIMIZERS.config(name) for name in OPTIMIZERS]
    return _NESTED.get(parent, [])


def _fields(schemas: list[type]) -> dict[str, type]:
    found: dict[str, type] = {}
    for schema in schemas:
        for f in dataclasses.fields(schema):
            found.setdefault(f.name, schema)
    return found


def _check_key(key: str, override: Override) -> None:
    parent, _, leaf = key.rpartition(".")
    schemas = _schemas(parent)
    if not schemas:
        raise OverrideError(f"Unknown config key '{key}' ({override.input_line}).")
    fields = _fields(schemas)
    if leaf not in fields:
        where = f"'{parent}'" if parent else "the run config"
        prefix = f"{parent}." if parent else ""
        names = [prefix + n for n in sorted(fields)]
        raise OverrideError(
            f"Unknown config key '{key}' ({override.input_line}).{_close(key, names)} Keys of "
            f"{where}: {', '.join(names)}."
        )
    if leaf in GROUPS or (parent == "" and leaf == "guard"):
        return
    for value in _values(override):
        # an optimizer key's default differs per optimizer: show none rather than a wrong one
        _check_type(fields[leaf], leaf, key, value, override.input_line, parent != "optimizer")


def _check_type(
    schema: type, leaf: str, key: str, value: Any, line: str, show_default: bool
) -> None:
    if isinstance(value, str) and "${" in value:
        return  # an interpolation, resolved by Hydra
    node = OmegaConf.structured(schema)
    default = node[leaf]
    try:
        node[leaf] = value
    except OmegaConfBaseException as err:
        expected = typing.get_type_hints(schema)[leaf]
        shown = show_default and default is not None
        example = f" (default {key}={_plain(default)})" if shown else ""
        choices = _enum_of(expected)
        if choices is not None:  # a closed set: name the close matches and every valid value
            valid = [str(m.value) for m in choices]
            raise OverrideError(
                f"Invalid value for '{key}' ({line}): it takes {_type_name(expected)}{example}."
                f"{_close(str(value), valid)}"
            ) from None
        detail = str(err).splitlines()[0]
        raise OverrideError(
            f"Wrong type for '{key}' ({line}): it takes {_type_name(expected)}{example}. {detail}"
        ) from None


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(getattr(value, "value", value))


def _enum_of(annotation: Any) -> type[enum.Enum] | None:
    """The Enum an annotation allows (`Amp | None` allows Amp), if any."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


def _type_name(annotation: Any) -> str:
    choices = _enum_of(annotation)
    if choices is not None:
        optional = type(None) in typing.get_args(annotation)
        names = [str(m.value) for m in choices] + (["null"] if optional else [])
        return "one of " + ", ".join(names)
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(annotation, str(annotation).replace("typing.", ""))
