"""LP against what MeZO's linear probing computes: the head's input features at the scored
positions, a LogisticRegressionCV fit written into the head's rows (±coef/2 for two classes),
features always taken from the original head; 100% on a linearly separable set."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import tiny
from zoft.optim.configs import LinearProbeConfig
from zoft.optim.linear_probe import LinearProbe, fit_probe
from zoft.scoring import build_scorer
from zoft.tasks import get_task
from zoft.tasks.base import Example


class Separable(nn.Module):
    """A fixed encoder (identity) and a linear head: examples carry their feature vector."""

    def __init__(self, dim: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class VectorScorer:
    """The scorer interface LP needs, on examples whose field "x" is the feature vector."""

    def head(self, model):
        return model.head

    def _x(self, batch):
        return torch.tensor([ex.fields["x"] for ex in batch], dtype=torch.float32)

    def loss(self, model, batch):
        return F.cross_entropy(model(self._x(batch)), torch.tensor([ex.label for ex in batch]))

    def loss_sum(self, model, batch):
        labels = torch.tensor([ex.label for ex in batch])
        return F.cross_entropy(model(self._x(batch)), labels, reduction="sum"), len(batch)

    def head_features(self, model, batch):
        return self._x(batch), torch.tensor([ex.label for ex in batch])


def _separable(n: int, seed: int, classes: int = 3, dim: int = 6) -> list[Example]:
    """Points around `classes` well-apart centres: separable by a linear map."""
    gen = np.random.default_rng(seed)
    centres = np.eye(dim)[:classes] * 6.0
    labels = gen.integers(0, classes, n)
    points = centres[labels] + gen.normal(scale=0.5, size=(n, dim))
    return [Example({"x": p.tolist()}, int(y)) for p, y in zip(points, labels, strict=True)]


def _lp(model, scorer, **kw):
    return LinearProbe(LinearProbeConfig(**kw), model, scorer, total_steps=10, seed=0)


def test_lp_reaches_full_accuracy_on_a_linearly_separable_set():
    torch.manual_seed(0)
    model, scorer = Separable(), VectorScorer()
    train, dev = _separable(120, seed=0), _separable(60, seed=1)
    opt = _lp(model, scorer)
    for step, start in enumerate(range(0, len(train), 40)):
        opt.step(train[start : start + 40], step)
    with torch.no_grad():
        predicted = model(scorer._x(dev)).argmax(-1)
    accuracy = (predicted == torch.tensor([ex.label for ex in dev])).float().mean().item()
    assert accuracy == 1.0
    assert opt.stats() == {"lp_examples": 120, "lp_feature_rows": 120, "lp_classes": 3}


def test_fit_is_scikit_learns_logistic_regression_cv_written_into_the_head_rows():
    from sklearn.linear_model import LogisticRegressionCV

    model, scorer = Separable(), VectorScorer()
    train = _separable(90, seed=2)
    opt = _lp(model, scorer)
    opt.step(train, 0)
    x, y = scorer.head_features(model, train)
    reference = LogisticRegressionCV(Cs=10, cv=5, l1_ratios=(0.0,), scoring="accuracy",
                                     tol=1e-4, max_iter=5000, random_state=0,
                                     use_legacy_attributes=False).fit(x.numpy(), y.numpy())  # fmt: skip
    assert torch.allclose(model.head.weight, torch.tensor(reference.coef_, dtype=torch.float32))
    assert torch.allclose(model.head.bias, torch.tensor(reference.intercept_, dtype=torch.float32))


def test_two_classes_are_written_as_plus_and_minus_half_the_coefficients():
    gen = np.random.default_rng(0)
    x = gen.normal(size=(40, 4))
    y = np.where(x[:, 0] > 0, 7, 3)  # two head rows, 3 and 7
    classes, coef, intercept = fit_probe(x, y, LinearProbeConfig(), fit_intercept=False)
    assert classes.tolist() == [3, 7]
    assert np.allclose(coef[0], -coef[1]) and np.allclose(intercept, 0.0)
    from sklearn.linear_model import LogisticRegressionCV

    reference = LogisticRegressionCV(Cs=10, cv=5, l1_ratios=(0.0,), scoring="accuracy",
                                     fit_intercept=False, tol=1e-4, max_iter=5000,
                                     random_state=0, use_legacy_attributes=False).fit(x, y)  # fmt: skip
    assert np.allclose(coef[1], reference.coef_[0] / 2)


def _sst2(data_dir, n):
    task = get_task("sst2")
    return task, task.load_local("train", data_dir)[:n]


def test_causal_features_are_the_final_hidden_state_before_the_head(data_dir):
    """The gold option token's predicting position, checked against output_hidden_states."""
    task, batch = _sst2(data_dir, 4)
    loaded = tiny("llama")
    model, tokenizer = loaded.model, loaded.tokenizer
    model.eval()
    scorer = build_scorer("causal_lm", task, tokenizer, "mezo", 256)
    features, targets = scorer.head_features(model, batch)
    assert features.shape == (4, model.config.hidden_size)  # SST-2's options are one token
    label_ids = {tokenizer(" great").input_ids[-1], tokenizer(" terrible").input_ids[-1]}
    assert set(targets.tolist()) <= label_ids
    rows = scorer._rows(scorer.prompts(batch), gold_only=True)
    for i, (inputs, target) in enumerate(zip(rows.inputs, rows.targets, strict=True)):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([inputs]), output_hidden_states=True)
        assert torch.allclose(features[i], out.hidden_states[-1][0, -1], atol=1e-5)
        assert targets[i].item() == target[-1]


