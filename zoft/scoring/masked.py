"""Masked LMs: the label words' logits at <mask> (LM-BFF prompts)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zoft.models.loading import model_device
from zoft.scoring.base import SCORERS, Scorer, head_inputs
from zoft.tasks.base import Example, MaskedPrompt
from zoft.tasks.io import DataError

MLM_HEADS = ("lm_head", "cls")  # the MLM head on top of the encoder: RoBERTa's, BERT's


@SCORERS.register("masked_lm")
class MaskedLMScorer(Scorer):
    """Cross-entropy over the label words' logits at the <mask> position (LM-BFF)."""

    def _label_ids(self, words: Sequence[str]) -> list[int]:
        ids = []
        for word in words:
            tokens = self.tokenizer.encode(word, add_special_tokens=False)
            if len(tokens) != 1:
                raise DataError(
                    f"label word {word!r} of task {self.task.name} is {len(tokens)} tokens for this "
                    "tokenizer; masked-LM label words must be exactly one token"
                )
            ids.append(tokens[0])
        return ids

    def _encode(self, prompt: MaskedPrompt) -> tuple[list[int], int]:
        """Token ids and the mask position, encoded part by part and truncated as LM-BFF does
        (zoft.tasks.lmbff), within the task's masked-LM length (LM-BFF: 128, 256 for NLI)."""
        limit = min(self.max_length, self.task.masked_max_length)
        return prompt.template.encode(self.tokenizer, prompt.sentences, limit)

    def _logits_at(
        self, model: torch.nn.Module, encoded: list[tuple[list[int], int]]
    ) -> torch.Tensor:
        """[N, V] vocabulary logits at each row's mask; only the mask rows go through the MLM
        head when the model exposes it (RoBERTa's lm_head, BERT's cls), saving the [N, L, V]
        tensor."""
        device = model_device(model)
        width = max(len(ids) for ids, _ in encoded)
        ids = torch.full((len(encoded), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (row, _) in enumerate(encoded):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        ids, mask = ids.to(device), mask.to(device)
        rows, at = torch.arange(len(encoded), device=device), [m for _, m in encoded]
        head = next((getattr(model, n) for n in MLM_HEADS if hasattr(model, n)), None)
        if head is not None and model.base_model is not model:
            hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            return head(hidden[rows, at])
        return model(input_ids=ids, attention_mask=mask).logits[rows, at]

    @torch.no_grad()
    def head_features(
        self, model: torch.nn.Module, examples: Sequence[Example]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's input at each <mask> and the gold label word's id (MeZO medium_models
        LinearHeadTrainer: features before the decoder, one per example)."""
        prompts = self.prompts(examples)
        encoded = [self._encode(p) for p in prompts]
        with head_inputs(self.head(model)) as seen:
            self._logits_at(model, encoded)
        features = torch.cat(seen)
        if features.ndim == 3:  # the whole sequence went through the head: keep each <mask>
            features = features[torch.arange(len(encoded)), [at for _, at in encoded]]
        label_ids = self._label_ids(prompts[0].label_words)
        targets = [label_ids[p.gold] for p in prompts]
        return features.float(), torch.tensor(targets, dtype=torch.long)

    def prompts(self, examples: Sequence[Example]) -> list[MaskedPrompt]:
        return [self.task.masked_prompt(ex) for ex in examples]

    def score_prompts(
        self, model: torch.nn.Module, prompts: Sequence[MaskedPrompt]
    ) -> torch.Tensor:
        logits = self._logits_at(model, [self._encode(p) for p in prompts])
        return logits[:, self._label_ids(prompts[0].label_words)].float()
