"""The walk over the model a zeroth-order method perturbs: which parameters, which modules own
them (a tied parameter is owned by every module that holds it), and which a probe has reached."""

from __future__ import annotations

import torch
from torch import nn

Owned = list[tuple[str, str]]  # (attribute on the module, canonical parameter name)


class ParameterWalk:
    """A fixed set of named parameters of `model` and the modules that directly own them."""

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter]) -> None:
        self.model = model
        self.params = params
        self.numel = sum(p.numel() for p in params.values())
        self.touched: set[str] = set()  # parameters some probe has perturbed so far
        self._owner_cache: tuple[frozenset[str], list[tuple[nn.Module, Owned]]] | None = None

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device if self.params else torch.device("cpu")

    @property
    def full_precision(self) -> bool:
        return all(p.dtype in (torch.float32, torch.float64) for p in self.params.values())

    def missed(self, *reached: set[str]) -> set[str]:
        """Parameters neither touched by a probe nor in any of `reached`."""
        return set(self.params).difference(self.touched, *reached)

    def owners(self, skip: frozenset[str] = frozenset()) -> list[tuple[nn.Module, Owned]]:
        """Each module that directly owns walked parameters (other than `skip`), with
        (attribute, name), in module order; cached while `skip` stays the same."""
        if self._owner_cache is not None and self._owner_cache[0] == skip:
            return self._owner_cache[1]
        name_of = {id(p): n for n, p in self.params.items() if n not in skip}
        owners = []
        for module in self.model.modules():
            owned = [
                (attr, name_of[id(p)])
                for attr, p in module._parameters.items()
                if p is not None and id(p) in name_of
            ]
            if owned:
                owners.append((module, owned))
        self._owner_cache = (skip, owners)
        return owners
