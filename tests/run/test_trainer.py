"""The runner tests at the best-dev state: weights after training are those of the best evaluation."""

import numpy as np
import torch
from omegaconf import OmegaConf

from tests.conftest import tiny
from zoft.optim.configs import MezoConfig
from zoft.optim.mezo import MeZO
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
    assert (outcome.best_step, outcome.best_dev["accuracy"]) == (4, 0.9)
    assert set(outcome.best_dev) == {"accuracy", "loss"}  # the dev loss is recorded too
    final = torch.cat([p.detach().flatten() for p in loaded.model.parameters()])
    assert torch.equal(final, evaluate.seen[1])
    assert not torch.equal(final, evaluate.seen[2])
    assert outcome.forwards == 12 and outcome.steps == 6


def test_batches_from_a_start_continue_the_same_order():
    """A resumed run draws the very batches the uninterrupted run drew after its checkpoint."""
    from itertools import islice

    from zoft.run.trainer import batches

    examples = list(range(10))  # 3 batches of 3 and a short one of 1 per epoch (dropped: 3)
    for drop_last in (False, True):
        whole = list(islice(batches(examples, 3, seed=7, drop_last=drop_last), 8))
        for start in range(8):
            tail = batches(examples, 3, seed=7, start=start, drop_last=drop_last)
            assert list(islice(tail, 8 - start)) == whole[start:]


def test_each_epoch_keeps_its_short_last_batch():
    """HF / LM-BFF loaders (drop_last=False): ceil(n / batch) batches, every example once."""
    from itertools import islice

    from zoft.run.trainer import batches, steps_per_epoch

    examples = list(range(150))
    epoch = list(islice(batches(examples, 8, seed=0), 19))
    assert [len(b) for b in epoch] == [8] * 18 + [6]
    assert sorted(x for b in epoch for x in b) == examples
    assert len(next(batches(list(range(32)), 64, seed=0))) == 32  # the sheet's n=32, batch 64
    dropped = list(islice(batches(examples, 8, seed=0, drop_last=True), 19))
    assert [len(b) for b in dropped] == [8] * 19  # the old rule: 18 per epoch, then epoch 2
    assert dropped[:18] == epoch[:18] and dropped[18] != epoch[18]
    # epoch-based step counts (5 epochs of batch 8): CB 150, COPA 300, WSC 54 train examples
    assert [5 * steps_per_epoch(n, 8) for n in (150, 300, 54, 1000)] == [95, 190, 35, 625]
    assert [5 * steps_per_epoch(n, 8, drop_last=True) for n in (150, 300, 54)] == [90, 185, 30]


def test_batches_are_identical_when_the_batch_size_divides_the_examples():
    from itertools import islice

    from zoft.run.trainer import batches

    examples = list(range(32))
    kept = list(islice(batches(examples, 8, seed=3), 20))
    assert kept == list(islice(batches(examples, 8, seed=3, drop_last=True), 20))
    expected = []  # the former rule, written out: permutation (seed, epoch), full batches only
    for epoch in range(5):
        order = np.random.RandomState([3, epoch]).permutation(32)
        expected += [[examples[i] for i in order[o : o + 8]] for o in range(0, 32, 8)]
    assert kept == expected


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
        checkpoint="auto",  # the runner resolves it once the method is built
        drop_last=True,  # conf/config.yaml's value (its 32 examples fill batches of 8)
        guard=GuardSettings(nonfinite="skip", max_skipped=2),
    )
    cfg = compose([*overrides, "select_by=loss", "drop_last=false"])
    settings = TrainingSettings.from_config(cfg)
    assert (settings.select_by, settings.drop_last) == ("loss", False)
