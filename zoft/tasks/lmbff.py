"""LM-BFF prompt templates (`*cls**sent-_0*?*mask*,*+sentl_1**sep+*`): parsed into parts, rendered
as text (for causal LMs) and encoded part by part (for masked LMs), as LM-BFF's
`tokenize_multipart_input` does: each part is tokenised on its own, without special tokens, so a
one-character part such as `?` stays its own token, and a sentence is cut to its length limit before
the whole sequence is cut to max_length (its tail goes first).

Grammar: the template is split on `*`. `cls`, `mask`, `sep`, `sep+`, `bos`, `eos` are special
tokens; `[+]sent[l|u][-]_<i>` is sentence i (`+` prepends a space, `l`/`u` lower/upper-cases its
first character, `-` drops its last character); anything else is literal text with `_` for a space.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zoft.tasks.base import MASK, MaskedPrompt
from zoft.tasks.io import DataError

# bumped when the masked-LM encoding of LM-BFF prompts changes what a run computes; it enters the
# config digest of masked-LM runs only (2: part-wise encoding and LM-BFF truncation)
LMBFF_ENCODING_REVISION = 2


class Part(ABC):
    """One `*`-delimited piece of a template."""

    @abstractmethod
    def render(self, sentences: Sequence[str]) -> str:
        """The part as prompt text (special tokens other than the mask render as nothing)."""

    @abstractmethod
    def encode(self, tokenizer: Any, sentences: Sequence[str]) -> list[int]:
        """The part's token ids, encoded on its own."""


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


# RoBERTa's <s> and </s> are its cls and sep; tokenizers that only name bos/eos fall back to them
_SPECIAL_IDS: dict[str, Callable[[Any], int | None]] = {
    "cls": lambda tok: tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id,
    "sep": lambda tok: tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id,
    "sep+": lambda tok: tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id,
    "bos": lambda tok: tok.bos_token_id,
    "eos": lambda tok: tok.eos_token_id,
    "mask": lambda tok: tok.mask_token_id,
}


@dataclass(frozen=True)
class Special(Part):
    name: str

    def render(self, sentences: Sequence[str]) -> str:
        return MASK if self.name == "mask" else ""

    def encode(self, tokenizer: Any, sentences: Sequence[str]) -> list[int]:
        token_id = _SPECIAL_IDS[self.name](tokenizer)
        if token_id is None:
            raise DataError(f"the tokenizer has no {self.name} token for LM-BFF part *{self.name}*")
        return [token_id]


_FIRST_CHAR_CASE: dict[str, Callable[[str], str]] = {
    "": lambda text: text,
    "l": lambda text: text[:1].lower() + text[1:],
    "u": lambda text: text[:1].upper() + text[1:],
}


@dataclass(frozen=True)
class Sentence(Part):
    index: int
    leading_space: bool = False
    case: str = ""  # "", "l" (first character lower-cased) or "u" (upper-cased)
    drop_last_char: bool = False

    def render(self, sentences: Sequence[str]) -> str:
        text = _FIRST_CHAR_CASE[self.case](sentences[self.index])
        if self.drop_last_char:
            text = text[:-1]  # LM-BFF slices characters, though its docstring says "token"
        return (" " if self.leading_space else "") + text

    def encode(self, tokenizer: Any, sentences: Sequence[str]) -> list[int]:
        return _text_ids(tokenizer, self.render(sentences))


@dataclass(frozen=True)
class Literal(Part):
    text: str  # `_` already replaced by a space

    def render(self, sentences: Sequence[str]) -> str:
        return self.text

    def encode(self, tokenizer: Any, sentences: Sequence[str]) -> list[int]:
        if len(self.text) != 1:
            return _text_ids(tokenizer, self.text)
        # LM-BFF maps a one-character literal straight to the vocabulary token of that name
        token_id = tokenizer.convert_tokens_to_ids(self.text)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise DataError(f"LM-BFF literal {self.text!r} is not a token of this vocabulary")
        return [token_id]


