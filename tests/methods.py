"""The registered methods as pytest parameters, so tests follow the registry rather than a list.

A method's kind is what its facts say a step computes: by function values only or with backprop,
how many passes, whether it needs an adapter. Tests that are expensive per method run one
representative per kind (the first in paper order) by default and mark the rest `slow`;
`make test-all` runs every method."""

from __future__ import annotations

from dataclasses import fields

import pytest

from zoft.optim import OPTIMIZERS


def method_kind(name: str) -> tuple:
    """The facts that decide how a step computes (which weights it trains, its label and its
    table position do not)."""
    facts = OPTIMIZERS.facts(name)
    return (facts.zeroth_order, facts.forwards, facts.backwards, facts.requires_adapter)


def representatives() -> list[str]:
    """The first method of each kind, in paper order."""
    firsts: dict[tuple, str] = {}
    for name in OPTIMIZERS.in_paper_order():
        firsts.setdefault(method_kind(name), name)
    return list(firsts.values())


def method_params() -> list:
    """Every registered method; those that are not a kind's representative are marked slow."""
    fast = set(representatives())
    return [
        pytest.param(name, marks=() if name in fast else pytest.mark.slow)
        for name in OPTIMIZERS.in_paper_order()
    ]


def quick_overrides(name: str, **values: object) -> list[str]:
    """`optimizer=<name>` plus `optimizer.<field>=<value>` for each given field its config has,
    so one rule (e.g. a large lr, to see the weights move in a few steps) fits every method."""
    own = {f.name for f in fields(OPTIMIZERS.config(name))}
    return [f"optimizer={name}"] + [f"optimizer.{k}={v}" for k, v in values.items() if k in own]
