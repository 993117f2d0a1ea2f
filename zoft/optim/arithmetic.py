"""The per-parameter maths of the zeroth-order methods: θ ± scale·z formed without writing θ, and
the update θ ← θ·(1 − decay) + Σ c·z (dense z, or LOZO's low-rank U Vᵀ applied by addmm),
block by block of rows in fp32, rounded once: to nearest, or (rounding=stochastic or auto, for
bf16/fp16 weights) up or down at random with the probability that makes the expected weight the fp32 one,
the random numbers keyed by (seed, step, parameter) like the directions. `swept` counts the
θ-sized tensors formed or written (a z, a transient θ±εz, an update), the engine's parameter
passes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from zoft.optim.directions import Directions, direction_seed, philox_kernels, row_blocks

# adds one block of rows' change to `value` (fp32 rows of θ): (value, block index, rows)
BlockUpdate = Callable[[torch.Tensor, int, object], None]


class Perturbation:
    """Keyed directions applied to parameters, with the sweeps they cost."""

    def __init__(self, directions: Directions, rounding: str = "nearest") -> None:
        self.directions = directions
        self.rounding = str(rounding)
        self.swept = 0  # elements of θ-sized tensors formed or written

    def direction(self, name: str, param: torch.Tensor, step: int, query: int) -> torch.Tensor:
        """z for one parameter, in fp32, on the parameter's device (one sweep over it)."""
        self.swept += param.numel()
        return self.directions.dense(name, param, step, query)

    def perturbed(
        self, name: str, original: torch.Tensor, step: int, scale: float, query: int
    ) -> torch.Tensor:
        """A new tensor θ + scale·z in θ's dtype (θ is not modified), formed block by block of
        rows: the only other memory is one block of z (none where the fused kernels apply)."""
        self.swept += original.numel()
        key = self.directions.fused_key(name, original, step, query)
        if key is not None:  # one pass, no z: the same bits as the unfused path
            out = torch.empty_like(original)
            philox_kernels(original.device).perturbed_into(
                out.view(-1), original.view(-1), scale, key, 0
            )
            return out
        blocks = row_blocks(original)
        if len(blocks) == 1:
            z = self.directions.dense_block(name, original, step, query, 0)
            return z.mul_(scale).add_(original).to(original.dtype)
        out = torch.empty_like(original)
        for index, rows in enumerate(blocks):
            z = self.directions.dense_block(name, original, step, query, index)
            out[rows] = z.mul_(scale).add_(original[rows]).to(original.dtype)
        return out

    def perturbed_rows(
        self,
        name: str,
        original: torch.Tensor,
        rows: slice | torch.Tensor,
        step: int,
        scale: float,
        query: int,
    ) -> torch.Tensor:
        """θ[rows] + scale·z[rows] in θ's dtype (rows: a slice or a 1-D index tensor), drawing only
        those rows of z (directions.addressable). For a dense z these are the bits of the same rows
        of perturbed(); a low-rank U[rows] Vᵀ may round differently from rows of U Vᵀ."""
        key = self.directions.fused_key(name, original, step, query)
        if key is not None:
            kernels = philox_kernels(original.device)
            if isinstance(rows, slice):
                start = rows.indices(original.shape[0])[0] * original[0].numel()
                block = original[rows]
                out = torch.empty_like(block)
                kernels.perturbed_into(out.view(-1), block.reshape(-1), scale, key, start)
            else:
                out = original.new_empty((len(rows), *original.shape[1:]))
                kernels.perturbed_rows_into(
                    out.view(len(rows), -1), original.view(original.shape[0], -1), rows, scale, key
                )
            self.swept += out.numel()
            return out
        z = self.directions.rows(name, original, step, query, rows)
        self.swept += z.numel()
        return z.mul_(scale).add_(original[rows]).to(original.dtype)

    @torch.no_grad()
    def perturb_in_place(
        self, name: str, data: torch.Tensor, step: int, scale: float, query: int
    ) -> None:
        """data ← data + scale·z (its caller keeps a copy to restore from): by the fused kernels
        in one pass with no transient where they apply, else through perturbed()."""
        key = self.directions.fused_key(name, data, step, query)
        if key is None:
            data.copy_(self.perturbed(name, data, step, scale, query))
            return
        self.swept += data.numel()
        flat = data.view(-1)
        philox_kernels(data.device).perturbed_into(flat, flat, scale, key, 0)

    @torch.no_grad()
    def update(
        self,
        params: dict[str, torch.nn.Parameter],
        step: int,
        coeffs: Sequence[float],
        decay: float,
    ) -> None:
        """θ ← θ·(1 − decay) + Σ_q coeffs[q]·z_q for every parameter, one sweep per query."""
        for name, p in params.items():
            if not self._rounds_stochastically(p) and self._fused_update(
                name, p, step, coeffs, decay
            ):
                continue
            factors = [self.directions.low_rank(name, p, step, q) for q in range(len(coeffs))]

            def add(value: torch.Tensor, index: int, rows: object, name=name, p=p, factors=factors):
                for query, (c, uv) in enumerate(zip(coeffs, factors, strict=True)):
                    if uv is None:
                        value.add_(
                            self.directions.dense_block(name, p, step, query, index), alpha=c
                        )
                    else:
                        add_low_rank_rows(value, uv[0][rows], uv[1], c)

            self.update_parameter(name, p, step, decay, add, sweeps=len(coeffs))

    def _fused_update(
        self, name: str, p: torch.nn.Parameter, step: int, coeffs: Sequence[float], decay: float
    ) -> bool:
        """The update by the fused kernels, in place with no z, when every query's direction
        allows it: θ·(1 − decay) first, then + c_q·z_q one query at a time (update_parameter's
        order and roundings). Whether it was applied."""
        if len(coeffs) > 1 and p.dtype != torch.float32:
            return False  # half-precision weights take all queries in fp32, then round once
        keys = [self.directions.fused_key(name, p.data, step, q) for q in range(len(coeffs))]
        if not keys or None in keys:
            return False
        kernels, theta = philox_kernels(p.device), p.data.view(-1)
        first_decay = decay if p.ndim >= 2 else 0.0  # biases and norm weights are not decayed
        for query, (c, key) in enumerate(zip(coeffs, keys, strict=True)):
            kernels.update_inplace(theta, c, first_decay if query == 0 else 0.0, key, 0)
        self.swept += p.numel() * len(coeffs)
        return True

    def _rounds_stochastically(self, p: torch.Tensor) -> bool:
        return self.rounding != "nearest" and p.dtype != torch.float32  # auto: stochastic

    @torch.no_grad()
    def update_parameter(
        self,
        name: str,
        p: torch.nn.Parameter,
        step: int,
        decay: float,
        add: BlockUpdate,
        sweeps: int = 1,
    ) -> None:
        """θ ← θ·(1 − decay) + add(...) block by block of rows (decay only on 2+-dimensional
        parameters: biases and norm weights are 1-D), in fp32 (in place for fp32 weights), then
        rounded into θ's dtype by the engine's rule."""
        generator = None
        if self._rounds_stochastically(p):
            generator = torch.Generator(device=p.device)
            generator.manual_seed(rounding_key(self.directions.seed, step, name))
        for index, rows in enumerate(row_blocks(p)):
            value = p.data[rows].float()  # a view of p.data itself when fp32
            if decay and p.ndim >= 2:
                value.mul_(1.0 - decay)
            add(value, index, rows)
            if generator is not None:
                p.data[rows] = stochastically_rounded(value, p.dtype, generator)
            elif value.data_ptr() != p.data[rows].data_ptr():
                p.data[rows] = value
        self.swept += p.numel() * sweeps


