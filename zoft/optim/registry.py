"""The method registries: METHODS maps a name to its config dataclass and facts (declared once,
torch-free, in zoft.optim.configs: `@METHODS.register(name, facts=MethodFacts(...))`), and
OPTIMIZERS maps the same name to the class that runs it (`@OPTIMIZERS.register(name)`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from zoft.registry import Registry


@dataclass(frozen=True)
class MethodFacts:
    """What the rest of zoft needs to know about a method without running it: tables label and
    order rows by it, runs record it in result.json, tests and benches parametrise over it."""

    display: str  # the papers' row label: "MeZO", "FT (LoRA)"
    paper_order: int  # position among the papers' method rows (smaller first)
    forwards: int  # forward passes per step (whole batch; micro-batches not counted apart)
    backwards: int  # backward passes per step
    zeroth_order: bool  # trains by function values only (no backprop anywhere)
    lora: bool  # trains LoRA adapters by default
    requires_adapter: str | None = None  # an adapter the method cannot run without

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


class MethodRegistry(Registry):
    """Each method's config dataclass, carrying its MethodFacts: the torch-free declaration
    (zoft.optim.configs) that the command line reads and the methods register against."""

    def register(self, name: str, *, facts: MethodFacts, **meta: Any):  # type: ignore[override]
        return super().register(name, facts=facts, **meta)

    def facts(self, name: str) -> MethodFacts:
        return self.meta(name)["facts"]

    def config(self, name: str) -> type:
        return self.get(name)

    def in_paper_order(self) -> list[str]:
        return sorted(self.names(), key=lambda n: (self.facts(n).paper_order, n))


class OptimizerRegistry(Registry):
    """Each method's class, registered under a name declared in METHODS; its config and facts
    are read from that declaration, so they are written once."""

    def __init__(self, kind: str, declarations: MethodRegistry) -> None:
        super().__init__(kind)
        self.declarations = declarations

    def register(self, name: str, **meta: Any):
        self.declarations.get(name)  # a class for an undeclared method is refused by name
        return super().register(name, **meta)

    def facts(self, name: str) -> MethodFacts:
        self.get(name)
        return self.declarations.facts(name)

    def config(self, name: str) -> type:
        self.get(name)
        return self.declarations.config(name)

    def in_paper_order(self) -> list[str]:
        return sorted(self.names(), key=lambda n: (self.facts(n).paper_order, n))


METHODS = MethodRegistry("optimizer")
OPTIMIZERS = OptimizerRegistry("optimizer", METHODS)
