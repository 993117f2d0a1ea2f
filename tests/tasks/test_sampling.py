"""Both sampling protocols: counts, disjointness, determinism, k per class."""

from collections import Counter

import pytest
from omegaconf import OmegaConf

from zoft.tasks import get_task
from zoft.tasks.sampling import kshot_split, large_model_split, load_splits


def _cfg(data_dir, **kw):
    base = dict(
        data_dir=str(data_dir),
        protocol="large",
        num_train=1000,
        num_dev=500,
        num_eval=1000,
        k=16,
        kshot_test_cap=1000,
    )
    return OmegaConf.create({**base, **kw})


def _key(ex):
    return tuple(sorted(ex.fields.items()))


def test_large_protocol_counts_and_disjointness(data_dir):
    splits = load_splits(get_task("sst2"), _cfg(data_dir), data_seed=0)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (1000, 500, 872)
    assert any("capped" in n for n in splits.notes)
    train_pool = get_task("sst2").load_local("train", data_dir)
    # distinct positions of the pool: train and dev never share an example index
    ids = {id(e) for e in splits.train} & {id(e) for e in splits.dev}
    assert not ids
    assert {_key(e) for e in splits.dev} <= {_key(e) for e in train_pool}


def test_large_protocol_is_deterministic_per_data_seed(data_dir):
    a = load_splits(get_task("rte"), _cfg(data_dir, num_eval=100), data_seed=1)
    b = load_splits(get_task("rte"), _cfg(data_dir, num_eval=100), data_seed=1)
    c = load_splits(get_task("rte"), _cfg(data_dir, num_eval=100), data_seed=2)
    assert [_key(e) for e in a.train] == [_key(e) for e in b.train]
    assert [_key(e) for e in a.test] == [_key(e) for e in b.test]
    assert [_key(e) for e in a.train] != [_key(e) for e in c.train]


def test_large_protocol_small_train_split_is_reported():
    pool = [object()] * 60
    train, dev, _, notes = large_model_split(pool, pool, 1000, 500, 10, seed=0)
    assert (len(train), len(dev)) == (0, 60)
    assert "fewer than num_train + num_dev" in notes[0]


@pytest.mark.parametrize("k", [4, 16])
def test_kshot_generated_has_k_per_class_and_disjoint_dev(data_dir, k):
    task = get_task("rte")
    pool = task.load_local("train", data_dir)
    train, dev, test, _ = kshot_split(pool, task.load_local("validation", data_dir), k, seed=13)
    assert Counter(e.label for e in train) == {0: k, 1: k}
    assert Counter(e.label for e in dev) == {0: k, 1: k}
    assert not {id(e) for e in train} & {id(e) for e in dev}
    assert len(test) == 277


def test_kshot_uses_ready_split_when_present_and_generates_otherwise(data_dir):
    ready = load_splits(get_task("sst2"), _cfg(data_dir, protocol="kshot"), data_seed=21)
    assert "ready LM-BFF split k-shot/SST-2/16-21" in ready.notes
    generated = load_splits(get_task("sst2"), _cfg(data_dir, protocol="kshot", k=8), data_seed=21)
    assert Counter(e.label for e in generated.train) == {0: 8, 1: 8}
    capped = load_splits(get_task("sst2"), _cfg(data_dir, protocol="kshot", kshot_test_cap=100), 21)
    assert len(capped.test) == 100


def test_large_protocol_follows_the_seeded_permutation_exactly():
    import numpy as np

    pool, validation = list(range(50)), list(range(100, 130))
    train, dev, test, _ = large_model_split(pool, validation, 20, 10, 8, seed=5)
    order = np.random.RandomState(5).permutation(50)[:30]
    assert train == [pool[i] for i in order[:20]]
    assert dev == [pool[i] for i in order[20:]]  # dev is the LAST num_dev of the draw
    assert test == [validation[i] for i in np.random.RandomState(5).permutation(30)[:8]]


def test_ready_and_generated_kshot_tests_are_capped_after_the_same_shuffle(data_dir):
    from zoft.tasks.sampling import capped_test

    ready = load_splits(get_task("sst2"), _cfg(data_dir, protocol="kshot", kshot_test_cap=50), 13)
    full = get_task("sst2").load_kshot_ready(data_dir, 16, 13)["test"]
    assert [_key(e) for e in ready.test] == [_key(e) for e in capped_test(full, 50)]
    assert [_key(e) for e in ready.test] != [_key(e) for e in full[:50]]


def test_paper_dev_sizes_cb_copa_and_wsc_reference_split(data_dir):
    """CB and COPA use 100 dev examples (150 / 300 train); WSC reproduces MeZO's 54 / 500 with a
    warning that names the override giving a sane split."""
    from tests.conftest import compose

    sizes = {}
    for name in ("cb", "copa", "wsc"):
        cfg = compose([f"task={name}", "task.protocol=large", f"task.data_dir={data_dir}"]).task
        splits = load_splits(get_task(name), cfg, data_seed=0)
        sizes[name] = (len(splits.train), len(splits.dev), len(splits.test))
        if name == "wsc":
            assert any("task.num_dev=" in n for n in splits.notes)
    assert sizes == {"cb": (150, 100, 56), "copa": (300, 100, 100), "wsc": (54, 500, 104)}
    sane = compose(
        ["task=wsc", "task.protocol=large", f"task.data_dir={data_dir}", "task.num_dev=100"]
    )
    splits = load_splits(get_task("wsc"), sane.task, data_seed=0)
    assert (len(splits.train), len(splits.dev)) == (454, 100)


def test_local_subsets_are_named_in_the_notes_and_hub_keyword_skips_local(data_dir, monkeypatch):
    splits = load_splits(get_task("boolq"), _cfg(data_dir, num_eval=10, num_dev=8), data_seed=0)
    assert any("32 FewGLUE examples" in n for n in splits.notes)
    from zoft.tasks.sampling import resolve_data_dir

    monkeypatch.setenv("ZOFT_DATA", str(data_dir))
    assert resolve_data_dir(None) == data_dir and resolve_data_dir("hub") is None


def test_kshot_split_without_test_file_evaluates_on_the_official_set(data_dir):
    splits = load_splits(get_task("mnli"), _cfg(data_dir, protocol="kshot"), data_seed=13)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (48, 48, 1000)
    assert any("dev_matched.tsv" in n for n in splits.notes)
