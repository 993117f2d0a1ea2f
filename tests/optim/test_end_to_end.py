"""Every registered optimizer trains 3 steps from the config system, on each model kind (tiny
causal LMs, tiny masked LMs, the packaged encoder with a classification head) and on every
architecture model=tiny builds."""

import pytest

from tests.conftest import compose
from zoft.optim import OPTIMIZERS
from zoft.run.runner import run

# the shipped configs, then every other architecture model=tiny builds (model.arch)
MODELS = {
    **{name: [f"model={name}"] for name in ("tiny-opt", "tiny-llama", "tiny-roberta", "minilm-l6")},
    **{
        f"tiny-{arch}": ["model=tiny", f"model.arch={arch}"]
        for arch in ("mistral", "qwen2", "gemma2", "gpt2", "gpt_neox", "phi3", "bert")
    },
}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_optimizer_runs_three_steps(optimizer, model, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOFT_DATA", str(data_dir))
    cfg = compose(
        [
            *MODELS[model],
            f"optimizer={optimizer}",
            "task=rte",
            "task.protocol=large",
            "task.num_train=8",
            "task.num_dev=4",
            "task.num_eval=8",
            "steps=3",
            "batch_size=4",
            "eval_batch_size=8",
            "zero_shot=false",
            f"results_dir={tmp_path}",
        ]
    )
    result = run(cfg)
    assert result["status"] == "complete" and result["steps"] == 3
    facts = OPTIMIZERS.facts(optimizer)  # a wrong fact fails here: the run counts its passes
    assert (result["forward_passes"], result["backward_passes"]) == (
        3 * facts.forwards,
        3 * facts.backwards,
    )
    total = result["trainable_parameters"]
    assert total > 0
    # forwards beyond the backprop ones are ZO probes: LMAO's adapters by backprop, every base
    # weight by ZO
    hybrid = facts.backwards > 0 and facts.forwards > facts.backwards
    if hybrid:
        stats = result["optimizer_stats"]
        assert total == stats["adapter_parameters"] + stats["zo_parameters"]
        assert total > result["model_parameters"]  # the model's weights plus the adapters
    elif facts.lora:  # adapters only (plus a classifier head)
        assert total < 0.5 * result["model_parameters"]
    if facts.zeroth_order:  # how its probes ran, and why, are on record
        assert result["optimizer_stats"]["probes"] == "sequential"  # probes=auto on a CPU
        assert "on cpu" in result["optimizer_stats"]["probes_reason"]
    assert 0.0 <= result["test"]["accuracy"] <= 1.0
    assert result["train_loss_first"] > 0
