"""Model loading: tiny models, clear errors offline, and the packaged SmolLM2 on real data."""

import pytest
import torch

from tests.conftest import compose, model_cfg, tiny
from zoft.models.loading import ModelLoadError, load_model, memory_caps
from zoft.scoring import build_scorer
from zoft.tasks import get_task


@pytest.mark.parametrize(
    "arch,kind", [("opt", "causal"), ("llama", "causal"), ("roberta", "masked")]
)
def test_tiny_models_build_in_process(arch, kind):
    loaded = tiny(arch)
    assert sum(p.numel() for p in loaded.model.parameters()) < 500_000
    for word in (" great", " terrible", " Yes", " No", " Maybe"):
        assert len(loaded.tokenizer.encode(word, add_special_tokens=False)) == 1


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_dtype_is_applied(dtype):
    loaded = tiny("opt", dtype=dtype)
    expected = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    assert all(p.dtype == expected for p in loaded.model.parameters())


def test_hub_model_offline_names_the_model_and_model_path(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"opt-13b.*model\.path="):
        load_model(model_cfg("opt-13b"), "fp32", "cpu")


def test_missing_model_path_is_a_clear_error(tmp_path):
    cfg = model_cfg("opt-125m")
    cfg.path = str(tmp_path / "nowhere")
    with pytest.raises(ModelLoadError, match=r"model\.path=.*nowhere does not exist"):
        load_model(cfg, "fp32", "cpu")


def test_packaged_smollm2_loads_and_scores_sst2_dev(data_dir):
    loaded = load_model(model_cfg("smollm2-135m"), "fp32", "cpu")
    assert sum(p.numel() for p in loaded.model.parameters()) == 134_515_008
    assert any("a Q4_1 GGUF quantisation, dequantised" in note for note in loaded.notes)
    task = get_task("sst2")
    dev = task.load_local("validation", data_dir)[:24]
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "review", 512)
    predictions = scorer.predict(loaded.model, dev, batch_size=12)
    accuracy = task.score(predictions, dev)["accuracy"]
    assert accuracy > 0.6  # a real pretrained model, well above chance on real data


def test_device_map_auto_with_memory_caps_loads_a_model_directory(tmp_path):
    """The multi-GPU path (device_map=auto, per-device caps) on the CPU this machine has: the
    model loads through from_pretrained with the caps and computes what the plain model does."""
    plain = tiny("opt")
    plain.model.save_pretrained(tmp_path)
    plain.tokenizer.save_pretrained(tmp_path)
    cfg = compose(
        [
            "model=tiny-opt",
            "model.source=hub",
            f"model.path={tmp_path}",
            "model.device_map=auto",
            "model.max_memory=cpu:2GiB",
        ]
    ).model
    mapped = load_model(cfg, "fp32", "cpu", 2)
    plain.model.eval()  # built from a config, it starts in train mode (dropout)
    ids = torch.tensor([[2, 10, 11, 12]])
    with torch.no_grad():
        expected = plain.model(input_ids=ids).logits
        torch.testing.assert_close(mapped.model(input_ids=ids).logits, expected)


def test_weights_offloaded_by_device_map_are_refused_right_after_loading(tmp_path):
    """A cap too small for the model makes Accelerate offload it (here all of it, to disk):
    those weights stay on the meta device, where nothing zoft does to weights can reach them."""
    plain = tiny("opt")
    plain.model.save_pretrained(tmp_path / "model")
    plain.tokenizer.save_pretrained(tmp_path / "model")
    cfg = compose(
        [
            "model=tiny-opt",
            "model.source=hub",
            f"model.path={tmp_path / 'model'}",
            "model.device_map=auto",
            "model.max_memory=cpu:100KiB",  # the model has ~2 MB of fp32 weights
        ]
    ).model
    with pytest.raises(ModelLoadError, match=r"model\.device_map offloaded .* model\.max_memory"):
        load_model(cfg, "fp32", "cpu", 2)


def test_memory_caps_are_read_as_accelerate_wants_them():
    assert memory_caps("0:70GiB 1:70GiB cpu:200GiB") == {0: "70GiB", 1: "70GiB", "cpu": "200GiB"}
    with pytest.raises(ModelLoadError, match=r"'0=70GiB' is not device:size"):
        memory_caps("0=70GiB")


def test_memory_caps_without_device_map_are_refused():
    cfg = compose(["model=tiny-opt", "model.max_memory=cpu:2GiB"]).model
    with pytest.raises(ModelLoadError, match=r"add model\.device_map=auto"):
        load_model(cfg, "fp32", "cpu", 2)


@pytest.mark.gpu
def test_device_map_auto_on_one_gpu_places_every_weight_there(tmp_path):
    plain = tiny("opt")
    plain.model.save_pretrained(tmp_path)
    plain.tokenizer.save_pretrained(tmp_path)
    cfg = compose(
        ["model=tiny-opt", "model.source=hub", f"model.path={tmp_path}", "model.device_map=auto"]
    ).model
    mapped = load_model(cfg, "fp32", "cuda", 2)
    assert {p.device.type for p in mapped.model.parameters()} == {"cuda"}
    ids = torch.tensor([[2, 10, 11, 12]])
    with torch.no_grad():
        expected = plain.model.eval()(input_ids=ids).logits
        got = mapped.model(input_ids=ids.cuda()).logits.cpu()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_two_runs_loading_a_gguf_package_at_once_convert_it_once(monkeypatch, tmp_path):
    """Two pieces of a sweep started together on a fresh machine: the second waits for the
    first's conversion and reads its cache instead of converting again (and deleting it)."""
    import threading
    import time

    from zoft.models import loading

    monkeypatch.setenv("ZOFT_CACHE", str(tmp_path))
    conversions = []

    def slow_convert(package_dir, gguf_file, cls, target):
        conversions.append(target)
        time.sleep(0.3)
        target.mkdir(parents=True)
        (target / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(loading, "_package_dir", lambda package: tmp_path)
    monkeypatch.setattr(loading, "_convert_gguf", slow_convert)
    monkeypatch.setattr(loading, "_from_dir", lambda folder, cls, **kw: ("model", "tok"))
    cfg = model_cfg("smollm2-135m")
    load = loading.LOADERS.get(cfg.source)
    loaders = [threading.Thread(target=load, args=(cfg, None, {})) for _ in range(2)]
    for thread in loaders:
        thread.start()
    for thread in loaders:
        thread.join()
    assert conversions == [tmp_path / "models" / "smollm2-135m"]
