"""make gpu-check on a machine without CUDA: it runs up to the CUDA calls, which skip cleanly
(the gpu tests say why, the benches are left out) and writes its results folder."""

import json

import torch

from zoft.benchmark import gpu_check


def test_the_check_runs_without_cuda_and_says_what_it_skipped(tmp_path):
    if torch.cuda.is_available():  # on a GPU this is make gpu-check itself
        return
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    facts = json.loads((tmp_path / "device.json").read_text())
    assert facts["cuda_available"] is False and facts["torch"] == torch.__version__
    summary = (tmp_path / "summary.md").read_text()
    assert "skipped" in summary and "not run: torch sees no CUDA device" in summary
    report = (tmp_path / "gpu-tests.txt").read_text()
    assert "needs a CUDA device" in report and "failed" not in report
    assert (tmp_path / "gpu-tests.xml").is_file()


def test_the_benches_are_the_papers_shapes():
    models = [case.model for case in gpu_check.BENCHES]
    assert models == ["opt-1.3b-random", "opt-13b-random"]
    assert all(c.methods[0] == "forward" for c in gpu_check.BENCHES)  # every ratio needs it
