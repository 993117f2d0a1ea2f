"""MeZO (prefix): perturbations and updates touch only the prefix, which is bit-identical after
the probes; MeZO's prefix settings (5 tokens, lr 1e-2, ε 1e-1)."""

import torch

from tests.conftest import model_cfg, tiny
from zoft.models.adapters import add_adapter
from zoft.models.prefix import is_prefix_parameter
from zoft.optim.configs import MezoPrefixConfig
from zoft.optim.mezo_prefix import MezoPrefix
from zoft.scoring import build_scorer
from zoft.tasks import get_task


def _setup(data_dir, arch="llama"):
    task = get_task("sst2")
    batch = task.load_local("train", data_dir)[:4]
    loaded = tiny(arch)
    cfg = MezoPrefixConfig()
    add_adapter(loaded.model, cfg, model_cfg(f"tiny-{arch}"))
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    return MezoPrefix(cfg, loaded.model, scorer, 10, seed=0), batch


def test_defaults_are_mezos_prefix_settings():
    cfg = MezoPrefixConfig()
    assert (cfg.prefix_tokens, cfg.lr, cfg.eps, cfg.prefix_init) == (
        5, 1e-2, 1e-1, "real_activations"
    )  # fmt: skip


def test_a_step_moves_only_the_prefix_and_the_probes_restore_it(data_dir):
    opt, batch = _setup(data_dir)
    model = opt.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert set(opt.engine.params) == {n for n in before if is_prefix_parameter(n)}
    opt.projected_gradients(batch, 0)  # the probes alone leave every bit in place
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    result = opt.step(batch, 0)
    for name, p in model.named_parameters():
        if is_prefix_parameter(name):
            z = opt.engine.direction(name, 0)
            assert torch.allclose(p, before[name] - 1e-2 * result.projected_grad * z, atol=1e-6)
        else:
            assert torch.equal(p, before[name]), name
