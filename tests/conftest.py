"""Shared fixtures: the real task data beside the checkout and tiny models built in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import DictConfig

from zoft.models.loading import load_model
from zoft.run.schemas import register_configs

register_configs()  # what zoft-run does at import, for tests that compose configs

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("ZOFT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "glue").is_dir():
        pytest.fail(f"task data not found at {DATA_DIR}; set ZOFT_DATA to ../shared/data")
    return DATA_DIR


def compose(overrides: list[str]) -> DictConfig:
    """The run config zoft-run would build from these overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="zoft.conf", version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def model_cfg(name: str) -> DictConfig:
    """The shipped model config `name`, as the runner would see it."""
    return compose([f"model={name}"]).model


def tiny(arch: str = "opt", dtype: str = "fp32", num_labels: int = 2):
    return load_model(model_cfg(f"tiny-{arch}"), dtype, "cpu", num_labels)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip, saying why, where torch sees no CUDA device (make gpu-check runs them)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: run `make gpu-check` on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
