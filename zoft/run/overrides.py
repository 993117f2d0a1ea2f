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
from omegaconf import DictConfig, OmegaConf
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
    field_range,
    out_of_range,
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
    """Refuse unknown group options, unknown keys, values of the wrong type or out of range."""
    overrides = [a for a in arguments if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise OverrideError(f"could not parse the command line: {err}") from err
    line = _CommandLine.of(parsed)
    for override in parsed:
        key = override.key_or_group
        if override.is_delete():
            continue
        if key.startswith("hydra/"):
            _check_hydra_group(key, override)
        elif key.startswith("hydra"):
            continue
        elif key in GROUPS:
            _check_group(key, override)
        else:
            _check_key(key, override, line)


@dataclasses.dataclass
class _CommandLine:
    """What the command line selects: each config group's options, the optimizers (None when
    an experiment may sweep them), and the effective defaults, composed only when an error
    quotes one."""

    groups: dict[str, list[str]]
    optimizers: list[str] | None
    _composed: list[DictConfig | None] = dataclasses.field(default_factory=list)

    @classmethod
    def of(cls, parsed: list[Override]) -> _CommandLine:
        groups = {
            o.key_or_group: [str(v) for v in _values(o)]
            for o in parsed
            if o.key_or_group in GROUPS and not o.is_delete()
        }
        optimizers = groups.get("optimizer")
        if optimizers is None and "experiment" not in groups:
            optimizers = [_root_default("optimizer")]
        return cls(groups, optimizers)

    def default(self, key: str) -> Any:
        """The value `key` takes in the run this command line composes (not the schema's), or
        None when it cannot be told: an experiment (its grid sets values per cell), or a key of
        a group whose option is swept."""
        group = key.partition(".")[0]
        if "experiment" in self.groups or len(self.groups.get(group, [None])) > 1:
            return None
        if not self._composed:
            chosen = [f"{g}={v[0]}" for g, v in self.groups.items() if len(v) == 1]
            self._composed.append(_compose(chosen))
        composed = self._composed[0]
        return None if composed is None else OmegaConf.select(composed, key, default=None)


def _root_default(group: str) -> str:
    """The option conf/config.yaml's defaults list selects for `group`."""
    root = OmegaConf.load(importlib.resources.files("zoft.conf") / "config.yaml")
    for entry in root.defaults:
        if isinstance(entry, DictConfig) and group in entry:
            return str(entry[group])
    raise OverrideError(f"conf/config.yaml selects no {group}")


def _compose(overrides: list[str]) -> DictConfig | None:
    """The run config of these group selections (None where it cannot be composed here)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from zoft.run.schemas import register_configs

    if GlobalHydra.instance().is_initialized():
        return None
    register_configs()
    try:
        with initialize_config_module(config_module="zoft.conf", version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except Exception:  # only the quoted default is lost; the error itself stands
        return None


def hydra_group_options(group: str) -> list[str]:
    """The options of one of Hydra's own groups (hydra/launcher: its plugins' and zoft's)."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    if GlobalHydra.instance().is_initialized():
        loader = GlobalHydra.instance().config_loader()
        return loader.get_group_options(group, results_filter=ObjectType.CONFIG)
    with initialize_config_module(config_module="zoft.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        return loader.get_group_options(group, results_filter=ObjectType.CONFIG)


def _check_hydra_group(group: str, override: Override) -> None:
    options = hydra_group_options(group)
    if not options:
        return  # not a group: Hydra's own error names it
    for value in _values(override):
        if str(value) not in options:
            raise OverrideError(
                f"Unknown {group} '{value}' ({override.input_line}).{_close(str(value), options)} "
                f"Known options of {group}: {', '.join(options)}."
            )


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


def _optimizer_schemas(names: list[str] | None) -> dict[str, type]:
    """The schema of each named optimizer (every optimizer's when the names are unknown)."""
    from zoft.optim import METHODS

    known = list(METHODS)
    return {n: METHODS.config(n) for n in (names or known) if n in known}


def _schemas(parent: str, line: _CommandLine) -> list[type]:
    if parent == "":
        return [ZoftConfig]
    if parent == "optimizer":
        return list(_optimizer_schemas(line.optimizers).values())
    return _NESTED.get(parent, [])


def _fields(schemas: list[type]) -> dict[str, type]:
    found: dict[str, type] = {}
    for schema in schemas:
        for f in dataclasses.fields(schema):
            found.setdefault(f.name, schema)
    return found


def _check_method_key(key: str, leaf: str, override: Override, line: _CommandLine) -> None:
    """optimizer.<leaf> must exist for every optimizer the command line runs: Hydra would ask
    for `+optimizer.<leaf>`, after which the key would be accepted and ignored."""
    every = _optimizer_schemas(None)
    owners = [n for n, schema in every.items() if leaf in _fields([schema])]
    if line.optimizers is None and owners:
        return  # an experiment picks the optimizers: a key one of them has may be meant
    for name, schema in _optimizer_schemas(line.optimizers).items():
        if leaf in _fields([schema]) or not owners:
            continue
        keys = ", ".join(f"optimizer.{n}" for n in sorted(_fields([schema])))
        raise OverrideError(
            f"'{key}' ({override.input_line}) does not exist for optimizer={name}; it is a key "
            f"of {', '.join(f'optimizer={o}' for o in owners)}. Keys of optimizer={name}: {keys}."
        )


def _check_key(key: str, override: Override, line: _CommandLine | None = None) -> None:
    line = line or _CommandLine({}, None)
    parent, _, leaf = key.rpartition(".")
    if parent == "optimizer":
        _check_method_key(key, leaf, override, line)
    schemas = _schemas(parent, line)
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
        _check_value(fields[leaf], leaf, key, value, override.input_line, line)


def _check_value(
    schema: type, leaf: str, key: str, value: Any, line: str, command: _CommandLine
) -> None:
    """The value's type, then its declared range; a message quotes the effective default."""
    if isinstance(value, str) and "${" in value:
        return  # an interpolation, resolved by Hydra
    node = OmegaConf.structured(schema)
    try:
        node[leaf] = value
    except OmegaConfBaseException as err:
        expected = typing.get_type_hints(schema)[leaf]
        default = command.default(key)
        example = f" (default {key}={_plain(default)})" if default is not None else ""
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
    valid = field_range(schema, leaf)
    converted = node[leaf]
    if valid is not None and isinstance(converted, int | float) and converted not in valid:
        default = command.default(key)
        example = f" (default {key}={_plain(default)})" if default is not None else ""
        raise OverrideError(f"{out_of_range(key, converted, valid)}{example}.")


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
