"""`zoft-run --help`, generated from the config schemas (zoft.config and each optimizer's) and the
composed config, so every key is listed with its effective default and the comment that documents
it in the schema: nothing here lists keys by hand, so the help cannot drift from the schema.

Torch-free: the methods' schemas are declared in zoft.optim.configs, apart from their code.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import inspect
import io
import shutil
import textwrap
import tokenize
import typing
from collections.abc import Iterator, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from zoft.config import ZoftConfig

# the groups a user picks options of, in the order the help lists them
GROUPS = ("model", "task", "optimizer", "logger", "experiment", "hydra/launcher")
# the config groups each of which is one node of the run config (experiment sets many nodes)
_NODE_GROUPS = ("model", "task", "optimizer", "logger")
_GROUP_NOTES = {
    "experiment": "a paper table: its model, task, method and sweep; add it with +experiment=",
    "hydra/launcher": "where a -m sweep's cells run: local = joblib processes, slurm = jobs",
}
_FLAGS = (
    ("-m, --multirun", "a sweep: comma lists (seed=0,1,2) and the grid sweeper's blocks; "
     "finished cells are skipped, failed ones recorded"),
    ("--dry-run", "list the cells (of a sweep, or the one run) with their status and run "
     "directory, and run nothing"),
    ("-h, --help", "this help; with overrides, their effective values and the keys of every "
     "group they name (zoft-run optimizer=lozo --help)"),
    ("--hydra-help", "Hydra's own help and flags (--cfg job, --info, --shell-completion, ...)"),
)  # fmt: skip
_EXAMPLES = (
    ("zoft-run", "the CPU demo: FT of the packaged SmolLM2-135M on SST-2 16-shot, 40 steps"),
    ("zoft-run optimizer=mezo optimizer.lr=1e-6 steps=2000", "another method, its keys"),
    ("zoft-run task=rte model=minilm-l6 optimizer=lozo --help", "the keys of those options"),
    ("zoft-run -m optimizer=mezo,lozo seed=0,1,2", "a sweep of 6 cells"),
    ("zoft-run +experiment=mezo_roberta_k16 --dry-run", "a paper table's cells, run nothing"),
    ("zoft-run +experiment=mezo_opt13b_table1 hydra/launcher=slurm hydra.launcher.partition=gpu",
     "the same on SLURM, one job per cell"),
    ("zoft-table --experiment mezo_roberta_k16", "our numbers beside the paper's"),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class KeyHelp:
    """One key of the help: its dotted name, effective value and description."""

    key: str
    value: str
    description: str


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """The comment documenting each field of one dataclass, read from its source: the comment at
    the end of the field's line, else the comment lines right above it (fields it only inherits
    are not included: see field_docs)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}  # line -> comment text
    code_lines: set[int] = set()  # lines holding code (a comment there is a trailing one)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(tok.start[0])
    found: dict[str, str] = {}
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.ClassDef)
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        end = item.end_lineno or item.lineno
        trailing = [comments[n] for n in range(item.lineno, end + 1) if n in comments]
        above: list[str] = []
        line = item.lineno - 1
        while line in comments and line not in code_lines:
            above.insert(0, comments[line])
            line -= 1
        text = " ".join(trailing or above)
        if text and not text.startswith("fmt:"):
            found[item.target.id] = text
    return found


def _own_doc(kind: Any) -> str:
    """The first line of a zoft type's own docstring (an enum or a nested schema), if any."""
    for candidate in (kind, *typing.get_args(kind)):
        doc = candidate.__dict__.get("__doc__") if isinstance(candidate, type) else None
        if doc and candidate.__module__.startswith("zoft"):
            return doc.strip().splitlines()[0].rstrip(".")
    return ""


def _choices(kind: Any) -> list[str] | None:
    """The values an enum-typed field takes (`Amp | None` also takes null)."""
    for candidate in (kind, *typing.get_args(kind)):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            extra = ["null"] if type(None) in typing.get_args(kind) else []
            return [str(m.value) for m in candidate] + extra
    return None


def field_docs(cls: type) -> dict[str, str]:
    """Each field's description: its comment in the most derived class that has one (a subclass
    that only changes a default keeps its base's words), else its type's docstring, plus the
    values an enum field takes."""
    hints = typing.get_type_hints(cls)
    docs: dict[str, str] = {}
    for base in reversed([c for c in cls.__mro__ if dataclasses.is_dataclass(c)]):
        docs.update(field_comments(base))
    for f in dataclasses.fields(cls):
        text = docs.get(f.name) or _own_doc(hints.get(f.name))
        choices = _choices(hints.get(f.name))
        if choices and not all(c in text for c in choices if c != "null"):
            text = (
                f"{text} (one of {', '.join(choices)})" if text else f"one of {', '.join(choices)}"
            )
        docs[f.name] = text
    return docs


def _plain(value: Any) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_plain(v) for v in value) + "]"
    if isinstance(value, str) and value == "":
        return "''"
    return str(value)


def node_keys(node: DictConfig, prefix: str = "", skip: Sequence[str] = ()) -> Iterator[KeyHelp]:
    """The keys of a composed config node, with their values and their schema's descriptions;
    nested schemas (model.tiny, optimizer.lora, guard) are walked into."""
    schema = OmegaConf.get_type(node)
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        return
    docs = field_docs(schema)
    for f in dataclasses.fields(schema):
        if f.name in skip:
            continue
        key = f"{prefix}{f.name}"
        child = node._get_node(f.name)  # the node itself: interpolations stay unresolved
        if isinstance(child, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(child)):
            yield from node_keys(child, f"{key}.")
            continue
        if isinstance(child, ListConfig):
            value = _plain(OmegaConf.to_container(child, resolve=False))
        elif child is not None and OmegaConf.is_interpolation(node, f.name):
            value = str(child._value())
        else:
            value = _plain(node[f.name])
        yield KeyHelp(key, value, docs.get(f.name, ""))


