"""scripts/gpu-bench.sh in its CPU form: every part runs and lands in OUT (the GPU form differs in sizes only)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_bench_script_runs_its_quick_form_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "DISTILLAB_CELL_SECONDS": "300"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-bench.sh"), str(tmp_path), "cpu", "--quick"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "peak.json").read_text())["fp32_tflops"] > 0
    for method in ("gm", "dsa", "dm"):
        estimate = json.loads((tmp_path / f"estimate-{method}-1.json").read_text())
        assert estimate["iterations"] == 4 and estimate["estimated_condense_seconds"] > 0
    for method, protocol in (("dm", "vico-dm"), ("dsa", "vico-dsa")):
        cell = json.loads((tmp_path / f"cell-{method}.json").read_text())
        assert cell["iterations"] == 4 and cell["evaluation"]["protocol"]["name"] == protocol
        assert (tmp_path / f"cell-{method}" / "synset.safetensors").exists()
    summary = (tmp_path / "summary.md").read_text()
    assert "| dm:recipe=vico | 1 | 4 |" in summary and "vico-dsa:" in summary
