"""SubZero: zeroth-order SGD in random low-dimensional subspaces (Yu et al., 2024; official code
zimingyy/SubZero, read for its facts). Each weight matrix is perturbed by z = (√(mn)/r)·U Σ Vᵀ:
U, V orthonormal (QR of normals), redrawn every `interval` steps, Σ a fresh r×r normal matrix
each step (zoft.optim.directions.SubspaceDirections); g = (L(θ+εz) − L(θ−εz))/2ε and
θ ← θ − η(g z + λθ) along exactly the probed z."""

from __future__ import annotations

from zoft.optim.directions import Directions, SubspaceDirections
from zoft.optim.registry import OPTIMIZERS
from zoft.optim.zeroth_order import ZerothOrderOptimizer


@OPTIMIZERS.register("subzero")  # settings and facts: zoft.optim.configs.SubZeroConfig
class SubZero(ZerothOrderOptimizer):
    """MeZO's two-point step with SubZero's subspace directions (no momentum, one direction per
    query); 1-D parameters take a dense Gaussian z."""

    def directions(self) -> Directions:
        return SubspaceDirections.from_config(self.seed, self.cfg)