def test_masked_features_are_the_decoder_input_at_the_mask(data_dir):
    task, batch = _sst2(data_dir, 4)
    loaded = tiny("roberta")
    model, tokenizer = loaded.model, loaded.tokenizer
    model.eval()
    scorer = build_scorer("masked_lm", task, tokenizer, "lmbff", 128)
    features, targets = scorer.head_features(model, batch)
    decoder = model.get_output_embeddings()
    with torch.no_grad():
        logits = decoder(features)
    label_ids = scorer._label_ids(scorer.prompts(batch)[0].label_words)
    assert torch.allclose(logits[:, label_ids], scorer.scores(model, batch), atol=1e-5)
    assert targets.tolist() == [label_ids[ex.label] for ex in batch]


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_features_come_from_the_original_head_at_every_step(arch, data_dir):
    """A tied head is the input embedding too: after a fit, the next step's features are still
    those of the untouched model (the official code extracts every feature before writing)."""
    task, examples = _sst2(data_dir, 12)
    loaded = tiny(arch)
    model, tokenizer = loaded.model, loaded.tokenizer
    scorer = build_scorer("causal_lm", task, tokenizer, "mezo", 256)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = _lp(model, scorer)
    for step in range(3):
        opt.step(examples[4 * step : 4 * step + 4], step)
    fitted = [int(r) for r in opt.fit[0]]
    assert len(fitted) == 2 and set(opt.original) == set(fitted)
    features = torch.cat(opt.features)
    pristine = tiny(arch).model.eval()  # the same packaged weights, never fitted
    assert all(torch.equal(p, original[n]) for n, p in pristine.named_parameters())
    expected, _ = scorer.head_features(pristine, examples)
    assert torch.allclose(features, expected, atol=1e-5)
    head = scorer.head(model).weight
    classes, coef, _ = opt.fit
    assert torch.equal(head[fitted], coef.to(head.dtype))
    untouched = [i for i in range(head.shape[0]) if i not in fitted]
    name = next(n for n, p in model.named_parameters() if p is head)
    assert torch.equal(head[untouched], original[name][untouched])


def test_resumed_lp_is_bit_identical(data_dir):
    task, examples = _sst2(data_dir, 16)
    loaded = tiny("opt")
    whole_model, tokenizer = loaded.model, loaded.tokenizer
    scorer = build_scorer("causal_lm", task, tokenizer, "mezo", 256)
    whole = _lp(whole_model, scorer)
    for step in range(4):
        whole.step(examples[4 * step : 4 * step + 4], step)
    model = tiny("opt").model
    first = _lp(model, scorer)
    for step in range(2):
        first.step(examples[4 * step : 4 * step + 4], step)
    state = first.state_dict()
    torch.save(state, "/dev/null")  # plain values and tensors only (checkpoints load weights_only)
    second = _lp(model, scorer)
    second.load_state_dict(state)
    for step in range(2, 4):
        second.step(examples[4 * step : 4 * step + 4], step)
    for (name, a), b in zip(whole_model.named_parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b), name
