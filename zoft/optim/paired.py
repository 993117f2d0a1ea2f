"""Both probes of a step in one forward (DESIGN §6.6): the batch runs twice over, as [B; B], and
every module that owns a perturbed parameter makes the first half of its rows see θ+εz and the
second half θ−εz.

Low-rank directions never touch W: a Linear adds ±ε(xV)Uᵀ to xWᵀ and an Embedding ±ε U[ids] Vᵀ
to its lookup, r(m+n) multiply-adds per row instead of an m × n perturbed copy. Any other owner
(norms, dense z, custom modules) runs once per half with a transient θ±εz swapped in, both built
from one z. θ is never written, so restore is exact by construction, as with sequential probes.

A perturbed module whose input is shared by every row (BERT's position embeddings, fed ids of
shape 1 × T) returns its two outputs expanded to the batch, so the rows still differ by sign. Any
other input without the doubled batch on dim 0 raises PairedProbeUnsupported, and the engine falls
back to sequential probes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoft.optim.arithmetic import Perturbation
from zoft.optim.directions import row_blocks
from zoft.optim.probes import PairedProbeUnsupported
from zoft.optim.walk import Owned, ParameterWalk

__all__ = ["PairedProbe", "PairedProbeUnsupported"]


# An exact module class -> the rule that adds its output's perturbation without writing θ.
Correction = Callable[["PairedProbe", nn.Module, Owned, tuple, torch.Tensor], torch.Tensor]
_CORRECTIONS: dict[type[nn.Module], tuple[Callable[[nn.Module], bool], Correction]] = {}


def correction(
    module_type: type[nn.Module], applies: Callable[[nn.Module], bool] = lambda m: True
) -> Callable[[Correction], Correction]:
    """Register the output correction of one exact module class (subclasses may override
    forward, so they are not matched)."""

    def decorator(fn: Correction) -> Correction:
        _CORRECTIONS[module_type] = (applies, fn)
        return fn

    return decorator


class PairedProbe:
    """Inside the context, a forward over [B; B] evaluates θ+scale·z on the first B rows and
    θ−scale·z on the last B; θ is bit-identical afterwards."""

    def __init__(
        self,
        walk: ParameterWalk,
        maths: Perturbation,
        step: int,
        scale: float,
        query: int,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        self.walk, self.maths, self.skip = walk, maths, skip  # skip: perturbed by someone else
        self.step, self.scale, self.query = step, scale, query
        self.sign: float | None = None  # set while a split module runs one of its halves
        self.rows: int | None = None  # the doubled batch of the forward under way
        self.active: set[str] = set()  # parameters swapped for a transient copy right now
        self._swapped: list[tuple[nn.Parameter, torch.Tensor, str]] = []

    @contextmanager
    def installed(self) -> Iterator[PairedProbe]:
        handles, overridden = [], []
        try:
            model = self.walk.model
            for entry in (model, *model.children()):  # what a scorer calls
                hook = entry.register_forward_pre_hook(self._record_rows, with_kwargs=True)
                handles.append(hook)
            for module, owned in self.walk.owners(self.skip):
                rule = _CORRECTIONS.get(type(module))
                if rule is not None and rule[0](module) and self._all_low_rank(module, owned):
                    fn = rule[1]
                    handles.append(module.register_forward_hook(self._correcting(fn, owned)))
                else:
                    overridden.append((module, module.__dict__.get("forward")))
                    module.forward = self._splitting(module, owned, module.forward)
            yield self
        finally:
            for handle in handles:
                handle.remove()
            for module, previous in overridden:
                if previous is None:
                    del module.forward
                else:
                    module.forward = previous
            while self._swapped:  # a forward that died inside a half
                param, original, _ = self._swapped.pop()
                param.data = original
            self.active.clear()

    def _all_low_rank(self, module: nn.Module, owned: Owned) -> bool:
        """Corrections handle low-rank matrices (and 1-D parameters beside them); a dense z on
        a matrix is cheaper as a transient copy than as a second full-size matmul."""
        directions = self.maths.directions
        for attr, _ in owned:
            param = module._parameters[attr]
            if param.ndim >= 2 and not directions.is_low_rank(param):
                return False
        return True

    # ------------------------------------------------------------------ corrections
    def factors(self, name: str, param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        found = self.maths.directions.low_rank(name, param, self.step, self.query)
        assert found is not None  # _all_low_rank checked it
        self.walk.touched.add(name)
        return found

    def dense(self, name: str, param: torch.Tensor) -> torch.Tensor:
        """z of a parameter (counted as a sweep over it)."""
        self.walk.touched.add(name)
        return self.maths.direction(name, self.walk.params[name], self.step, self.query)

    def add_signed(self, output: torch.Tensor, delta: torch.Tensor, per_row: bool) -> torch.Tensor:
        """output ± scale·delta: + on the first half of the rows, − on the second (or the sign
        of the half being run). `per_row` deltas have the output's rows; others broadcast. An
        output shared by every row (dim 0 of 1) is first expanded to the doubled batch."""
        if self.sign is not None:
            return output.add_(delta.to(output.dtype), alpha=self.sign * self.scale)
        if output.ndim and output.shape[0] == 1 and self.rows:
            output = output.expand(self.rows, *output.shape[1:]).clone()
            if per_row:
                delta = delta.expand(self.rows, *delta.shape[1:])
        half = _half(output.shape[0] if output.ndim else 0, "an output")
        top, bottom = (delta[:half], delta[half:]) if per_row else (delta, delta)
        output[:half].add_(top.to(output.dtype), alpha=self.scale)
        output[half:].add_(bottom.to(output.dtype), alpha=-self.scale)
        return output

    def add_low_rank(
        self, output: torch.Tensor, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """output ± scale·(xV)Uᵀ, added in place by addmm (no output-sized temporary) when the
        output's rows can be folded into one matrix; else through add_signed."""
        rows = output.shape[0] if output.ndim else 0
        if rows < 2 or not output.is_contiguous() or x.shape[:-1] != output.shape[:-1]:
            return self.add_signed(output, (x @ v.to(x.dtype)) @ u.T.to(x.dtype), per_row=True)
        flat = output.view(-1, output.shape[-1])
        xv = x.reshape(-1, x.shape[-1]) @ v.to(x.dtype)
        ut = u.T.to(x.dtype)
        if self.sign is not None:
            flat.addmm_(xv, ut, alpha=self.sign * self.scale)
            return output
        half = _half(rows, "an output") * (flat.shape[0] // rows)  # flattened rows per copy
        flat[:half].addmm_(xv[:half], ut, alpha=self.scale)
        flat[half:].addmm_(xv[half:], ut, alpha=-self.scale)
        return output

    def _record_rows(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        first = next((v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)), None)
        if self.sign is None and first is not None and first.ndim:
            self.rows = first.shape[0]

    def _correcting(self, fn: Correction, owned: Owned):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            live = [(attr, name) for attr, name in owned if name not in self.active]
            return fn(self, module, live, args, output) if live else output

        return hook

    # ------------------------------------------------------------------ split modules
    def _splitting(self, module: nn.Module, owned: Owned, forward: Callable[..., Any]):
        def split_forward(*args: Any, **kwargs: Any) -> Any:
            if self.sign is not None:  # inside another module's half: one sign for all rows
                with self._swapped_in(module, owned, self.sign, directions=None):
                    return forward(*args, **kwargs)
            (args_top, kwargs_top), (args_bottom, kwargs_bottom), shared = _split_inputs(
                module, args, kwargs
            )
            # one z for both halves; a parameter of several row blocks is formed block by block
            # for each half instead (two sweeps, but never a full-size fp32 z)
            directions = {
                name: self.dense(name, module._parameters[attr])
                for attr, name in owned
                if name not in self.active and len(row_blocks(module._parameters[attr])) == 1
            }
            outputs = []
            for sign, a, k in ((1.0, args_top, kwargs_top), (-1.0, args_bottom, kwargs_bottom)):
                self.sign = sign
                try:
                    with self._swapped_in(module, owned, sign, directions):
                        outputs.append(forward(*a, **k))
                finally:
                    self.sign = None
            if shared:  # every row saw the same input: each half's output stands for B rows
                half = _half(self.rows or 0, f"the batch around {type(module).__name__}")
                outputs = [_expanded(out, half) for out in outputs]
            return _concat(module, *outputs)

        return split_forward

    @contextmanager
    def _swapped_in(
        self,
        module: nn.Module,
        owned: Owned,
        sign: float,
        directions: dict[str, torch.Tensor] | None,
    ) -> Iterator[None]:
        """The module's parameters replaced by θ + sign·scale·z for the block (z formed again
        unless given), then the untouched originals put back."""
        mark = len(self._swapped)
        try:
            for attr, name in owned:
                if name in self.active:  # tied, already swapped by an outer module
                    continue
                param = module._parameters[attr]
                original = param.data
                if directions is not None and name in directions:
                    z = directions[name]
                    perturbed = z.mul(sign * self.scale).add_(original).to(original.dtype)
                else:
                    self.walk.touched.add(name)
                    perturbed = self.maths.perturbed(
                        name, self.walk.params[name].data, self.step, sign * self.scale, self.query
                    )
                self._swapped.append((param, original, name))
                self.active.add(name)
                param.data = perturbed
            yield
        finally:
            while len(self._swapped) > mark:
                param, original, name = self._swapped.pop()
                param.data = original
                self.active.discard(name)


@correction(nn.Linear)
def _linear(
    probe: PairedProbe, module: nn.Module, owned: Owned, args: tuple, out: torch.Tensor
) -> torch.Tensor:
    """x(W ± εUVᵀ)ᵀ + (b ± εz_b) = xWᵀ + b ± ε((xV)Uᵀ + z_b)."""
    x = args[0]
    for attr, name in owned:
        param = module._parameters[attr]
        if attr == "weight":
            u, v = probe.factors(name, param)
            out = probe.add_low_rank(out, x, u, v)
        else:
            out = probe.add_signed(out, probe.dense(name, param), per_row=False)
    return out


@correction(nn.Embedding, applies=lambda m: m.max_norm is None)
def _embedding(
    probe: PairedProbe, module: nn.Module, owned: Owned, args: tuple, out: torch.Tensor
) -> torch.Tensor:
    """(E ± εUVᵀ)[ids] = E[ids] ± ε U[ids] Vᵀ."""
    ((attr, name),) = owned
    u, v = probe.factors(name, module._parameters[attr])
    return probe.add_signed(out, F.embedding(args[0], u) @ v.T, per_row=True)


def _half(rows: int, what: str) -> int:
    if rows < 2 or rows % 2:
        raise PairedProbeUnsupported(f"{what} has {rows} row(s), not the doubled batch")
    return rows // 2


def _split_inputs(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, tuple, bool]:
    """((args, kwargs) of the first half, (args, kwargs) of the second, shared): tensors whose
    dim 0 is the doubled batch are cut in two, everything else goes to both halves; `shared` when
    no input carries the batch (every row sees the same input)."""
    rows = {v.shape[0] for v in (*args, *kwargs.values()) if _batched(v)}
    if not rows:
        return (args, kwargs), (args, kwargs), True
    if len(rows) > 1:
        raise PairedProbeUnsupported(
            f"the inputs of {type(module).__name__} disagree on the batch ({sorted(rows)} rows)"
        )
    half = _half(rows.pop(), f"the input of {type(module).__name__}")

    def cut(value: Any, part: slice) -> Any:
        return value[part] if _batched(value) else value

    top, bottom = slice(0, half), slice(half, None)
    return (
        (tuple(cut(a, top) for a in args), {k: cut(v, top) for k, v in kwargs.items()}),
        (tuple(cut(a, bottom) for a in args), {k: cut(v, bottom) for k, v in kwargs.items()}),
        False,
    )


def _expanded(value: Any, rows: int) -> Any:
    """An output computed once for all rows (dim 0 of 1), repeated for `rows` rows."""
    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == 1:
        return value.expand(rows, *value.shape[1:])
    if isinstance(value, tuple | list):
        return type(value)(_expanded(v, rows) for v in value)
    return value


def _batched(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] > 1


def _concat(module: nn.Module, top: Any, bottom: Any) -> Any:
    if isinstance(top, torch.Tensor):
        return torch.cat([top, bottom])
    if top is None and bottom is None:
        return None
    if isinstance(top, tuple | list) and type(top) is type(bottom):
        return type(top)(_concat(module, a, b) for a, b in zip(top, bottom, strict=True))
    raise PairedProbeUnsupported(
        f"the outputs of {type(module).__name__} ({type(top).__name__}) cannot be joined"
    )
