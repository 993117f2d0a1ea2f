"""What a model is, read from its transformers config: kind=auto, the architecture's LoRA
targets, and the configs that use them (model=hub, model=local, model=tiny)."""

import pytest
from transformers import AutoConfig, BertConfig, GPT2Config, T5Config

from tests.conftest import compose
from zoft.config import TinyArch
from zoft.errors import ZoftError
from zoft.models import detect
from zoft.models.detect import (
    ModelDetectError,
    default_lora_targets,
    kind_of,
    lora_targets_of,
    model_kind,
)
from zoft.models.loading import load_model

CAUSAL = ["llama", "mistral", "qwen2", "gemma2", "gpt2", "gpt_neox", "phi3", "opt"]
MASKED = ["roberta", "bert"]


def test_every_tiny_architecture_is_listed_once():
    assert sorted(CAUSAL + MASKED) == sorted(a.value for a in TinyArch)


@pytest.mark.parametrize("arch", CAUSAL + MASKED)
def test_tiny_architecture_builds_with_its_kind_name_and_lora_targets(arch):
    cfg = compose(["model=tiny", f"model.arch={arch}"]).model
    assert cfg.name == f"tiny-{arch}" and cfg.tiny.arch == arch
    kind = model_kind(cfg)
    assert kind == ("masked_lm" if arch in MASKED else "causal_lm")
    loaded = load_model(cfg, "fp32", "cpu")
    assert loaded.model.config.model_type == arch
    modules = [name for name, _ in loaded.model.named_modules()]
    targets = lora_targets_of(compose(["optimizer=ft-lora"]).optimizer, cfg)
    assert targets and all(any(m.endswith(f".{t}") for m in modules) for t in targets)
    assert sum(p.numel() for p in loaded.model.parameters()) < 500_000


@pytest.mark.parametrize(
    "architectures,kind",
    [
        (["BertForMaskedLM"], "masked_lm"),
        (["BertForPreTraining"], "masked_lm"),
        (["BertModel"], "classifier"),  # a sentence encoder: no MLM head to score with
        (["BertForSequenceClassification"], "classifier"),
        (None, "masked_lm"),
    ],
)
def test_an_encoder_is_masked_with_an_mlm_head_and_a_classifier_without(architectures, kind):
    assert kind_of(BertConfig(architectures=architectures)) == kind


@pytest.mark.parametrize("architectures", [["GPT2LMHeadModel"], ["GPT2Model"], None])
def test_a_decoder_is_a_causal_lm(architectures):
    assert kind_of(GPT2Config(architectures=architectures)) == "causal_lm"


def test_an_encoder_decoder_is_refused_by_name():
    with pytest.raises(ModelDetectError, match="'t5' is an encoder-decoder"):
        kind_of(T5Config())


def test_lora_targets_come_from_peft_then_zoft_then_the_config():
    assert default_lora_targets("gpt2") == ["c_attn"]  # peft's mapping
    assert default_lora_targets("gpt_neox") == ["query_key_value"]
    assert default_lora_targets("phi3") == ["qkv_proj"]  # not in peft's mapping
    assert default_lora_targets("no-such-architecture") == []
    declared = compose(["model=tiny", "model.arch=gpt2", "model.lora_targets=[c_proj]"])
    assert lora_targets_of(compose(["optimizer=ft-lora"]).optimizer, declared.model) == ["c_proj"]


def test_an_architecture_without_lora_targets_is_refused_before_loading(
    monkeypatch, tmp_path, data_dir
):
    from zoft.run.runner import run

    monkeypatch.setattr(detect, "EXTRA_LORA_TARGETS", {})  # as if zoft knew none for phi3
    monkeypatch.setattr(
        "zoft.models.loading.load_model", lambda *a, **k: pytest.fail("loaded a model")
    )
    cfg = compose(["model=tiny", "model.arch=phi3", "optimizer=ft-lora", f"results_dir={tmp_path}"])
    with pytest.raises(ZoftError, match=r"architecture 'phi3'.*model\.lora_targets="):
        run(cfg)


def test_model_local_reads_kind_and_name_from_the_directory(tmp_path, data_dir, monkeypatch):
    from zoft.run.runner import run

    built = load_model(compose(["model=tiny", "model.arch=bert"]).model, "fp32", "cpu")
    folder = tmp_path / "My-Bert"
    built.model.save_pretrained(folder)
    built.tokenizer.save_pretrained(folder)
    assert AutoConfig.from_pretrained(folder).architectures == ["BertForMaskedLM"]
    monkeypatch.setenv("ZOFT_DATA", str(data_dir))
    cfg = compose(
        [
            "model=local",
            f"model.path={folder}",
            "optimizer=mezo",
            "task=rte",
            "task.num_train=8",
            "task.num_dev=4",
            "task.num_eval=8",
            "steps=2",
            "batch_size=4",
            f"results_dir={tmp_path / 'runs'}",
        ]
    )
    assert cfg.model.name == "my-bert" and model_kind(cfg.model) == "masked_lm"
    result = run(cfg)
    assert result["status"] == "complete" and result["model"] == "my-bert"
    assert "/rte/my-bert/mezo/" in result["output_dir"]


def test_model_hub_is_named_by_its_id_and_needs_one():
    cfg = compose(["model=hub", "model.hub_id=Qwen/Qwen2.5-0.5B"]).model
    assert cfg.name == "qwen2.5-0.5b" and cfg.kind == "auto"
    from zoft.run.checks import validate

    with pytest.raises(ZoftError, match=r"neither model\.hub_id nor model\.path"):
        validate(compose(["model=hub"]))


@pytest.mark.parametrize(
    "overrides,named",
    [
        (["model=hub", "model.hub_id=Qwen/Qwen2.5-0.5B"], "Qwen/Qwen2.5-0.5B"),
        (["model=qwen2.5-0.5b"], "Qwen/Qwen2.5-0.5B"),
        (["model=qwen2.5-1.5b"], "Qwen/Qwen2.5-1.5B"),
        (["model=llama-3.2-1b"], "meta-llama/Llama-3.2-1B"),
        (["model=mistral-7b"], "mistralai/Mistral-7B-v0.1"),
    ],
)
def test_hub_models_offline_fail_clearly_naming_model_path(overrides, named, monkeypatch, tmp_path):
    """Offline, a hub model fails clearly, naming the fix (model.path)."""
    import huggingface_hub.constants

    from zoft.run.runner import run

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    detect._read_config.cache_clear()
    cfg = compose([*overrides, "optimizer=ft-lora", f"results_dir={tmp_path}", "steps=1"])
    with pytest.raises(ZoftError, match=rf"{named}.*model\.path="):
        run(cfg)
