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
    the command-line arguments (which replace a shared param of the same key) and the block's own
    params (which replace both). Duplicate cells are kept once, in first-seen order."""
    parser = OverridesParser.create()
    shared: dict[str, list[str]] = {}
    for key, value in params.items():
        options = _choices(parser, key, value)
        shared[_key(options[0])] = options
    for argument in arguments:
        key, value = argument.split("=", 1)
        options = _choices(parser, key, value)
        shared[_key(options[0])] = options
    cells: list[Cell] = []
    seen: set[tuple[str, ...]] = set()
    for block in grid or [{}]:
        axes = dict(shared)
        for key, value in block.items():
            options = _choices(parser, key, value)
            axes[_key(options[0])] = options
        for combination in itertools.product(*axes.values()):
            if combination not in seen:
                seen.add(combination)
                cells.append(list(combination))
    return cells