def run_keys(cfg: DictConfig) -> list[KeyHelp]:
    """The run-level keys (ZoftConfig's, guard.* included; the groups and `experiment`, which
    only zoft-table reads, left out)."""
    groups = [f.name for f in dataclasses.fields(ZoftConfig) if f.type in ("Any", Any)]
    return list(node_keys(cfg, skip=[*groups, "experiment"]))


def named_groups(overrides: Sequence[str]) -> list[str]:
    """The config nodes an override names (`optimizer=lozo`, `model.max_length=8`); an experiment
    sets them all."""
    named = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "experiment":
            return list(_NODE_GROUPS)
        head = key.split(".", 1)[0]
        if head in _NODE_GROUPS and head not in named:
            named.append(head)
    return named


def first_values(overrides: Sequence[str]) -> list[str]:
    """The overrides of a sweep's first cell (a sweep list `seed=0,1,2` becomes `seed=0`), so
    `zoft-run -m ... --help` shows the values one cell runs with."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for text, override in zip(overrides, OverridesParser.create().parse_overrides(overrides),
                              strict=True):  # fmt: skip
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()), None)
            text = f"{override.get_key_element()}={first}" if first is not None else None
        if text is not None:
            out.append(text)
    return out


@dataclasses.dataclass
class Composed:
    """What the help shows of one command line: the config, each group's options and choice."""

    cfg: DictConfig
    options: dict[str, list[str]]
    choices: dict[str, str | None]


def compose_for_help(overrides: Sequence[str]) -> Composed:
    """The run config these overrides compose to (torch-free: the methods' schemas are
    declared in zoft.optim.configs)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from zoft.run.schemas import register_configs

    register_configs()
    with initialize_config_module(config_module="zoft.conf", version_base="1.3"):
        cfg = compose("config", first_values(overrides), return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        options = {group: loader.get_group_options(group) for group in GROUPS}
    return Composed(cfg, options, dict(cfg.hydra.runtime.choices))


def _wrap(head: str, text: str, width: int, column: int) -> list[str]:
    """`head` then `text` wrapped into a column (on the next line when head is too wide)."""
    indent = " " * column
    if not text:
        return [head]
    if len(head) + 2 > column:
        body = textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent)
        return [head, *body]
    first = head.ljust(column)
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=indent)


def _section(title: str, rows: Sequence[tuple[str, str]], width: int, column: int) -> list[str]:
    lines = [title]
    for head, text in rows:
        lines += _wrap(f"  {head}", text, width, column)
    return lines + [""]


def _key_section(title: str, keys: Sequence[KeyHelp], width: int) -> list[str]:
    rows = [(f"{k.key}={k.value}", k.description) for k in keys]
    column = min(max((len(head) for head, _ in rows), default=0) + 4, 36)
    return _section(title, rows, width, column)


def render_help(composed: Composed, overrides: Sequence[str], width: int | None = None) -> str:
    """The help text of one command line."""
    width = width or max(60, min(shutil.get_terminal_size((100, 24)).columns, 110))
    cfg, out = composed.cfg, []
    out += [
        "usage: zoft-run [GROUP=OPTION ...] [KEY=VALUE ...] [-m] [--dry-run] [-h] [--hydra-help]",
        "",
        "One fine-tuning or evaluation run (or, with -m, a sweep of them), configured by Hydra",
        "overrides: GROUP=OPTION picks a config file, KEY=VALUE sets one key. A finished run is",
        "never run again; an interrupted one resumes from its checkpoint.",
        "",
    ]
    if overrides:
        out += [f"Values below are those of: {' '.join(overrides)}", ""]
    rows = []
    for group in GROUPS:
        chosen = composed.choices.get(group)
        names = [f"{o}*" if o == chosen else o for o in composed.options.get(group, [])]
        note = _GROUP_NOTES.get(group, "")
        rows.append((f"{'+' if group == 'experiment' else ''}{group}", f"{', '.join(names)}"))
        if note:
            rows.append(("", f"({note})"))
    out += _section("Config groups (GROUP=OPTION; * marks this command line's choice):", rows,
                    width, 18)  # fmt: skip
    out += _key_section("Run keys (KEY=VALUE, at their effective value):", run_keys(cfg), width)
    named = named_groups(overrides)
    for group in named:
        if group in cfg:
            title = f"Keys of {group}={composed.choices.get(group)}:"
            out += _key_section(title, list(node_keys(cfg[group], f"{group}.")), width)
    if not named:
        out += [
            "The keys of a model, task, optimizer or logger: name it with --help, e.g.",
            "  zoft-run optimizer=lozo --help      zoft-run model=opt-125m task=rte --help",
            "",
        ]
    out += _section("Flags:", _FLAGS, width, 18)
    out.append("Examples:")
    for cmd, what in _EXAMPLES:
        out += [f"  {cmd}", f"      {what}"]
    out += [
        "",
        "More: README.md (commands, paper tables, SLURM), docs/reliability.md (what a run does on",
        "each fault), conf/ (every option's YAML).",
    ]
    return "\n".join(out) + "\n"


def run_help(overrides: Sequence[str]) -> str:
    """`zoft-run [overrides] --help`."""
    return render_help(compose_for_help(overrides), overrides)
