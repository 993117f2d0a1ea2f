"""The method registry drives everything a method needs: each registered method has its YAML,
its test file and facts that agree with its config, and a new method is its declaration (config
and facts), its class, one YAML and one test file (proved below with a throw-away method, both
halves in one module outside the package, that no other file names)."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from dataclasses import fields

import pytest
import yaml

import zoft.optim
from tests.conftest import REPO
from zoft.config import LORA_FAMILY
from zoft.optim import _MACHINERY, METHODS, OPTIMIZERS
from zoft.registry import UnknownNameError

CONF = REPO / "conf" / "optimizer"
TESTS = REPO / "tests" / "optim"


def _defaults(name: str) -> dict:
    return {f.name: f.default for f in fields(OPTIMIZERS.config(name))}


def test_every_registered_method_has_its_yaml():
    for name in OPTIMIZERS:
        path = CONF / f"{name}.yaml"
        assert path.is_file(), f"{name} has no {path.relative_to(REPO)}"
        text = yaml.safe_load(path.read_text())
        assert text["name"] == name and _defaults(name)["name"] == name, name
        assert f"/schema/optimizer/{name}@_here_" in text["defaults"], name
    assert {p.stem for p in CONF.glob("*.yaml")} == set(OPTIMIZERS)  # and no YAML without one


def test_every_method_module_registers_a_method_and_has_its_test_file():
    discovered = {m.name for m in pkgutil.iter_modules(zoft.optim.__path__)} - _MACHINERY
    registering = {OPTIMIZERS.get(n).__module__.rsplit(".", 1)[1] for n in OPTIMIZERS}
    assert registering == discovered  # no method module without a method, none outside discovery
    for module in discovered:
        assert (TESTS / f"test_{module}.py").is_file(), f"zoft/optim/{module}.py has no test file"


def test_facts_agree_with_the_config():
    displays = [OPTIMIZERS.facts(n).display for n in OPTIMIZERS]
    orders = [OPTIMIZERS.facts(n).paper_order for n in OPTIMIZERS]
    assert len(set(displays)) == len(displays) and len(set(orders)) == len(orders)
    for name in OPTIMIZERS:
        facts, adapter = OPTIMIZERS.facts(name), _defaults(name).get("adapter", "none")
        assert facts.lora == (adapter in LORA_FAMILY), name  # LoRA, DoRA or AdaLoRA adapters
        assert facts.requires_adapter in (None, adapter) and (
            facts.lora or not facts.requires_adapter
        )
        assert facts.forwards >= 1, name
        assert not facts.zeroth_order or facts.backwards == 0, name  # ZO: no backprop anywhere


# The recipe, followed outside the source tree: one module (the declaration and the class), one
# YAML (in a conf search path), nothing else edited. The registry, the ConfigStore schemas, the
# composed config, run() with its pass counts, the bench methods and the tests' parametrisation
# all pick the method up.
_MODULE = '''
from dataclasses import dataclass

from zoft.optim.configs import MezoConfig
from zoft.optim.mezo import MeZO
from zoft.optim.registry import METHODS, OPTIMIZERS, MethodFacts


@METHODS.register(
    "throw-away",
    facts=MethodFacts("Throw-away", 999, forwards=2, backwards=0, zeroth_order=True, lora=False),
)
@dataclass
class ThrowAwayConfig(MezoConfig):
    name: str = "throw-away"
    eps: float = 2e-3


@OPTIMIZERS.register("throw-away")
class ThrowAway(MeZO):
    """MeZO under another name: only its declaration and registration are new."""
'''
_YAML = """
defaults:
  - /schema/optimizer/throw-away@_here_
  - _self_
name: throw-away
lr: 1e-4
"""
_SCRIPT = """
import json, sys
import throw_away_method  # what zoft.optim's discovery does for a module in zoft/optim/
from zoft.run.schemas import register_configs
register_configs()
from tests.conftest import compose
from tests.methods import method_params
from zoft.benchmark.methods import DEFAULT_METHODS
from zoft.optim import OPTIMIZERS
from zoft.run.runner import run

conf, results = sys.argv[1:]
cfg = compose([f"hydra.searchpath=[file://{conf}]", "optimizer=throw-away", "model=tiny-opt",
               "task=rte", "task.protocol=large", "task.num_train=8", "task.num_dev=4",
               "task.num_eval=8", "steps=3", "batch_size=4", "eval_batch_size=8",
               "zero_shot=false", f"results_dir={results}"])
result = run(cfg)
print(json.dumps({
    "last_in_paper_order": OPTIMIZERS.in_paper_order()[-1],
    "facts": OPTIMIZERS.facts("throw-away").as_record(),
    "optimizer": {"eps": cfg.optimizer.eps, "lr": cfg.optimizer.lr},
    "result": {k: result[k] for k in ("status", "optimizer", "forward_passes", "backward_passes")},
    "bench": [m for m in DEFAULT_METHODS if m.startswith("throw-away")],
    "params": [p.values[0] for p in method_params()],
}))
"""


def test_a_new_method_is_one_module_one_yaml_and_one_test(data_dir, tmp_path):
    (tmp_path / "throw_away_method.py").write_text(_MODULE)
    (tmp_path / "conf" / "optimizer").mkdir(parents=True)
    (tmp_path / "conf" / "optimizer" / "throw-away.yaml").write_text(_YAML)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
        "ZOFT_DATA": str(data_dir),
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT), str(tmp_path / "conf"), str(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["last_in_paper_order"] == "throw-away"  # paper_order 999
    assert seen["facts"]["display"] == "Throw-away"
    assert seen["optimizer"]["eps"] == 2e-3 and seen["optimizer"]["lr"] == 1e-4  # schema + YAML
    assert seen["result"] == {
        "status": "complete",
        "optimizer": "throw-away",
        "forward_passes": 3 * seen["facts"]["forwards"],
        "backward_passes": 3 * seen["facts"]["backwards"],
    }
    assert seen["bench"] == ["throw-away-sequential", "throw-away-paired", "throw-away-replay"]
    assert "throw-away" in seen["params"]


def test_every_declared_method_has_its_class():
    assert set(METHODS) == set(OPTIMIZERS)
    for name in OPTIMIZERS:
        assert OPTIMIZERS.config(name) is METHODS.config(name), name


def test_a_class_for_an_undeclared_method_is_refused():
    with pytest.raises(UnknownNameError, match="no-such-method"):
        OPTIMIZERS.register("no-such-method")(object)
    assert "no-such-method" not in OPTIMIZERS


def test_the_declarations_load_without_torch():
    """The command line reads every method's keys, defaults and ranges without torch."""
    code = (
        "import sys; from zoft.run.schemas import register_configs; register_configs(); "
        "from zoft.run.overrides import check_overrides; "
        "check_overrides(['optimizer=lozo', 'optimizer.rank=4', 'optimizer.lr=1e-5']); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
