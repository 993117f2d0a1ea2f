"""LoRA injection through peft: what requires grad, the zero-initialised B factor, targets, r / α."""

import pytest
import torch

from tests.conftest import compose, model_cfg, tiny
from zoft.config import LoraConfig
from zoft.models.adapters import (
    AdapterError,
    add_adapter,
    is_adapter_parameter,
    is_head_parameter,
)
from zoft.models.loading import load_model
from zoft.optim.configs import AdamConfig, AdamLoraConfig, LmaoConfig
from zoft.registry import UnknownNameError

TARGETS = {
    "opt": ["q_proj", "v_proj"],
    "llama": ["q_proj", "v_proj"],
    "roberta": ["query", "value"],
}
TEXT = "the movie is long but the acting is strong . It was great"


def _logits(loaded) -> torch.Tensor:
    loaded.model.eval()  # no dropout: two forwards on the same weights give the same numbers
    inputs = loaded.tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        return loaded.model(**inputs).logits


def _lora_names(model) -> list[str]:
    return [n for n, _ in model.named_parameters() if "lora_" in n]


@pytest.mark.parametrize("arch", ["opt", "llama", "roberta"])
def test_lora_trains_only_the_factors_and_leaves_the_function_unchanged(arch):
    loaded = tiny(arch)
    before = _logits(loaded)
    n_base = sum(1 for _ in loaded.model.parameters())

    add_adapter(loaded.model, LmaoConfig(), model_cfg(f"tiny-{arch}"))

    named = dict(loaded.model.named_parameters())
    trainable = sorted(n for n, p in named.items() if p.requires_grad)
    assert trainable == sorted(_lora_names(loaded.model))
    # A and B for each target module in each of the 2 layers
    assert len(trainable) == 2 * len(TARGETS[arch]) * 2 == 8
    assert len(named) == n_base + 8  # the base weights are kept (as base_layer), none duplicated
    for target in TARGETS[arch]:
        assert sum(f".{target}.lora_A." in n for n in trainable) == 2
        assert sum(f".{target}.lora_B." in n for n in trainable) == 2
    for name in trainable:
        if ".lora_B." in name:
            assert torch.count_nonzero(named[name]) == 0
        else:  # lora_A is randomly initialised, otherwise B could never get a gradient
            assert torch.count_nonzero(named[name]) > 0
    assert torch.equal(_logits(loaded), before)


def test_optimizer_targets_override_the_model_targets():
    loaded = tiny("opt")
    cfg = LmaoConfig(lora=LoraConfig(targets=["k_proj", "out_proj"]))
    add_adapter(loaded.model, cfg, model_cfg("tiny-opt"))
    lora = _lora_names(loaded.model)
    assert len(lora) == 8
    assert all(".k_proj.lora_" in n or ".out_proj.lora_" in n for n in lora)
    assert not any(".q_proj." in n or ".v_proj." in n for n in lora)
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert trainable == set(lora)


def test_unknown_target_names_the_targets_and_the_fix():
    loaded = tiny("opt")
    cfg = LmaoConfig(lora=LoraConfig(targets=["no_such_proj"]))
    with pytest.raises(AdapterError) as info:
        add_adapter(loaded.model, cfg, model_cfg("tiny-opt"))
    message = str(info.value)
    assert "no_such_proj" in message and "tiny-opt" in message
    assert "optimizer.lora.targets" in message


def test_a_model_without_lora_targets_takes_its_architectures():
    loaded = tiny("opt")
    mc = model_cfg("tiny-opt")
    mc.lora_targets = []
    add_adapter(loaded.model, LmaoConfig(), mc)  # peft's targets for OPT: q_proj, v_proj
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in _lora_names(loaded.model)} == {
        "q_proj",
        "v_proj",
    }


