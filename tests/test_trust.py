"""Files cannot run code: a spec read from a file that names code (import:...) is refused unless the user passes
--trust-code; so is a recipe file that names code."""

import sys

import pytest

from distillab import train
from distillab.files import load_tensors, save_tensors

from conftest import assert_one_line_error


def _forge(src, dst, **changes):
    tensors, meta = load_tensors(src, "distillab.model")
    meta.update(changes)
    save_tensors(dst, tensors, meta)
    return dst


@pytest.fixture(scope="module")
def forged(tmp_path_factory):
    """A real digits model (mlp:hidden=8) whose metadata now says it is built by tests/trap.py."""
    root = tmp_path_factory.mktemp("forged")
    train(data="digits", model="mlp:hidden=8", epochs=1, out=root / "m", quiet=True)
    return _forge(root / "m/model.safetensors", root / "forged.safetensors", spec="import:trap:make")


@pytest.fixture(autouse=True)
def unload_trap():
    sys.modules.pop("trap", None)
    yield
    sys.modules.pop("trap", None)


@pytest.mark.parametrize("command", [
    ["evaluate", "FILE"], ["inspect", "FILE"], ["predict", "FILE", "--out", "OUT/p.npz"],
    ["kd", "--teacher", "FILE", "--student", "mlp:hidden=4", "--epochs", "1", "--out", "OUT/k"],
])
def test_a_file_naming_code_is_refused_and_nothing_is_imported(cli, tmp_path, forged, command):
    args = [str(forged) if a == "FILE" else a.replace("OUT", str(tmp_path)) for a in command]
    assert_one_line_error(cli(*args), "names code to import", "--trust-code")
    assert "trap" not in sys.modules
    assert not list(tmp_path.iterdir())


def test_with_trust_code_the_user_may_run_it(cli, tmp_path, forged):
    r = cli("evaluate", forged, "--trust-code", "--quiet", "--out", tmp_path / "e")
    assert r.code == 0, r.err
    import trap
    assert trap.CALLS == [((1, 8, 8), 10)] and 0 <= r.json["test_accuracy"] <= 1


def test_a_synset_naming_code_for_its_schedule_is_refused(cli, tmp_path):
    r = cli("condense", "--method", "bptt:iterations=1,steps=1,epochs=1,batch_real=16,model=[mlp:hidden=4]",
            "--ipc", "1", "--quiet", "--out", tmp_path / "b")
    assert r.code == 0, r.err
    tensors, meta = load_tensors(tmp_path / "b/synset.safetensors", "distillab.synset")
    meta["bptt"]["model"] = "import:trap:make"
    save_tensors(tmp_path / "forged.safetensors", tensors, meta)
    r = cli("evaluate", tmp_path / "forged.safetensors", "--models", "mlp:hidden=4", "--runs", "1", "--epochs", "1",
            "--out", tmp_path / "e")
    assert_one_line_error(r, "names code to import", "--trust-code")
    assert "trap" not in sys.modules and not (tmp_path / "e").exists()


def test_a_recipe_naming_code_needs_trust(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("command: train\nmodel: import:trap:make\nepochs: 1\nquiet: true\n"
                      f"out: {tmp_path / 'o'}\n")
    assert_one_line_error(cli("run", recipe), "--trust-code")
    assert "trap" not in sys.modules and not (tmp_path / "o").exists()
    assert cli("run", recipe, "--trust-code").code == 0 and (tmp_path / "o/model.safetensors").exists()


@pytest.mark.parametrize("bad_meta", [
    {"spec": 12}, {"spec": ""}, {"spec": "import:os:system"}, {"spec": "mlp:hidden=8", "input_shape": "big"},
])
def test_forged_specs_end_in_one_line(cli, tmp_path, forged, bad_meta):
    path = _forge(forged, tmp_path / "f.safetensors", **bad_meta)
    r = cli("evaluate", path, "--out", tmp_path / "o")
    assert r.code == 2 and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err


@pytest.mark.parametrize("changes", [{"method": ["dm"]}, {"bptt": "fixed"}, {"bptt": {"model": 3}}])
def test_forged_synset_metadata_ends_in_one_line(cli, tmp_path, changes):
    r = cli("condense", "--method", "bptt:iterations=1,steps=1,epochs=1,batch_real=16,model=[mlp:hidden=4]",
            "--ipc", "1", "--quiet", "--out", tmp_path / "b")
    assert r.code == 0, r.err
    tensors, meta = load_tensors(tmp_path / "b/synset.safetensors", "distillab.synset")
    meta.update(changes)
    save_tensors(tmp_path / "forged.safetensors", tensors, meta)
    r = cli("evaluate", tmp_path / "forged.safetensors", "--models", "mlp:hidden=4", "--runs", "1", "--epochs", "1",
            "--quiet", "--out", tmp_path / "e")
    assert r.code in (0, 2) and "Traceback" not in r.err and len(r.err.strip().splitlines()) <= 1, r.err


# ---- --overwrite deletes only what distillab made ---------------------------------------------------------------

TRAIN_ARGS = ("train", "--data", "digits", "--model", "mlp:hidden=4", "--epochs", "1", "--quiet")


def test_overwrite_refuses_a_folder_distillab_did_not_make(cli, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    canary = mine / "thesis.tex"
    canary.write_text("years of work")
    assert_one_line_error(cli(*TRAIN_ARGS, "--out", mine, "--overwrite"), "was not made by distillab")
    assert canary.read_text() == "years of work" and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_overwrite_replaces_a_run_folder_but_not_what_the_user_added_to_it(cli, tmp_path):
    run = tmp_path / "run"
    assert cli(*TRAIN_ARGS, "--out", run).code == 0
    assert cli(*TRAIN_ARGS, "--out", run, "--overwrite").code == 0  # a run's own folder: replaced
    canary = run / "notes" / "keep.txt"
    canary.parent.mkdir()
    canary.write_text("mine")
    assert_one_line_error(cli(*TRAIN_ARGS, "--out", run, "--overwrite"), "distillab did not write (notes,")
    assert canary.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    canary.unlink()
    canary.parent.rmdir()
    (run / ".distillab-run").write_text('{"paths": 3}')  # forged: cannot tell what the run wrote
    assert_one_line_error(cli(*TRAIN_ARGS, "--out", run, "--overwrite"), "damaged .distillab-run")
    assert (run / "model.safetensors").exists()


@pytest.mark.parametrize("where", ["link", "root", "dot", "partial-link"])
def test_overwrite_refuses_links_and_nameless_folders_and_leaves_nothing(cli, tmp_path, where, monkeypatch):
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    if where == "link":
        (tmp_path / "link").symlink_to(target)
        out, message = "link", "is a symbolic link"
    elif where == "partial-link":
        (tmp_path / ".fresh.partial").symlink_to(target)
        out, message = "fresh", "is a symbolic link"
    else:
        out, message = {"root": "/", "dot": "."}[where], "must name a folder"
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_one_line_error(cli(*TRAIN_ARGS, "--out", out, "--overwrite"), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (target / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]


def test_overwrite_refuses_a_partial_folder_distillab_did_not_make(cli, tmp_path):
    partial = tmp_path / ".run.partial"
    partial.mkdir()
    (partial / "keep.txt").write_text("mine")
    assert_one_line_error(cli(*TRAIN_ARGS, "--out", tmp_path / "run", "--overwrite"), "was not made by distillab")
    assert sorted(p.name for p in partial.iterdir()) == ["keep.txt"] and not (tmp_path / "run").exists()
