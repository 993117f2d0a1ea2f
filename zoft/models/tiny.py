"""Random-weight models and an in-process tokenizer, so tests run with no download at all."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from zoft.registry import Registry

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]

# Words every prompt of DESIGN §5.3/§5.4 uses, repeated so byte-level BPE merges each into a single
# token (masked-LM label words must be one token), plus ordinary English for everything else.
_PROMPT_WORDS = (
    "terrible bad okay good great Yes No Maybe It was Does this mean that is true or Suppose Can "
    "we infer Description Entity Expression Human Location Number Question Answer Title Context "
    "Passage the a an of to and in for on with as by at from"
)
_ENGLISH = (
    "a film that is funny and moving , with a story that never quite works . the movie is long "
    "but the acting is strong and the ending is sad . it is one of the best films of the year . "
    "the plot is thin , the jokes are flat , and the characters are dull . i liked it very much ."
)


@lru_cache(maxsize=4)
def build_tokenizer(vocab_size: int = 600, masked: bool = False) -> PreTrainedTokenizerFast:
    """A deterministic byte-level BPE tokenizer trained on a small built-in corpus.

    Causal style prepends <s> (as OPT's tokenizer does); masked style wraps in <s> ... </s>.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" " + _PROMPT_WORDS] * 64 + [_PROMPT_WORDS] * 16 + [_ENGLISH] * 16
    tok.train_from_iterator(corpus, trainer=trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    if masked:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>",
            pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", bos), ("</s>", eos)],
        )
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


# Each architecture registers how to build its transformers config, with its facts: `masked`
# (an encoder scored by its MLM head, whose tokenizer wraps in <s> ... </s>) and `grouped_query`
# (key/value heads shared by groups of query heads: tiny.num_kv_heads applies).
TINY_ARCHITECTURES: Registry[Any] = Registry("tiny architecture")


def _common(vocab: int, size: Any, tok: PreTrainedTokenizerFast) -> dict[str, Any]:
    """Keys most transformers configs share; each architecture adds its own."""
    return {
        "vocab_size": vocab,
        "hidden_size": size.hidden_size,
        "num_hidden_layers": size.num_layers,
        "num_attention_heads": size.num_heads,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }


def _grouped(vocab: int, size: Any, tok: PreTrainedTokenizerFast, ratio: int) -> dict[str, Any]:
    """A Llama-style decoder's keys: grouped-query heads, a gated MLP, tied embeddings."""
    return {
        **_common(vocab, size, tok),
        "intermediate_size": size.ffn_dim or ratio * size.hidden_size,
        "num_key_value_heads": size.num_kv_heads,
        "max_position_embeddings": size.max_positions,
        "tie_word_embeddings": True,
    }


@TINY_ARCHITECTURES.register("opt")
def _opt_config(vocab: int, size: Any, tok: PreTrainedTokenizerFast) -> Any:
    from transformers import OPTConfig

    common = _common(vocab, size, tok)
    return OPTConfig(
        **common,
        word_embed_proj_dim=common["hidden_size"],
        ffn_dim=size.ffn_dim or 4 * common["hidden_size"],
        max_position_embeddings=size.max_positions,
    )


@TINY_ARCHITECTURES.register("llama", grouped_query=True)
def _llama_config(vocab: int, size: Any, tok: PreTrainedTokenizerFast) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(**_grouped(vocab, size, tok, ratio=2))


@TINY_ARCHITECTURES.register("mistral", grouped_query=True)
def _mistral_config(vocab: int, size: Any, tok: PreTrainedTokenizerFast) -> Any:
    from transformers import MistralConfig

    return MistralConfig(**_grouped(vocab, size, tok, ratio=2), sliding_window=None)


@TINY_ARCHITECTURES.register("qwen2", grouped_query=True)
def _qwen2_config(vocab: int, size: Any, tok: PreTrainedTokenizerFast) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(**_grouped(vocab, size, tok, ratio=2))


@TINY_ARCHITECTURES.register("gemma2", grouped_query=True)
def _gemma2_config(vocab: int, size: Any, tok: PreTrainedTokenizerFast) -> Any:
    """Gemma 2's alternating sliding-window layers and logit soft-capping, at tiny sizes."""
    from transformers import Gemma2Config

    head_dim = size.hidden_size // size.num_heads
    return Gemma2Config(
        **_grouped(vocab, size, tok, ratio=2),
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        sliding_window=max(2, size.max_positions // 2),
    )


@TINY_ARCHITECTURES.register("phi3", grouped_query=True)
def _phi3_config(vocab: int, size: Any, tok: PreTrainedTokenizerFast) -> Any:
    """Phi-3's fused qkv_proj and gate_up_proj (peft has no LoRA targets for it)."""
    from transformers import Phi3Config

    grouped = {**_grouped(vocab, size, tok, ratio=2), "tie_word_embeddings": False}
    return Phi3Config(**grouped, original_max_position_embeddings=size.max_positions)


@TINY_ARCHITECTURES.register("gpt2")
def _gpt2_config(vocab: int, size: Any, tok: PreTrainedTokenizerFast) -> Any:
    """GPT-2's Conv1D projections (weights stored in × out) and fused c_attn."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab,
        n_embd=size.hidden_size,
        n_layer=size.num_layers,
        n_head=size.num_heads,
        n_inner=size.ffn_dim,
        n_positions=size.max_positions,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )


@TINY_ARCHITECTURES.register("gpt_neox")
def _gpt_neox_config(vocab: int, size: Any, tok: PreTrainedTokenizerFast) -> Any:
    """GPT-NeoX (Pythia): fused query_key_value, partial rotary, untied embed_out."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        **_common(vocab, size, tok),
        intermediate_size=size.ffn_dim or 4 * size.hidden_size,
        max_position_embeddings=size.max_positions,
    )


@TINY_ARCHITECTURES.register("roberta", masked=True)
def _roberta_config(vocab: int, size: Any, tok: PreTrainedTokenizerFast) -> Any:
    from transformers import RobertaConfig

    common = _common(vocab, size, tok)
    return RobertaConfig(
        **common,
        intermediate_size=size.ffn_dim or 4 * common["hidden_size"],
        max_position_embeddings=size.max_positions + 2,  # RoBERTa offsets by pad+1
    )


@TINY_ARCHITECTURES.register("bert", masked=True)
def _bert_config(vocab: int, size: Any, tok: PreTrainedTokenizerFast) -> Any:
    from transformers import BertConfig

    return BertConfig(
        **_common(vocab, size, tok),
        intermediate_size=size.ffn_dim or 4 * size.hidden_size,
        max_position_embeddings=size.max_positions,
    )


def tiny_config(size: Any) -> tuple[Any, PreTrainedTokenizerFast]:
    """The transformers config and tokenizer of a tiny model (`size` is a TinyConfig)."""
    arch = str(size.arch)
    masked = TINY_ARCHITECTURES.meta(arch).get("masked", False)
    tok = build_tokenizer(size.vocab_size, masked=masked)
    return TINY_ARCHITECTURES.get(arch)(len(tok), size, tok), tok