def test_an_architecture_without_lora_targets_is_refused(monkeypatch):
    from peft.utils import constants

    loaded = tiny("opt")
    mc = model_cfg("tiny-opt")
    mc.lora_targets = []
    monkeypatch.delitem(constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, "opt")
    with pytest.raises(AdapterError, match=r"architecture 'opt'.*model\.lora_targets"):
        add_adapter(loaded.model, LmaoConfig(), mc)
    assert not _lora_names(loaded.model)  # nothing was injected


def test_no_adapter_trains_every_parameter():
    loaded = tiny("opt")
    params = list(loaded.model.parameters())
    for p in params[::2]:
        p.requires_grad_(False)
    add_adapter(loaded.model, AdamConfig(), model_cfg("tiny-opt"))
    assert all(p.requires_grad for p in loaded.model.parameters())
    assert not _lora_names(loaded.model)
    assert len(list(loaded.model.parameters())) == len(params)


def test_unknown_adapter_name_is_refused():
    loaded = tiny("opt")
    with pytest.raises(UnknownNameError, match="lora"):  # the message lists the known adapters
        add_adapter(loaded.model, AdamConfig(adapter="lorra"), model_cfg("tiny-opt"))


def test_rank_and_alpha_reach_peft():
    loaded = tiny("opt")
    cfg = AdamLoraConfig(lora=LoraConfig(r=3, alpha=12))
    add_adapter(loaded.model, cfg, model_cfg("tiny-opt"))
    q_proj = loaded.model.model.decoder.layers[0].self_attn.q_proj
    base = q_proj.base_layer
    assert q_proj.lora_A["default"].weight.shape == (3, base.in_features)
    assert q_proj.lora_B["default"].weight.shape == (base.out_features, 3)
    assert q_proj.r["default"] == 3
    assert q_proj.scaling["default"] == pytest.approx(12 / 3)


def test_zero_rank_is_refused():
    loaded = tiny("opt")
    with pytest.raises(AdapterError, match=r"optimizer\.lora\.r=0"):
        add_adapter(loaded.model, AdamLoraConfig(lora=LoraConfig(r=0)), model_cfg("tiny-opt"))


def test_classifier_head_is_trained_beside_the_adapters():
    mc = compose(["model=tiny-roberta", "model.kind=classifier"]).model
    loaded = load_model(mc, "fp32", "cpu", num_labels=2)
    add_adapter(loaded.model, AdamLoraConfig(), mc)
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    head = {n for n in trainable if is_head_parameter(n)}
    assert head and all(n.startswith("classifier.") for n in head)
    assert trainable == head | {n for n in trainable if is_adapter_parameter(n)}
    assert len(trainable - head) == 8
    frozen = [n for n, p in loaded.model.named_parameters() if not p.requires_grad]
    assert frozen and not any(is_head_parameter(n) or is_adapter_parameter(n) for n in frozen)


def test_one_unknown_target_among_known_ones_is_refused():
    loaded = tiny("opt")
    cfg = AdamLoraConfig(lora=LoraConfig(targets=["q_proj", "no_such_proj"]))
    with pytest.raises(AdapterError, match=r"\['no_such_proj'\].*optimizer.lora.targets"):
        add_adapter(loaded.model, cfg, model_cfg("tiny-opt"))


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_adapter_factors_are_fp32_over_half_precision_weights(dtype):
    """AdamW on half-precision factors would round small updates away; the base stays as loaded
    and the model's outputs keep their dtype and values."""
    loaded = tiny("opt", dtype=dtype)
    model = loaded.model.eval()
    ids = torch.randint(5, 400, (2, 10))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    add_adapter(model, AdamLoraConfig(), model_cfg("tiny-opt"))
    factors = [p for n, p in model.named_parameters() if is_adapter_parameter(n)]
    base = [p for n, p in model.named_parameters() if not is_adapter_parameter(n)]
    assert factors and all(p.dtype == torch.float32 for p in factors)
    assert all(p.dtype == before.dtype for p in base)
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert after.dtype == before.dtype and torch.equal(after, before)
