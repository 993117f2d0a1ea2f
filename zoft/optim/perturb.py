"""The perturbation engine every zeroth-order method shares (DESIGN §6.6).

Keyed randomness: the direction z of a parameter is regenerated from a generator seeded with a
hash of (run seed, step, query, parameter name), so perturb and update always use identical
numbers, whatever the order in which parameters are visited or the device that holds them.

Exact restore by construction: a probe never writes θ. While a probe is active, every module that
owns a perturbed parameter swaps in a transient θ + scale·z on entry to its forward and swaps the
untouched original back on exit. After the probes θ is bit-identical in every dtype, and the only
pass that writes θ is the update (the reference in-place scheme, +ε / −2ε / +ε, cannot restore
fp16/bf16 weights exactly and needs four passes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def direction_seed(seed: int, step: int, query: int, name: str) -> int:
    """A 63-bit generator seed for one (run seed, step, query, parameter) key."""
    digest = hashlib.blake2b(f"{seed}|{step}|{query}|{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class PerturbationEngine:
    """Gaussian directions keyed per parameter name over a fixed set of named parameters."""

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter], seed: int) -> None:
        self.model = model
        self.params = params
        self.seed = seed
        self.numel = sum(p.numel() for p in params.values())
        self.generated = 0  # elements of z generated so far (passes = generated / numel)
        name_of = {id(p): n for n, p in params.items()}
        self._owners: list[tuple[nn.Module, list[tuple[str, str]]]] = []
        for module in model.modules():
            owned = [
                (attr, name_of[id(p)])
                for attr, p in module._parameters.items()
                if p is not None and id(p) in name_of
            ]
            if owned:
                self._owners.append((module, owned))
        self._active: set[str] = set()
        self.touched: set[str] = set()  # parameters a probe actually perturbed (diagnostics)

    @property
    def passes(self) -> float:
        """Regeneration passes over the perturbed parameters so far."""
        return self.generated / max(self.numel, 1)

    def direction(self, name: str, step: int, query: int = 0) -> torch.Tensor:
        """z for one parameter, in fp32, on the parameter's device."""
        p = self.params[name]
        gen = torch.Generator(device=p.device)
        gen.manual_seed(direction_seed(self.seed, step, query, name))
        self.generated += p.numel()
        return torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32)

    @contextmanager
    def probe(self, step: int, scale: float, query: int = 0) -> Iterator[None]:
        """Forward passes inside the block see θ + scale·z; θ itself is never written."""
        handles = []
        for module, owned in self._owners:
            stack: list[list[tuple[nn.Parameter, torch.Tensor]]] = []
            handles.append(
                module.register_forward_pre_hook(self._make_enter(owned, step, scale, query, stack))
            )
            handles.append(module.register_forward_hook(self._make_exit(stack), always_call=True))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _make_enter(self, owned, step, scale, query, stack):
        def enter(module: nn.Module, args: object) -> None:
            swapped = []
            for attr, name in owned:
                if name in self._active:  # a tied parameter already perturbed by an outer module
                    continue
                param = module._parameters[attr]
                original = param.data
                z = self.direction(name, step, query)
                param.data = z.mul_(scale).add_(original).to(original.dtype)  # original untouched
                swapped.append((param, original, name))
                self._active.add(name)
                self.touched.add(name)
            stack.append(swapped)

        return enter

    def _make_exit(self, stack):
        def exit_(module: nn.Module, args: object, output: object) -> None:
            for param, original, name in stack.pop():
                param.data = original
                self._active.discard(name)

        return exit_

    @torch.no_grad()
    def update(self, step: int, coeff: float, decay: float = 0.0, query: int = 0) -> None:
        """θ ← θ·(1 − decay) + coeff·z, with decay applied only to parameters of 2+ dimensions
        (biases and norm weights are 1-D). One pass; the arithmetic is in fp32, rounded once."""
        for name, p in self.params.items():
            z = self.direction(name, step, query)
            value = p.data.float()
            if decay and p.ndim >= 2:
                value.mul_(1.0 - decay)
            p.data.copy_(value.add_(z, alpha=coeff))
