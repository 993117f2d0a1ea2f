"""Perturbation directions, each a pure function of (run seed, step, query, parameter name).

Because a direction is regenerated from its key rather than stored or drawn from a running
generator, the probe and the update of a step always see exactly the same numbers, whatever the
order in which parameters are visited, and also on the steps where LOZO resamples V.

The normals themselves come from one of NORMALS (`optimizer.rng`): `torch` seeds a
torch.Generator per key (each row block of a large parameter keyed on its own), `philox` draws
z[i] as a pure function of (the parameter's key, element i), so any block of rows is addressed by
its element offset (zoft.optim.philox; numba kernels on the CPU and Triton kernels on CUDA when
installed, the torch reference otherwise).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
from abc import ABC, abstractmethod
from typing import Any

import torch

from zoft.errors import ZoftError
from zoft.optim import philox
from zoft.registry import Registry

DIRECTIONS: Registry = Registry("direction kind")
NORMALS: Registry = Registry("rng")
log = logging.getLogger(__name__)

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


class Normals(ABC):
    """Keyed standard normals in fp32: the blocks of a parameter's dense z, and whole matrices
    (LOZO's U and V)."""

    @abstractmethod
    def block(
        self, seed: int, step: int, query: int, name: str, param: torch.Tensor, index: int
    ) -> torch.Tensor:
        """z of block `index` of row_blocks(param), on the parameter's device."""

    @abstractmethod
    def matrix(self, shape: tuple[int, ...], key: int, device: torch.device) -> torch.Tensor:
        """A whole tensor of normals for one key."""


@NORMALS.register("torch")
class TorchNormals(Normals):
    """torch.randn from a generator seeded with the key; a parameter of several row blocks has
    one key per block (name@index). Every run before issue 19 drew its directions so."""

    def block(
        self, seed: int, step: int, query: int, name: str, param: torch.Tensor, index: int
    ) -> torch.Tensor:
        blocks = row_blocks(param)
        key_name = name if len(blocks) == 1 else f"{name}@{index}"
        key = direction_seed(seed, step, query, key_name)
        return keyed_normal(tuple(param[blocks[index]].shape), key, param.device)

    def matrix(self, shape: tuple[int, ...], key: int, device: torch.device) -> torch.Tensor:
        return keyed_normal(shape, key, device)


def philox_kernels(device: torch.device) -> Any:
    """The fast Philox kernels for tensors on `device`, or None: zoft.optim.philox_numba on the
    CPU (its thread pool matched to torch's), zoft.optim.philox_triton on CUDA. Both offer
    normals_into, perturbed_into and update_inplace; imported here, once a run draws with
    philox."""
    if device.type == "cuda":
        from zoft.optim import philox_triton

        return philox_triton if philox_triton.available(device) else None
    from zoft.optim import philox_numba

    if device.type != "cpu" or not philox_numba.available():
        return None
    philox_numba.numba.set_num_threads(min(torch.get_num_threads(), _NUMBA_THREADS))
    return philox_numba


def philox_block(
    key: int, start: int, shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """Elements start, start + 1, ... of the Philox stream of `key`, shaped: by the device's
    kernels where they are installed, else by the torch reference (any device, slow)."""
    count = math.prod(shape)
    kernels = philox_kernels(device)
    if kernels is not None:
        out = torch.empty(count, dtype=torch.float32, device=device)
        kernels.normals_into(out, key, start)
    else:
        _warn_reference(device.type)
        out = philox.philox_normal(key, start, count, device)
    return out.view(shape)


@functools.cache
def _warn_reference(device_type: str) -> None:
    extra = "fast (numba)" if device_type == "cpu" else "gpu (triton)"
    log.warning(
        "optimizer.rng=philox on %s draws with the torch reference, about 15x slower than "
        "torch.randn: pip install 'zoft[%s]' for its kernels (the same stream)",
        device_type,
        extra,
    )


_HALF_AND_FULL = (torch.float32, torch.bfloat16, torch.float16)
# numba's thread pool size, fixed at its first use: the kernels use as many threads as torch
_NUMBA_THREADS = int(os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count() or 1)


@NORMALS.register("philox")
class PhiloxNormals(Normals):
    """z[i] = the Philox normal (parameter key, element i): one key per parameter, a row block
    drawn at its element offset, so blocks are independent of how the rows are split."""

    def block(
        self, seed: int, step: int, query: int, name: str, param: torch.Tensor, index: int
    ) -> torch.Tensor:
        rows = row_blocks(param)[index]
        start = 0 if rows is ... else rows.start * param[0].numel()
        key = direction_seed(seed, step, query, name)
        return philox_block(key, start, tuple(param[rows].shape), param.device)

    def matrix(self, shape: tuple[int, ...], key: int, device: torch.device) -> torch.Tensor:
        return philox_block(key, 0, tuple(shape), device)

    @staticmethod
    def fusable(param: torch.Tensor) -> bool:
        """Whether the fused kernels take this parameter, so θ ± εz and the update never hold a
        z: contiguous, and fp32 on the CPU (numba) or fp32/bf16/fp16 on CUDA (Triton)."""
        dtypes = (torch.float32,) if param.device.type == "cpu" else _HALF_AND_FULL
        return (
            param.dtype in dtypes
            and param.is_contiguous()
            and philox_kernels(param.device) is not None
        )


class Directions(ABC):
    """The direction z of every parameter for a given step and query."""

    def __init__(self, seed: int, rng: str = "torch") -> None:
        self.seed = seed
        self.rng = str(rng)
        self.normals: Normals = NORMALS.get(self.rng)()

    @classmethod
    def from_config(cls, seed: int, cfg: Any) -> Directions:
        """Built from an optimizer config (its rng; low-rank also reads rank and interval)."""
        return cls(seed, rng=_rng(cfg))

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

    def fused_key(self, name: str, param: torch.Tensor, step: int, query: int) -> int | None:
        """The Philox key of this parameter's dense z when the fused kernels can form θ ± εz and
        the update with it in one pass (no z drawn), else None."""
        return None

    def low_rank(
        self, name: str, param: torch.Tensor, step: int, query: int
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(U, V) with z = U Vᵀ (param viewed as m × n) when this parameter's direction is low
        rank, else None: paired probes and the update then never form z."""
        return None

    def addressable(self, param: torch.Tensor) -> bool:
        """Whether rows of this parameter's z can be drawn without the rest (philox: z[i] is a
        function of its counter; torch draws a block at once, so it keeps the full transient)."""
        return False

    def rows(
        self, name: str, param: torch.Tensor, step: int, query: int, rows: slice | torch.Tensor
    ) -> torch.Tensor:
        """z[rows] in fp32 (a slice or a 1-D index tensor of rows), where addressable."""
        raise NotImplementedError(f"{type(self).__name__} cannot draw rows of z on their own")


@DIRECTIONS.register("gaussian")
class GaussianDirections(Directions):
    """MeZO: z ~ N(0, I) for every parameter (each block of a large one keyed on its own)."""

    def dense_block(
        self, name: str, param: torch.Tensor, step: int, query: int, index: int
    ) -> torch.Tensor:
        return self.normals.block(self.seed, step, query, name, param, index)

    def fused_key(self, name: str, param: torch.Tensor, step: int, query: int) -> int | None:
        if isinstance(self.normals, PhiloxNormals) and self.normals.fusable(param):
            return direction_seed(self.seed, step, query, name)
        return None

    def addressable(self, param: torch.Tensor) -> bool:
        return isinstance(self.normals, PhiloxNormals) and param.ndim >= 1

    def rows(
        self, name: str, param: torch.Tensor, step: int, query: int, rows: slice | torch.Tensor
    ) -> torch.Tensor:
        key = direction_seed(self.seed, step, query, name)
        width, shape = param[0].numel(), tuple(param.shape[1:])
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(param.shape[0])
            return philox_block(key, start * width, (stop - start, *shape), param.device)
        drawn = [philox_block(key, r * width, shape, param.device) for r in rows.tolist()]
        return torch.stack(drawn) if drawn else param.new_empty((0, *shape), dtype=torch.float32)


def _rng(cfg: Any) -> str:
    """The config's rng (a config built before issue 19, without the key, draws with torch)."""
    return str(getattr(cfg, "rng", None) or "torch")


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

    def __init__(self, seed: int, rank: int, interval: int, rng: str = "torch") -> None:
        super().__init__(seed, rng)
        check_low_rank(rank, interval)
        self.rank = rank
        self.interval = interval
        self.gaussian = GaussianDirections(seed, rng)

    @classmethod
    def from_config(cls, seed: int, cfg: Any) -> LowRankDirections:
        return cls(seed, cfg.rank, cfg.interval, rng=_rng(cfg))

    @staticmethod
    def is_low_rank(param: torch.Tensor) -> bool:
        return param.ndim >= 2

    def block(self, step: int) -> int:
        """Index of the lazy-subspace block `step` belongs to (V is constant within a block)."""
        return step // self.interval

    def u(self, name: str, param: torch.Tensor, step: int, query: int) -> torch.Tensor:
        key = direction_seed(self.seed, step, query, f"{name}#U")
        return self.normals.matrix((param.shape[0], self.rank), key, param.device)

    def v(self, name: str, param: torch.Tensor, block: int) -> torch.Tensor:
        n = param[0].numel()
        key = direction_seed(self.seed, block, -1, f"{name}#V")
        return self.normals.matrix((n, self.rank), key, param.device)

    def factors(
        self, name: str, param: torch.Tensor, step: int, query: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, V) of a parameter with 2+ dimensions at this step and query."""
        return self.u(name, param, step, query), self.v(name, param, self.block(step))

    def low_rank(
        self, name: str, param: torch.Tensor, step: int, query: int
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.factors(name, param, step, query) if self.is_low_rank(param) else None

    def fused_key(self, name: str, param: torch.Tensor, step: int, query: int) -> int | None:
        if self.is_low_rank(param):
            return None  # U Vᵀ is applied by addmm, never formed
        return self.gaussian.fused_key(name, param, step, query)

    def addressable(self, param: torch.Tensor) -> bool:
        return self.gaussian.addressable(param)  # U is drawn whole either way: philox only

    def rows(
        self, name: str, param: torch.Tensor, step: int, query: int, rows: slice | torch.Tensor
    ) -> torch.Tensor:
        if not self.is_low_rank(param):
            return self.gaussian.rows(name, param, step, query, rows)
        u, v = self.factors(name, param, step, query)
        picked = u[rows]
        return (picked @ v.T).reshape(picked.shape[0], *param.shape[1:])

    def dense_block(
        self, name: str, param: torch.Tensor, step: int, query: int, index: int
    ) -> torch.Tensor:
        if not self.is_low_rank(param):
            return self.gaussian.dense_block(name, param, step, query, index)
        rows = row_blocks(param)[index]
        u, v = self.factors(name, param, step, query)
        return (u[rows] @ v.T).reshape(param[rows].shape)


@DIRECTIONS.register("subspace")
class SubspaceDirections(LowRankDirections):
    """SubZero (Yu et al., 2024): z = (√(mn)/r)·U Σ Vᵀ for parameters of 2+ dimensions, with U, V
    the orthonormal Q factors of the thin QR of m×r and n×r normals, shared by the `interval`
    steps of a block (the lazy subspace), and Σ an r×r normal matrix fresh every step and query;
    √(mn)/r gives E‖z‖² = mn, a dense Gaussian's, so MeZO's ε and rates carry over. Gaussian z for
    1-D parameters. As factors (U', V) with U' = (√(mn)/r)·U Σ, so probes and updates never form
    z. r is capped at min(m, n) per matrix."""

    def __init__(self, seed: int, rank: int, interval: int, rng: str = "torch") -> None:
        super().__init__(seed, rank, interval, rng)
        self._bases: dict[str, tuple[int, torch.Tensor]] = {}  # the current block's U or V

    def _rank(self, param: torch.Tensor) -> int:
        return min(self.rank, param.shape[0], param[0].numel())

    def _basis(self, name: str, rows: int, param: torch.Tensor, block: int) -> torch.Tensor:
        """Q of the thin QR of a keyed rows × r normal matrix, for this block (cached)."""
        held = self._bases.get(name)
        if held is None or held[0] != block:
            key = direction_seed(self.seed, block, -1, name)
            normals = self.normals.matrix((rows, self._rank(param)), key, param.device)
            held = (block, torch.linalg.qr(normals).Q.contiguous())
            self._bases[name] = held
        return held[1]

    def u(self, name: str, param: torch.Tensor, step: int, query: int) -> torch.Tensor:
        m, n, r = param.shape[0], param[0].numel(), self._rank(param)
        basis = self._basis(f"{name}#SU", m, param, self.block(step))
        key = direction_seed(self.seed, step, query, f"{name}#S")
        core = self.normals.matrix((r, r), key, param.device)
        return (basis @ core).mul_(math.sqrt(m * n) / r)

    def v(self, name: str, param: torch.Tensor, block: int) -> torch.Tensor:
        return self._basis(f"{name}#SV", param[0].numel(), param, block)
