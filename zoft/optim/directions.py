"""Perturbation directions, each a pure function of (run seed, step, query, parameter name).

Because a direction is regenerated from its key rather than stored or drawn from a running
generator, the probe and the update of a step always see exactly the same numbers, whatever the
order in which parameters are visited, and also on the steps where LOZO resamples V.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any

import torch

from zoft.errors import ZoftError
from zoft.registry import Registry

DIRECTIONS: Registry = Registry("direction kind")

# z of a larger parameter is drawn in blocks of rows of at most this many elements, each keyed by
# its index, so the engine forms θ ± εz and applies the update block by block: no full-size fp32
# z (4 bytes per element of, say, OPT-13B's 257M-element embedding) is ever needed.
BLOCK_ELEMENTS = 2**24


def row_blocks(param: torch.Tensor) -> list[Any]:
    """Index of each block of rows of `param` ([...] when it is one block)."""
    if param.ndim == 0 or param.numel() <= BLOCK_ELEMENTS:
        return [...]
    per_block = max(1, BLOCK_ELEMENTS // max(param[0].numel(), 1))
    rows = param.shape[0]
    return [slice(start, min(start + per_block, rows)) for start in range(0, rows, per_block)]


def direction_seed(seed: int, step: int, query: int, name: str) -> int:
    """A 63-bit generator seed for one (run seed, step, query, parameter) key."""
    digest = hashlib.blake2b(f"{seed}|{step}|{query}|{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def keyed_normal(shape: tuple[int, ...], key: int, device: torch.device) -> torch.Tensor:
    """Standard normal fp32 numbers from a generator seeded with `key`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(key)
    return torch.randn(shape, generator=gen, device=device, dtype=torch.float32)


class Directions(ABC):
    """The direction z of every parameter for a given step and query."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    @classmethod
    def from_config(cls, seed: int, cfg: Any) -> Directions:
        """Built from an optimizer config (low-rank reads its rank and interval)."""
        return cls(seed)

    @abstractmethod
    def dense_block(
        self, name: str, param: torch.Tensor, step: int, query: int, index: int
    ) -> torch.Tensor:
        """z of block `index` of row_blocks(param): fp32, on the parameter's device."""

    def dense(self, name: str, param: torch.Tensor, step: int, query: int) -> torch.Tensor:
        """z for one parameter: fp32, the parameter's shape and device."""
        blocks = row_blocks(param)
        if len(blocks) == 1:
            return self.dense_block(name, param, step, query, 0)
        return torch.cat(
            [self.dense_block(name, param, step, query, i) for i in range(len(blocks))]
        )

    @staticmethod
    def is_low_rank(param: torch.Tensor) -> bool:
        """Whether this parameter's direction is low rank (see low_rank)."""
        return False

    def low_rank(
        self, name: str, param: torch.Tensor, step: int, query: int
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(U, V) with z = U Vᵀ (param viewed as m × n) when this parameter's direction is low
        rank, else None: paired probes and the update then never form z."""
        return None


@DIRECTIONS.register("gaussian")
class GaussianDirections(Directions):
    """MeZO: z ~ N(0, I) for every parameter (each block of a large one keyed on its own)."""

    def dense_block(
        self, name: str, param: torch.Tensor, step: int, query: int, index: int
    ) -> torch.Tensor:
        blocks = row_blocks(param)
        key_name = name if len(blocks) == 1 else f"{name}@{index}"
        key = direction_seed(self.seed, step, query, key_name)
        return keyed_normal(tuple(param[blocks[index]].shape), key, param.device)


def check_low_rank(rank: int, interval: int) -> None:
    """U, V need a column and the lazy subspace a step (run by the configs that use them)."""
    if rank < 1 or interval < 1:
        raise ZoftError(
            f"low-rank directions need rank >= 1 and interval >= 1 (got rank={rank}, "
            f"interval={interval}); set optimizer.rank / optimizer.interval"
        )


@DIRECTIONS.register("lowrank")
class LowRankDirections(Directions):
    """LOZO (DESIGN §6.2): z = U Vᵀ for parameters of 2+ dimensions (viewed as m × n, n the
    product of the trailing dimensions), with U ∈ ℝ^{m×r} fresh every step and query and
    V ∈ ℝ^{n×r} shared by the `interval` steps of a block (the lazy subspace); Gaussian z for
    1-D parameters. No 1/r factor: the official code's convention, so its learning rates apply."""

    def __init__(self, seed: int, rank: int, interval: int) -> None:
        super().__init__(seed)
        check_low_rank(rank, interval)
        self.rank = rank
        self.interval = interval
        self.gaussian = GaussianDirections(seed)

    @classmethod
    def from_config(cls, seed: int, cfg: Any) -> LowRankDirections:
        return cls(seed, cfg.rank, cfg.interval)

    @staticmethod
    def is_low_rank(param: torch.Tensor) -> bool:
        return param.ndim >= 2

    def block(self, step: int) -> int:
        """Index of the lazy-subspace block `step` belongs to (V is constant within a block)."""
        return step // self.interval

    def u(self, name: str, param: torch.Tensor, step: int, query: int) -> torch.Tensor:
        key = direction_seed(self.seed, step, query, f"{name}#U")
        return keyed_normal((param.shape[0], self.rank), key, param.device)

    def v(self, name: str, param: torch.Tensor, block: int) -> torch.Tensor:
        n = param[0].numel()
        key = direction_seed(self.seed, block, -1, f"{name}#V")
        return keyed_normal((n, self.rank), key, param.device)

    def factors(
        self, name: str, param: torch.Tensor, step: int, query: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, V) of a parameter with 2+ dimensions at this step and query."""
        return self.u(name, param, step, query), self.v(name, param, self.block(step))

    def low_rank(
        self, name: str, param: torch.Tensor, step: int, query: int
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.factors(name, param, step, query) if self.is_low_rank(param) else None

    def dense_block(
        self, name: str, param: torch.Tensor, step: int, query: int, index: int
    ) -> torch.Tensor:
        if not self.is_low_rank(param):
            return self.gaussian.dense_block(name, param, step, query, index)
        rows = row_blocks(param)[index]
        u, v = self.factors(name, param, step, query)
        return (u[rows] @ v.T).reshape(param[rows].shape)
