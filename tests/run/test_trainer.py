"""The runner tests at the best-dev state: weights after training are those of the best evaluation."""

import torch
from omegaconf import OmegaConf

from tests.conftest import tiny
from zoft.optim.mezo import MeZO, MezoConfig
from zoft.run.loggers import MetricsLog
from zoft.run.trainer import Evaluator, train
from zoft.scoring import build_scorer
from zoft.tasks import get_task
from zoft.tasks.base import Splits


class ScriptedEvaluator(Evaluator):
    """Dev scores follow a script and the weights at each evaluation are recorded."""

    def __init__(self, base: Evaluator, script: list[float]) -> None:
        super().__init__(base.task, base.scorer, base.model, base.batch_size)
        self.script = list(script)
        self.seen: list[torch.Tensor] = []

    def __call__(self, examples):
        self.seen.append(torch.cat([p.detach().flatten().clone() for p in self.model.parameters()]))
        return {"accuracy": self.script.pop(0)}


def test_best_dev_weights_are_restored_after_training(data_dir, tmp_path):
    loaded = tiny("opt")
    task = get_task("sst2")
    examples = task.load_local("train", data_dir)[:16]
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    optimizer = MeZO(MezoConfig(lr=1e-2, eps=1e-3), loaded.model, scorer, total_steps=6, seed=0)
    evaluate = ScriptedEvaluator(Evaluator(task, scorer, loaded.model, 8), [0.5, 0.9, 0.7])
    cfg = OmegaConf.create(
        {"steps": 6, "batch_size": 4, "seed": 0, "eval_every": 2, "log_every": 1}
    )
    splits = Splits(examples, examples[:4], examples[:4], "test")
    outcome = train(cfg, optimizer, splits, evaluate, MetricsLog(tmp_path / "m.jsonl"))
    assert (outcome.best_step, outcome.best_dev) == (4, {"accuracy": 0.9})
    final = torch.cat([p.detach().flatten() for p in loaded.model.parameters()])
    assert torch.equal(final, evaluate.seen[1])
    assert not torch.equal(final, evaluate.seen[2])
    assert outcome.forwards == 12 and outcome.steps == 6


def test_batches_from_a_start_continue_the_same_order():
    """A resumed run draws the very batches the uninterrupted run drew after its checkpoint."""
    from itertools import islice

    from zoft.run.trainer import batches

    examples = list(range(10))  # 3 batches of 3 per epoch (one example left out per epoch)
    whole = list(islice(batches(examples, 3, seed=7), 8))
    for start in range(8):
        assert list(islice(batches(examples, 3, seed=7, start=start), 8 - start)) == whole[start:]


def test_training_settings_are_read_from_the_run_config():
    from tests.conftest import compose
    from zoft.run.guards import GuardSettings
    from zoft.run.trainer import TrainingSettings

    overrides = ["steps=7", "batch_size=4", "seed=3", "eval_every=2", "log_every=1"]
    cfg = compose([*overrides, "checkpoint_every=5", "guard.nonfinite=skip", "guard.max_skipped=2"])
    assert TrainingSettings.from_config(cfg) == TrainingSettings(
        steps=7,
        batch_size=4,
        seed=3,
        eval_every=2,
        log_every=1,
        checkpoint_every=5,
        guard=GuardSettings(nonfinite="skip", max_skipped=2),
    )
