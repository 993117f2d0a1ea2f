"""LP: linear probing as MeZO ran it (large_models trainer.py, medium_models LinearHeadTrainer).

The frozen model's features where its head scores a gold target (the output projection's input at
each gold-option token of a causal LM, at <mask> for a masked LM, the classifier's last input for
an encoder) are fitted by scikit-learn's LogisticRegressionCV, and its coefficients replace the
head's rows of the classes it saw (±coef/2 for two classes; the intercept into the head's bias
where it has one). Evaluation then scores candidates with the model as usual.

Each step adds the features of its batch's examples not seen before and refits on all of them, so
the state after k steps is the probe of the examples those steps saw (resume, guards and dev
selection need no special case). The paper experiments run one step over the whole train set.
Features always come from the original head: the rows written by the last fit are put back
before a forward, since a tied head is also the input embedding (as in the official code, the
fitted rows do change those input embeddings for evaluation).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from zoft.config import as_dataclass
from zoft.optim.base import Optimizer, StepResult, batch_loss, check_finite
from zoft.optim.registry import OPTIMIZERS
from zoft.scoring.base import Objective
from zoft.tasks.base import Example

log = logging.getLogger(__name__)


def example_key(example: Example) -> str:
    """An example's identity across epochs and resumes (its fields and label)."""
    return json.dumps([example.fields, example.label], sort_keys=True, default=str)


def fit_probe(
    features: np.ndarray, targets: np.ndarray, cfg: Any, fit_intercept: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes, [C, H] coefficients, [C] intercepts) of MeZO's LogisticRegressionCV (random
    state 0, L2, accuracy-scored CV over cfg.cs values of C); two classes give ±coef/2."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    classes, counts = np.unique(targets, return_counts=True)
    tol, max_iter = (0.01, 1000) if cfg.early_stopping else (1e-4, 5000)
    folds = min(cfg.folds, int(counts.min()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # "fewer members than folds"
        if folds >= 2:
            model = LogisticRegressionCV(
                Cs=cfg.cs,
                cv=folds,
                l1_ratios=(0.0,),
                scoring="accuracy",
                fit_intercept=fit_intercept,
                tol=tol,
                max_iter=max_iter,
                random_state=0,
                use_legacy_attributes=False,
            )
        else:  # a class seen once: no fold can hold it out, so sklearn's default C
            model = LogisticRegression(
                fit_intercept=fit_intercept, tol=tol, max_iter=max_iter, random_state=0
            )
        model.fit(features, targets)
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64).reshape(-1)
    if len(classes) == 2:  # sklearn's binary coef_ is for classes[1] against classes[0]
        coef, intercept = (
            np.concatenate([-coef / 2, coef / 2]),
            np.concatenate([-intercept / 2, intercept / 2]),
        )
    return classes, coef, intercept


@OPTIMIZERS.register("lp")  # settings and facts: zoft.optim.configs.LinearProbeConfig
class LinearProbe(Optimizer):
    """Per step: the batch's loss (logged, guarded), then its new examples' head features and a
    refit on every example seen so far (two forwards over the batch, no backward)."""

    def __init__(
        self, cfg: Any, model: nn.Module, scorer: Objective, total_steps: int, seed: int
    ) -> None:
        super().__init__(cfg, model, scorer, total_steps, seed)
        as_dataclass(cfg).check()
        self.head = scorer.head(model)
        self.features: list[torch.Tensor] = []  # per step, [T_i, H] fp32 on the CPU
        self.targets: list[torch.Tensor] = []
        self.seen: set[str] = set()
        # the head's rows before any fit: (weight row, bias entry or None) per row written
        self.original: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.fitted_on = 0  # feature rows of the last fit
        # the last fit: (classes [C] long, coefficients [C, H], intercepts [C]) in float64
        self.fit: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def trainable(self) -> dict[str, nn.Parameter]:
        """The head's weight (and bias): what a fit writes, checkpoints and dev selection keep."""
        mine = {id(self.head.weight)} | ({id(self.head.bias)} if self._has_bias() else set())
        return {n: p for n, p in self.model.named_parameters() if id(p) in mine}

    def _has_bias(self) -> bool:
        return getattr(self.head, "bias", None) is not None

    @torch.no_grad()
    def step(self, batch: Sequence[Example], step: int) -> StepResult:
        self.model.eval()
        parts = math.ceil(len(batch) / self.cfg.feature_batch)
        loss = batch_loss(self.scorer, self.model, batch, parts)
        check_finite(step, loss=loss)
        new = [ex for ex in batch if example_key(ex) not in self.seen]
        if new:
            self._put_back_original_rows()
            chunks = [
                self.scorer.head_features(self.model, new[at : at + self.cfg.feature_batch])
                for at in range(0, len(new), self.cfg.feature_batch)
            ]
            features = torch.cat([f for f, _ in chunks])
            targets = torch.cat([t for _, t in chunks])
            if not torch.isfinite(features).all():
                self._write_fit()  # the last fit again: this step changes nothing
                check_finite(step, features=float("nan"))
            self.features.append(features.cpu())
            self.targets.append(targets.cpu())
            self.seen.update(example_key(ex) for ex in new)
            self._fit()
        return StepResult(loss=loss, lr=0.0, forwards=2, backwards=0)

    def _fit(self) -> None:
        features = torch.cat(self.features).numpy()
        targets = torch.cat(self.targets).numpy()
        if len(np.unique(targets)) < 2:
            log.info(
                "lp: one class among %d targets so far; the head is left as it is", len(targets)
            )
            self._put_back_original_rows()
            self.fitted_on = len(targets)
            return
        classes, coef, intercept = fit_probe(features, targets, self.cfg, self._has_bias())
        self.fit = (torch.from_numpy(classes), torch.from_numpy(coef), torch.from_numpy(intercept))
        self.fitted_on = len(targets)
        self._write_fit()

    @torch.no_grad()
    def _write_fit(self) -> None:
        if self.fit is None:
            return
        classes, coef, intercept = self.fit
        weight = self.head.weight
        for row, c, b in zip(classes.tolist(), coef, intercept, strict=True):
            if row not in self.original:
                bias = self.head.bias[row].clone() if self._has_bias() else None
                self.original[row] = (weight[row].clone(), bias)
            weight[row] = c.to(weight.dtype)
            if self._has_bias():
                self.head.bias[row] = b.to(weight.dtype)

    @torch.no_grad()
    def _put_back_original_rows(self) -> None:
        for row, (w, b) in self.original.items():
            self.head.weight[row] = w
            if b is not None:
                self.head.bias[row] = b

    def stats(self) -> dict[str, Any]:
        return {
            "lp_examples": len(self.seen),
            "lp_feature_rows": self.fitted_on,
            "lp_classes": 0 if self.fit is None else len(self.fit[0]),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "targets": list(self.targets),
            "seen": sorted(self.seen),
            "original": dict(self.original),
            "fit": self.fit,
            "fitted_on": self.fitted_on,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.features, self.targets = list(state["features"]), list(state["targets"])
        self.seen, self.original = set(state["seen"]), dict(state["original"])
        self.fit, self.fitted_on = state["fit"], state["fitted_on"]
