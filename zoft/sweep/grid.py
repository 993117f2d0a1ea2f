"""Paper grids as cells: the union of Cartesian blocks, and which cells are already finished.

Hydra's basic sweeper only forms one Cartesian product, but a paper's grid is method-dependent
(MeZO sweeps two learning rates, LOZO rates × ranks × intervals, FT three rates), so an experiment
lists blocks; each block is swept as a product with the shared params, and the cells are the union.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser

Cell = list[str]


def _choices(parser: OverridesParser, key: str, value: object) -> list[str]:
    """Every `key=value` a (possibly comma-separated) sweep value stands for."""
    if value is None:
        value = "null"  # YAML null; Hydra would read the string "None"
    elif isinstance(value, bool):
        value = str(value).lower()
    override = parser.parse_override(f"{key}={value}")
    key = override.get_key_element()
    if override.is_sweep_override():
        return [f"{key}={item}" for item in override.sweep_string_iterator()]
    return [f"{key}={override.get_value_element_as_str()}"]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def expand_cells(
    params: Mapping[str, object],
    grid: Sequence[Mapping[str, object]],
    arguments: Iterable[str] = (),
) -> list[Cell]:
    """All cells: for each grid block (or once without blocks), the product of the shared params,
    the command-line arguments and the block's own params. An argument whose values the grid
    already sweeps (in the shared params or any block) selects: every block keeps only the values
    both name, and a block left with none is dropped (`task=boolq` runs only the grid's BoolQ
    cells, `seed=0` one seed). An argument naming a value the grid lacks (`seed=3`) replaces the
    shared param instead, and still selects within the blocks that set the key.
    A cell repeated (in any key order) is kept once, in first-seen order."""
    parser = OverridesParser.create()
    shared: dict[str, list[str]] = {}
    for key, value in params.items():
        options = _choices(parser, key, value)
        shared[_key(options[0])] = options
    selected: dict[str, list[str]] = {}
    for argument in arguments:
        key, value = argument.split("=", 1)
        options = _choices(parser, key, value)
        selected[_key(options[0])] = options
    swept = _grid_values(parser, shared, grid)
    for name, options in selected.items():
        if {_value(o) for o in options} <= swept.get(name, set()):
            chosen = {_value(o) for o in options}
            shared[name] = [o for o in shared.get(name, []) if _value(o) in chosen]
        else:
            shared[name] = options
    cells: list[Cell] = []
    seen: set[frozenset[str]] = set()
    for block in grid or [{}]:
        axes = dict(shared)
        for key, value in block.items():
            options = _choices(parser, key, value)
            name = _key(options[0])
            if name in selected:
                chosen = {_value(o) for o in selected[name]}
                options = [o for o in options if _value(o) in chosen]
            axes[name] = options
        for combination in itertools.product(*axes.values()):
            if frozenset(combination) not in seen:
                seen.add(frozenset(combination))
                cells.append(list(combination))
    return cells


def _grid_values(
    parser: OverridesParser,
    shared: Mapping[str, list[str]],
    grid: Sequence[Mapping[str, object]],
) -> dict[str, set[str]]:
    """Every value each key takes somewhere in the grid (shared params or any block)."""
    values: dict[str, set[str]] = {name: {_value(o) for o in opts} for name, opts in shared.items()}
    for block in grid:
        for key, value in block.items():
            options = _choices(parser, key, value)
            values.setdefault(_key(options[0]), set()).update(_value(o) for o in options)
    return values


def _value(override: str) -> str:
    return override.split("=", 1)[1]


# cells of this process's sweeps whose run failed, recorded by the grid sweeper as jobs return
_FAILED_CELLS: list[str] = []


def record_failed(cell: Cell) -> None:
    _FAILED_CELLS.append(" ".join(cell))


def sweep_failures() -> list[str]:
    """The cells that failed in this process's sweeps so far (zoft-run exits non-zero then)."""
    return list(_FAILED_CELLS)


# cells of this process's sweeps not run because another process holds their run folder's lock
_LOCKED_CELLS: list[str] = []


def record_locked(cell: Cell, holder: str) -> None:
    _LOCKED_CELLS.append(f"{' '.join(cell)}  ({holder})")


def sweep_locked() -> list[str]:
    """The cells skipped as locked by another process, each with who holds it (zoft-run lists
    them at the end and exits non-zero: they are not complete yet)."""
    return list(_LOCKED_CELLS)
