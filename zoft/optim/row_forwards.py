"""Forwards of a sequential probe that draw only the rows of z they read, for directions whose
rows are addressed on their own (optimizer.rng=philox: z[i] is a function of its counter).

An Embedding perturbs just the rows its batch looks up (the same bits as a lookup in a fully
perturbed table), and a large Linear (a tied or large output head) is applied block by block of
output rows, each block θ[rows] + scale·z[rows] formed, used and dropped. Neither forms a
θ-sized transient, so a sequential probe needs inference memory plus one block. Every other
owner swaps in a whole transient θ + scale·z (zoft.optim.sequential).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LINEAR_BLOCK_ELEMENTS", "RowDraw", "row_forward_for"]

# a Linear weight of more elements than this is applied in blocks of rows of about this size
LINEAR_BLOCK_ELEMENTS = 2**20

RowDraw = Callable[[slice | torch.Tensor], torch.Tensor]  # rows -> θ[rows] + scale·z[rows]
Forward = Callable[..., torch.Tensor]
# applies(module, tied): tied when the weight is shared with another module (a tied head)
Applies = Callable[[nn.Module, bool], bool]
_ROW_FORWARDS: dict[type[nn.Module], tuple[Applies, Callable]] = {}


def _register(module_type: type[nn.Module], applies: Applies):
    """Register the row forward of one exact module class (subclasses may override forward)."""

    def decorator(fn: Callable[[nn.Module, RowDraw], Forward]):
        _ROW_FORWARDS[module_type] = (applies, fn)
        return fn

    return decorator


def row_forward_for(module: nn.Module, draw: RowDraw, tied: bool = False) -> Forward | None:
    """The forward of `module` that perturbs its weight through `draw`, or None when its class
    has none, it does not apply, or the module's forward is already wrapped (accelerate).
    `tied`: the weight is shared with another module (an output head tied to the embedding)."""
    entry = _ROW_FORWARDS.get(type(module))
    if entry is None or "forward" in module.__dict__ or not entry[0](module, tied):
        return None
    return entry[1](module, draw)


@_register(nn.Embedding, applies=lambda m, tied: m.max_norm is None)
def _embedding(module: nn.Embedding, draw: RowDraw) -> Forward:
    def forward(ids: torch.Tensor) -> torch.Tensor:
        rows, inverse = torch.unique(ids, return_inverse=True)
        return F.embedding(inverse, draw(rows))  # padding_idx only shapes gradients

    return forward


@_register(nn.Linear, applies=lambda m, tied: tied or m.weight.numel() > LINEAR_BLOCK_ELEMENTS)
def _linear(module: nn.Linear, draw: RowDraw) -> Forward:
    def forward(x: torch.Tensor) -> torch.Tensor:
        weight, bias = module.weight, module.bias  # a walked bias is already swapped in
        per_block = max(1, LINEAR_BLOCK_ELEMENTS // max(weight.shape[1], 1))
        out = x.new_empty((*x.shape[:-1], weight.shape[0]))
        for start in range(0, weight.shape[0], per_block):
            rows = slice(start, min(start + per_block, weight.shape[0]))
            out[..., rows] = F.linear(x, draw(rows), None if bias is None else bias[rows])
        return out

    return forward
