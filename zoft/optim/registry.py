"""The method registry: each method's class, config schema and facts, declared once where the
method is defined (`@OPTIMIZERS.register(name, config=..., facts=MethodFacts(...))`)."""

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
    """A Registry whose entries carry a config dataclass and MethodFacts."""

    def register(self, name: str, *, config: type, facts: MethodFacts, **meta: Any):  # type: ignore[override]
        return super().register(name, config=config, facts=facts, **meta)

    def facts(self, name: str) -> MethodFacts:
        return self.meta(name)["facts"]

    def config(self, name: str) -> type:
        return self.meta(name)["config"]

    def in_paper_order(self) -> list[str]:
        return sorted(self.names(), key=lambda n: (self.facts(n).paper_order, n))


OPTIMIZERS = MethodRegistry("optimizer")