def rounding_key(seed: int, step: int, name: str) -> int:
    """The generator seed of one parameter's rounding at one step (a key no direction uses)."""
    return direction_seed(seed, step, -1, f"{name}#round")


def stochastically_rounded(
    value: torch.Tensor, dtype: torch.dtype, generator: torch.Generator
) -> torch.Tensor:
    """fp32 `value` in `dtype`, each element one of its two neighbours there: the far one with
    probability |value − near| / |far − near|, so that E[result] = value (exact values, and
    non-finite ones, stay as round-to-nearest gives them). One uniform per element, from
    `generator` (blocks drawn in row order: the same bits on every device and every resume)."""
    near = value.to(dtype)
    near_value = near.float()
    away = torch.where(near_value > value, float("-inf"), float("inf")).to(dtype)
    far = torch.nextafter(near, away)
    chance = (value - near_value).abs_().div_((far.float() - near_value).abs_())
    uniform = torch.rand(value.shape, generator=generator, device=value.device)
    return torch.where(uniform < chance.nan_to_num_(nan=0.0), far, near)


def add_low_rank_rows(
    value: torch.Tensor, u_rows: torch.Tensor, v: torch.Tensor, alpha: float
) -> None:
    """value += alpha·U[rows] Vᵀ in place, by addmm (the m × n product is never formed)."""
    value.view(value.shape[0], -1).addmm_(u_rows, v.T, alpha=alpha)
