"""Dev selection: by the task metric (LM-BFF / MeZO medium_models: highest, strictly better) or by
the dev loss (HF Trainer load_best_model_at_end without metric_for_best_model, as the OPT scripts
run it: lowest eval_loss, strictly better, so the earliest of tied checkpoints wins)."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose, tiny
from zoft.optim.configs import MezoConfig
from zoft.optim.mezo import MeZO
from zoft.run.loggers import MetricsLog
from zoft.run.runner import run
from zoft.run.trainer import DEV_LOSS, BestDevState, Evaluator, train
from zoft.scoring import build_scorer
from zoft.tasks import get_task
from zoft.tasks.base import Splits

# the sheet's golden sequence (losses 0.7, 0.6, 0.6, 0.65) with accuracies that disagree
LOSSES = [0.7, 0.6, 0.6, 0.65]
ACCURACIES = [0.5, 0.6, 0.8, 0.7]


@pytest.mark.parametrize("select_by,expected", [("loss", 2), ("metric", 3)])
def test_the_rule_picks_its_own_evaluation(select_by, expected):
    best = BestDevState({}, "accuracy", select_by)
    for k, (loss, acc) in enumerate(zip(LOSSES, ACCURACIES, strict=True), start=1):
        best.offer(k * 100, {"accuracy": acc, DEV_LOSS: loss}, is_last=k == len(LOSSES))
    assert best.step == expected * 100
    assert best.scores == {"accuracy": ACCURACIES[expected - 1], DEV_LOSS: LOSSES[expected - 1]}


def test_ties_keep_the_earliest_and_nan_never_wins():
    best = BestDevState({}, "accuracy", "loss")
    best.offer(1, {"accuracy": 0.1, DEV_LOSS: float("nan")}, is_last=False)
    assert best.step == 0
    best.offer(2, {"accuracy": 0.1, DEV_LOSS: 0.5}, is_last=False)
    best.offer(3, {"accuracy": 0.9, DEV_LOSS: 0.5}, is_last=False)
    assert best.step == 2


class ScriptedEvaluator(Evaluator):
    """Dev metric and dev loss follow scripts; the weights at each evaluation are recorded."""

    def __init__(self, base: Evaluator) -> None:
        super().__init__(base.task, base.scorer, base.model, base.batch_size)
        self.accuracies, self.losses = list(ACCURACIES), list(LOSSES)
        self.seen: list[torch.Tensor] = []

    def __call__(self, examples):
        self.seen.append(torch.cat([p.detach().flatten().clone() for p in self.model.parameters()]))
        return {"accuracy": self.accuracies.pop(0)}

    def loss(self, examples):
        return self.losses.pop(0)


@pytest.mark.parametrize("select_by,expected", [("loss", 2), ("metric", 3)])
def test_training_restores_the_weights_the_rule_chose(data_dir, tmp_path, select_by, expected):
    loaded = tiny("opt")
    task = get_task("sst2")
    examples = task.load_local("train", data_dir)[:16]
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    optimizer = MeZO(MezoConfig(lr=1e-2, eps=1e-3), loaded.model, scorer, total_steps=8, seed=0)
    evaluate = ScriptedEvaluator(Evaluator(task, scorer, loaded.model, 8))
    cfg = OmegaConf.create(
        {"steps": 8, "batch_size": 4, "seed": 0, "eval_every": 2, "select_by": select_by}
    )
    splits = Splits(examples, examples[:4], examples[:4], "test")
    metrics = tmp_path / "m.jsonl"
    outcome = train(cfg, optimizer, splits, evaluate, MetricsLog(metrics))
    assert outcome.best_step == 2 * expected
    assert outcome.best_dev[DEV_LOSS] == LOSSES[expected - 1]
    final = torch.cat([p.detach().flatten() for p in loaded.model.parameters()])
    assert torch.equal(final, evaluate.seen[expected - 1])
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["dev_loss"] for r in lines if "dev_loss" in r] == LOSSES


def test_dev_loss_is_the_training_loss_on_dev(data_dir):
    """The Evaluator's dev loss is the scorer's loss over the dev examples, in eval mode."""
    loaded = tiny("opt")
    task = get_task("sst2")
    dev = task.load_local("train", data_dir)[:6]
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    loaded.model.train()
    value = Evaluator(task, scorer, loaded.model, batch_size=4).loss(dev)  # batches of 4 and 2
    assert loaded.model.training  # the mode is given back
    loaded.model.eval()
    with torch.no_grad():
        assert value == pytest.approx(scorer.loss(loaded.model, dev).item(), rel=1e-5)


def test_a_tiny_run_selects_by_dev_loss(tmp_path, data_dir):
    cfg = compose(
        [
            "model=tiny-opt",
            "optimizer=mezo",
            "optimizer.lr=1e-3",
            "steps=4",
            "eval_every=1",
            "batch_size=8",
            "select_by=loss",
            "zero_shot=false",
            "task.kshot_test_cap=8",
            "threads=1",
            f"output_dir={tmp_path}",
            f"task.data_dir={data_dir}",
        ]
    )
    result = run(cfg)
    assert result["status"] == "complete"
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    dev_losses = {r["step"]: r["dev_loss"] for r in lines if "dev_loss" in r}
    assert sorted(dev_losses) == [1, 2, 3, 4]
    best = min(dev_losses, key=lambda step: (dev_losses[step], step))
    assert result["best_step"] == best
    assert result["dev"][DEV_LOSS] == dev_losses[best]
