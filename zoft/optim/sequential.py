"""The sequential probe: forwards inside it see θ + scale·z, and θ is never written.

Every module that owns a perturbed parameter swaps in a transient θ + scale·z on entry to its
forward and swaps the untouched original back on exit (a tied parameter is swapped once, by the
outermost module). Where rows of z are addressed on their own (philox), an Embedding and a large
Linear instead run a forward that draws only the rows they read (zoft.optim.row_forwards). A
parameter read outside its owner's forward is found by the first probe, which is then repeated
with that parameter perturbed in place and restored from a copy.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn

from zoft.optim.arithmetic import Perturbation
from zoft.optim.row_forwards import row_forward_for
from zoft.optim.walk import Owned, ParameterWalk

__all__ = ["SequentialProbe"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# (parameter, its untouched data, canonical name) for each swap a module's pre-hook made
_Frame = list[tuple[nn.Parameter, torch.Tensor, str]]


class SequentialProbe:
    """Probes one sign at a time through forward hooks on the walk's owner modules."""

    def __init__(self, walk: ParameterWalk, maths: Perturbation) -> None:
        self.walk, self.maths = walk, maths
        self.copy_restored: set[str] = set()  # parameters read outside their owner's forward
        self.checked = False  # whether the first probe has looked for such parameters
        self.active: set[str] = set()  # parameters swapped for a transient copy right now

    def loss_at(self, step: int, scale: float, fn: Callable[[], T], query: int = 0) -> T:
        """fn() evaluated at θ + scale·z. The first call checks that every parameter was really
        perturbed and, if not, switches the missed ones to copy-restore and evaluates again."""
        with self.probe(step, scale, query):
            value = fn()
        if not self.checked:
            self.checked = True
            missed = self.walk.missed(self.copy_restored)
            if missed:
                log.info(  # handled exactly (tied embeddings, e.g.): not a warning
                    "%d parameter(s) are read outside their module's forward (%s); they are "
                    "perturbed in place and restored from a copy",
                    len(missed),
                    ", ".join(sorted(missed)[:5]),
                )
                self.copy_restored |= missed
                with self.probe(step, scale, query):
                    value = fn()
        return value

    @contextmanager
    def probe(self, step: int, scale: float, query: int = 0) -> Iterator[None]:
        """Forward passes inside the block see θ + scale·z; afterwards θ is bit-identical."""
        frames: list[list[_Frame]] = []
        handles = []
        overridden: list[nn.Module] = []
        saved = self._perturb_copy_restored(step, scale, query)
        owners = self.walk.owners(frozenset(self.copy_restored))
        uses = Counter(name for _, owned in owners for _, name in owned)  # > 1: tied
        for module, owned in owners:
            rest = self._install_row_forward(module, owned, uses, step, scale, query, overridden)
            if not rest:
                continue
            stack: list[_Frame] = []
            frames.append(stack)
            enter = self._make_enter(rest, step, scale, query, stack)
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(self._make_exit(stack), always_call=True))
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            for module in overridden:
                del module.forward
            for stack in frames:  # a forward that died between its hooks leaves frames behind
                while stack:
                    _restore(stack.pop())
            for name, data in saved.items():
                self.walk.params[name].data.copy_(data)
            self.active.clear()

    @torch.no_grad()
    def _perturb_copy_restored(
        self, step: int, scale: float, query: int
    ) -> dict[str, torch.Tensor]:
        saved = {}
        for name in sorted(self.copy_restored):
            saved[name] = self.walk.params[name].data.clone()
            self.maths.perturb_in_place(name, self.walk.params[name].data, step, scale, query)
            self.walk.touched.add(name)
        return saved

    def _install_row_forward(
        self,
        module: nn.Module,
        owned: Owned,
        uses: Counter[str],
        step: int,
        scale: float,
        query: int,
        overridden: list[nn.Module],
    ) -> Owned:
        """Give `module` a forward that draws only the rows of its weight's z it reads, where
        zoft.optim.row_forwards has one and the weight's rows are addressable; the owned
        parameters left for the swap hooks. `uses`: how many modules own each parameter."""
        name = dict(owned).get("weight")
        if name is None or not self.maths.directions.addressable(self.walk.params[name]):
            return owned
        param = self.walk.params[name]

        def draw(rows: slice | torch.Tensor) -> torch.Tensor:
            self.walk.touched.add(name)
            return self.maths.perturbed_rows(name, param.data, rows, step, scale, query)

        forward = row_forward_for(module, draw, tied=uses[name] > 1)
        if forward is None:
            return owned
        plain = type(module).forward

        def probe_forward(*args, **kwargs):
            if name in self.active:  # swapped in whole by an outer module sharing it
                return plain(module, *args, **kwargs)
            return forward(*args, **kwargs)

        module.forward = probe_forward
        overridden.append(module)
        return [(attr, n) for attr, n in owned if n != name]

    def _make_enter(self, owned: Owned, step: int, scale: float, query: int, stack: list[_Frame]):
        def enter(module: nn.Module, args: object) -> None:
            frame: _Frame = []
            stack.append(frame)  # first, so the exit hook always finds this call's frame
            for attr, name in owned:
                if name in self.active:  # a tied parameter already perturbed by an outer module
                    continue
                param = module._parameters[attr]
                original = param.data
                self.active.add(name)
                frame.append((param, original, name))
                param.data = self.maths.perturbed(
                    name, self.walk.params[name].data, step, scale, query
                )
                self.walk.touched.add(name)

        return enter

    def _make_exit(self, stack: list[_Frame]):
        def exit_(module: nn.Module, args: object, output: object) -> None:
            frame = stack.pop()
            _restore(frame)
            self.active.difference_update(name for _, _, name in frame)

        return exit_


def _restore(frame: _Frame) -> None:
    for param, original, _ in frame:
        param.data = original
