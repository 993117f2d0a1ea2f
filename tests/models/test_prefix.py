"""Prefix tuning as MeZO's prefix.py: keys and values from a forward over random tokens, in
front of every attention layer for every query, positions of the real tokens unchanged, the
mask widened; generation through the cache; only the prefix trains."""

import pytest
import torch

from tests.conftest import model_cfg, tiny
from zoft.models.adapters import add_adapter
from zoft.models.prefix import PREFIX_MARK, add_prefix
from zoft.optim.configs import AdamPrefixConfig, MezoPrefixConfig
from zoft.scoring.generation import greedy_generate


def _model(arch):
    return tiny(arch).model.eval()


@pytest.mark.parametrize("arch", ["opt", "llama"])
def test_decoder_prefix_is_the_cache_of_a_forward_over_random_tokens(arch):
    model = _model(arch)
    torch.manual_seed(3)
    tokens = torch.randint(0, model.config.vocab_size, (1, 4))
    with torch.no_grad():
        cache = model(input_ids=tokens, use_cache=True).past_key_values
    torch.manual_seed(3)
    store = add_prefix(model, 4, "real_activations")
    for layer, (k, v) in enumerate(zip(store.keys, store.values, strict=True)):
        assert torch.equal(k, cache.layers[layer].keys[0])
        assert torch.equal(v, cache.layers[layer].values[0])


def test_encoder_prefix_is_the_key_and_value_projections_of_random_tokens():
    model = _model("roberta")
    torch.manual_seed(5)
    tokens = torch.randint(0, model.config.vocab_size, (1, 3))
    seen = {}
    layer0 = model.roberta.encoder.layer[0].attention.self
    hooks = [layer0.key.register_forward_hook(lambda m, a, o: seen.__setitem__("k", o)),
             layer0.value.register_forward_hook(lambda m, a, o: seen.__setitem__("v", o))]  # fmt: skip
    with torch.no_grad():
        model.roberta(input_ids=tokens)
    for h in hooks:
        h.remove()
    torch.manual_seed(5)
    store = add_prefix(model, 3, "real_activations")
    heads = model.config.num_attention_heads
    expected_k = seen["k"][0].view(3, heads, -1).transpose(0, 1)
    assert torch.equal(store.keys[0], expected_k)
    assert store.values[0].shape == expected_k.shape


@pytest.mark.parametrize("arch", ["opt", "llama"])
def test_a_decoder_prefix_acts_as_those_tokens_in_front(arch):
    """With the prefix of tokens T and the real tokens at positions after T, the logits equal a
    forward over T followed by the tokens: the cache sits in front and every query sees it."""
    model = _model(arch)
    torch.manual_seed(0)
    tokens = torch.randint(0, model.config.vocab_size, (1, 3))
    torch.manual_seed(0)
    add_prefix(model, 3, "real_activations")
    ids = torch.tensor([[11, 12, 13, 14]])
    joined = torch.cat([tokens, ids], dim=1)
    with torch.no_grad():
        shifted = model(input_ids=ids, position_ids=torch.arange(3, 7)[None]).logits
        hook = model._forward_pre_hooks  # the prefix hook is on the body, not here
        assert not hook
        body = model.model.decoder if arch == "opt" else model.model
        handles = dict(body._forward_pre_hooks)
        body._forward_pre_hooks.clear()
        whole = model(input_ids=joined).logits[:, 3:]
        body._forward_pre_hooks.update(handles)
    assert torch.allclose(shifted, whole, atol=1e-5)


@pytest.mark.parametrize("arch", ["roberta", "opt", "llama"])
def test_padded_rows_score_as_they_would_alone(arch):
    """The widened mask lines up with the cache: a padded row of a batch equals the row alone."""
    model = _model(arch)
    torch.manual_seed(1)
    add_prefix(model, 2, "real_activations")
    pad = model.config.pad_token_id or 1
    long, short = [21, 22, 23, 24, 25], [31, 32, 33]
    if arch == "roberta":  # right padding, positions from padding_idx
        ids = torch.tensor([long, short + [pad, pad]])
        mask = torch.tensor([[1] * 5, [1] * 3 + [0, 0]])
        alone_at, batch_at = slice(0, 3), slice(0, 3)
    else:  # left padding with explicit positions, as zoft's scorers
        ids = torch.tensor([long, [pad, pad] + short])
        mask = torch.tensor([[1] * 5, [0, 0] + [1] * 3])
        alone_at, batch_at = slice(0, 3), slice(2, 5)
    with torch.no_grad():
        kwargs = {} if arch == "roberta" else {"position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
        both = model(input_ids=ids, attention_mask=mask, **kwargs).logits
        alone = model(input_ids=torch.tensor([short])).logits
    assert torch.allclose(both[1, batch_at], alone[0, alone_at], atol=1e-5)


def test_generation_through_the_cache_equals_recomputing_every_step():
    model = _model("llama")
    torch.manual_seed(2)
    add_prefix(model, 3, "real_activations")
    prompt = [5, 6, 7, 8]
    (generated,) = greedy_generate(model, [prompt], 0, 4, lambda token: False)
    ids = list(prompt)
    for _ in range(4):
        with torch.no_grad():
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    assert generated == ids[len(prompt) :]


@pytest.mark.parametrize("config", [MezoPrefixConfig, AdamPrefixConfig])
def test_only_the_prefix_trains(config):
    loaded = tiny("opt")
    add_adapter(loaded.model, config(), model_cfg("tiny-opt"))
    trainable = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    layers = loaded.model.config.num_hidden_layers
    assert sorted(trainable) == sorted(
        [f"{PREFIX_MARK}.keys.{i}" for i in range(layers)]
        + [f"{PREFIX_MARK}.values.{i}" for i in range(layers)]
    )
    assert loaded.model.get_parameter(f"{PREFIX_MARK}.keys.0").shape[1] == 5  # MeZO's 5 tokens
