"""distillab installs like a Python package: `python -m build` makes a wheel and an sdist; the wheel, installed into
a fresh virtual environment, imports from there (not from this checkout) and runs a command."""

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args, **kwargs):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    return r


def test_wheel_and_sdist_install_into_a_fresh_venv_and_run(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    skipped = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")
    # runs/ at the top holds command outputs; src/distillab/runs is the package's own
    shutil.copytree(ROOT, source, ignore=lambda folder, names: skipped(folder, names)
                    | ({"runs"} if Path(folder) == ROOT else set()))
    run(sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", tmp_path / "dist", source,
        cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("distillab-*.whl"))
    sdist = next((tmp_path / "dist").glob("distillab-*.tar.gz"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "distillab/kd/losses/kd.py" in names and "distillab/condense/methods/dm.py" in names  # the plug-ins
    assert "distillab/runs/run.py" in names and "distillab/commands/train.py" in names  # the rooms by command
    assert any(n.endswith("entry_points.txt") for n in names)
    with tarfile.open(sdist) as t:
        members = t.getnames()
    assert any(m.endswith("/LICENSE") for m in members) and any(m.endswith("/README.md") for m in members)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    # torch and the other dependencies come from this environment (a wheel of torch is 1.3 GB); distillab itself
    # from the wheel: a path added by a .pth line does not run that folder's own .pth files (our editable install)
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel)
    where = run(python, "-c", "import distillab; print(distillab.__file__)").stdout.strip()
    assert where.startswith(str(site)), where
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = run(venv / "bin" / "distillab", "train", "--data", "digits", "--model", "mlp:hidden=8", "--epochs", "1",
              "--out", tmp_path / "run", env=env, cwd=tmp_path).stdout
    assert out.startswith("test_accuracy:") and (tmp_path / "run" / "model.safetensors").exists()
