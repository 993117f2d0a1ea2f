"""zoft-table runs where torch cannot be imported: reports read records, never the methods."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMOLLM2 = REPO / "results" / "tables" / "mini" / "runs" / "smollm2"

TABLE = (
    "from zoft.cli import table_main; "
    f"table_main(['--experiment', 'mini_smollm2_table1', {str(SMOLLM2)!r}, '--no-plots'])"
)


def test_zoft_table_prints_the_committed_mini_table_with_torch_not_importable(tmp_path):
    guard = tmp_path / "guard" / "torch"
    guard.mkdir(parents=True)
    (guard / "__init__.py").write_text("raise ImportError('torch is not importable (test guard)')")
    path = os.pathsep.join([str(guard.parent), str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    check = subprocess.run(
        [sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True
    )
    assert "torch is not importable" in check.stderr  # the guard works
    done = subprocess.run(
        [sys.executable, "-c", TABLE], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("## mini_smollm2_table1: ours vs MeZO Table 1 (opt-13b)\n")
    assert "| MeZO | 52.0 ± 5.6 (n=3) | 40.7 ± 3.1 (n=3) |" in done.stdout
