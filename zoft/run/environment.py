"""What a run ran on: package versions, the zoft commit and the device (for result.json)."""

from __future__ import annotations

import functools
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("torch", "transformers", "datasets", "hydra-core", "peft", "accelerate", "numpy")


@functools.cache
def git_commit() -> str | None:
    """The commit of the zoft checkout (with -dirty for uncommitted changes), if it is one. Read
    once per process: the code a sweep runs is what it imported at start, whatever the checkout
    holds by the time a later cell begins."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    """Versions and device, for result.json."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(0)
    else:
        device_name = f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return {
        "packages": versions,
        "git_commit": git_commit(),
        "device_name": device_name,
        "torch_threads": torch.get_num_threads(),  # after the run's `threads` took effect
    }