def _sentence_part(name: str) -> Sentence | None:
    """`[+]sent[l|u][-]_<i>` as a Sentence, None if `name` is not of that form."""
    prefix, _, index = name.partition("_")
    space = prefix.startswith("+")
    stem = prefix[1:] if space else prefix
    drop = stem.endswith("-")
    stem = stem[:-1] if drop else stem
    if not stem.startswith("sent") or stem[4:] not in _FIRST_CHAR_CASE or not index.isdigit():
        return None
    return Sentence(int(index), space, stem[4:], drop)


def parse_template(template: str) -> tuple[Part, ...]:
    """The parts of an LM-BFF template, in order (empty pieces between `**` encode to nothing
    and are dropped)."""
    parts: list[Part] = []
    for piece in template.split("*"):
        if piece in _SPECIAL_IDS:
            parts.append(Special(piece))
        elif (sentence := _sentence_part(piece)) is not None:
            parts.append(sentence)
        elif piece.startswith(("label_", "labelx_")):
            raise DataError(f"LM-BFF part *{piece}* (demonstrations) is not supported: {template}")
        elif piece:
            parts.append(Literal(piece.replace("_", " ")))
    if sum(isinstance(p, Special) and p.name == "mask" for p in parts) != 1:
        raise DataError(f"an LM-BFF template needs exactly one *mask*: {template}")
    return tuple(parts)


@dataclass(frozen=True)
class LmBffTemplate:
    """A task's LM-BFF template, label words (with their leading space) and sentence limits:
    sentence 0 keeps its first `first_sent_limit` tokens, the others `other_sent_limit`."""

    template: str
    label_words: tuple[str, ...]
    first_sent_limit: int | None = None
    other_sent_limit: int | None = None
    parts: tuple[Part, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", parse_template(self.template))

    def text(self, sentences: Sequence[str]) -> str:
        """The prompt as one string, MASK where the label word goes."""
        return "".join(part.render(sentences) for part in self.parts)

    def prompt(self, sentences: Sequence[str], gold: int) -> MaskedPrompt:
        return MaskedPrompt(
            self.text(sentences), self.label_words, gold, template=self, sentences=tuple(sentences)
        )

    def sentence_limit(self, index: int) -> int | None:
        return self.first_sent_limit if index == 0 else self.other_sent_limit

    def encode(
        self, tokenizer: Any, sentences: Sequence[str], max_length: int
    ) -> tuple[list[int], int]:
        """Token ids and the mask position: parts encoded one by one, each sentence cut to its
        limit (its tail goes), then the whole sequence cut to max_length (its tail goes).

        Where that cut would remove the mask (LM-BFF stops with an assertion), the sentences before
        the mask lose their tails instead, just enough for the whole sequence to fit."""
        encoded = []
        for part in self.parts:
            part_ids = part.encode(tokenizer, sentences)
            if isinstance(part, Sentence):
                limit = self.sentence_limit(part.index)
                part_ids = part_ids if limit is None else part_ids[:limit]
            encoded.append(part_ids)
        ids = [i for part_ids in encoded for i in part_ids][:max_length]
        if tokenizer.mask_token_id not in ids:
            ids = self._fit_before_mask(encoded, max_length)
        if tokenizer.mask_token_id not in ids:
            raise DataError(
                f"max_length={max_length} leaves no room for the mask of the LM-BFF template "
                f"{self.template}"
            )
        return ids, ids.index(tokenizer.mask_token_id)

    def _fit_before_mask(self, encoded: list[list[int]], max_length: int) -> list[int]:
        """The parts with the tails of the sentences before the mask cut (the last one first)
        so that everything fits in max_length."""
        excess = sum(len(part_ids) for part_ids in encoded) - max_length
        mask_at = next(n for n, p in enumerate(self.parts) if p == Special("mask"))
        encoded = [list(part_ids) for part_ids in encoded]
        for n in reversed(range(mask_at)):
            if isinstance(self.parts[n], Sentence) and excess > 0:
                cut = min(excess, len(encoded[n]))
                encoded[n] = encoded[n][: len(encoded[n]) - cut]
                excess -= cut
        return [i for part_ids in encoded for i in part_ids][:max_length]
