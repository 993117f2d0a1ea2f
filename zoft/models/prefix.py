"""Prefix tuning as MeZO's prefix.py does it: trainable keys and values of `tokens` extra
positions in front of every attention layer, initialised from the real activations of random
tokens, seen by every query; nothing else of the model trains.

The prefix enters through the key/value cache of transformers 5: a forward pre-hook on the
model's body puts a cache holding the prefix (per layer, per key/value head, so grouped-query
attention needs nothing special) in front of a forward that has none, and widens the 2-D
attention mask by as many ones. The real tokens keep positions 0, 1, ... as in the official code,
where the prefix never reaches the embeddings: a decoder's caller passes position ids (zoft's
scorers do), an encoder's are computed here."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoft.errors import ZoftError

PREFIX_MARK = "zoft_prefix"  # the prefix's parameters: zoft_prefix.keys.<layer>, .values.<layer>
ENCODER_PROJECTIONS = ("attention.self.key", "attention.self.value")  # BERT / RoBERTa


class PrefixStore(nn.Module):
    """Per attention layer, keys and values of shape (key/value heads, tokens, head size)."""

    def __init__(
        self, keys: list[torch.Tensor], values: list[torch.Tensor], compute_dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.keys = nn.ParameterList(nn.Parameter(k.clone()) for k in keys)
        self.values = nn.ParameterList(nn.Parameter(v.clone()) for v in values)
        # the attention's dtype: the prefix trains in fp32 over half-precision weights (as LoRA
        # factors do, zoft.models.adapters) and enters the cache cast to it
        self.compute_dtype = compute_dtype

    @property
    def tokens(self) -> int:
        return self.keys[0].shape[1]

    def cache(self, config: Any, batch: int) -> Any:
        """A fresh cache holding the prefix for `batch` rows (a forward appends to it)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=config)
        for layer, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            k, v = k.to(self.compute_dtype), v.to(self.compute_dtype)  # no copy when equal
            cache.update(k.expand(batch, *k.shape), v.expand(batch, *v.shape), layer)
        return cache


def is_prefix_parameter(name: str) -> bool:
    return PREFIX_MARK in name


def add_prefix(model: nn.Module, tokens: int, init: str) -> PrefixStore:
    """Attach a prefix of `tokens` positions to `model` in place and route every forward of its
    body through it. init: real_activations (MeZO's --prefix_init_by_real_act) or random."""
    if tokens < 1:
        raise ZoftError(f"optimizer.prefix_tokens={tokens} is invalid: it must be at least 1")
    keys, values = real_activations(model, tokens)
    if init == "random":  # MeZO's non-real init: N(0, 1) of the same shapes
        keys, values = [torch.randn_like(k) for k in keys], [torch.randn_like(v) for v in values]
    store = PrefixStore(keys, values, compute_dtype=next(model.parameters()).dtype)
    model.add_module(PREFIX_MARK, store)
    body = _body(model)
    keyword = _cache_keyword(body)
    encoder = not getattr(model.config, "is_decoder", False) and _encoder_projections(model)

    def through_prefix(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise ZoftError("prefix tuning needs input_ids (inputs_embeds are not supported)")
        batch, length = ids.shape
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.long, device=ids.device)
        if kwargs.get(keyword) is None:  # a first forward: the cache starts with the prefix
            kwargs[keyword] = store.cache(model.config, batch)
            if kwargs.get("position_ids") is None:
                kwargs["position_ids"] = _positions(model, ids, mask, encoder)
        prefix = mask.new_ones(batch, store.tokens)
        kwargs["attention_mask"] = torch.cat([prefix, mask], dim=-1)
        return args, kwargs

    body.register_forward_pre_hook(through_prefix, with_kwargs=True)
    return store


def _body(model: nn.Module) -> nn.Module:
    """The module every forward passes input_ids through: the base model, or the decoder it
    wraps (OPTForCausalLM calls model.decoder directly)."""
    import inspect

    body = model.base_model
    inner = getattr(body, "decoder", None)
    while (
        isinstance(inner, nn.Module) and "input_ids" in inspect.signature(inner.forward).parameters
    ):
        body, inner = inner, getattr(inner, "decoder", None)
    return body


def _cache_keyword(body: nn.Module) -> str:
    """transformers 5.24 renamed the cache keyword `past_key_values` to `cache`."""
    import inspect

    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def _positions(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, encoder: bool):
    """The real tokens' positions as they would be without a prefix: RoBERTa's count from
    padding_idx + 1 over non-pad tokens; other encoders 0..L−1; decoders the mask's cumsum."""
    if encoder and model.config.model_type in ("roberta", "xlm-roberta", "camembert"):
        pad = model.config.pad_token_id
        real = ids.ne(pad).long()
        return real.cumsum(-1) * real + pad
    if encoder:
        return torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _encoder_projections(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(key, value) projections per layer of a BERT-style encoder, in layer order."""
    named = dict(model.named_modules())
    keys = [m for n, m in named.items() if n.endswith(ENCODER_PROJECTIONS[0])]
    values = [m for n, m in named.items() if n.endswith(ENCODER_PROJECTIONS[1])]
    return list(zip(keys, values, strict=True))


@torch.no_grad()
def real_activations(model: nn.Module, tokens: int) -> tuple[list, list]:
    """Each layer's keys and values, (heads, tokens, head size), from one forward over `tokens`
    token ids drawn uniformly from the vocabulary (torch.randint on the global generator, as
    MeZO after set_seed): a decoder's returned cache, an encoder's key/value projections."""
    ids = torch.randint(0, model.config.vocab_size, (1, tokens), device=_device(model))
    was_training = model.training
    model.eval()
    try:
        projections = _encoder_projections(model)
        if not getattr(model.config, "is_decoder", False) and projections:
            return _projected(model, ids, projections)
        out = model(input_ids=ids, use_cache=True)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        if cache is None:
            raise ZoftError(f"{type(model).__name__} returns no key/value cache to start a prefix")
        return [layer.keys[0].clone() for layer in cache.layers], [
            layer.values[0].clone() for layer in cache.layers
        ]
    finally:
        model.train(was_training)


def _projected(model: nn.Module, ids: torch.Tensor, projections: list) -> tuple[list, list]:
    heads = model.config.num_attention_heads
    seen: dict[int, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out.detach()))
        for i, module in enumerate(m for pair in projections for m in pair)
    ]
    try:
        model.base_model(input_ids=ids)
    finally:
        for handle in handles:
            handle.remove()

    def split(out: torch.Tensor) -> torch.Tensor:  # (1, tokens, hidden) → (heads, tokens, d)
        return out[0].view(out.shape[1], heads, -1).transpose(0, 1).contiguous()

    keys = [split(seen[2 * i]) for i in range(len(projections))]
    values = [split(seen[2 * i + 1]) for i in range(len(projections))]
    return keys, values


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
