"""Several synthetic sets evaluated together: the cross-architecture matrix (rows: condensed with, columns:
evaluated on), its refusals, and the single-set output kept as it was."""

import json
from types import SimpleNamespace

import pytest
from conftest import assert_one_line_error, write_npz

from distillab import api, checkpoint

SPECS = ["convnet:width=4,depth=2", "mlp:hidden=8"]
PROTOCOL = dict(runs=2, epochs=3)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Two sets of digits that train differently: 2 random real images per class, and the class means."""
    root = tmp_path_factory.mktemp("sets")
    api.condense_data("digits", "random", 2, out=root / "random", quiet=True)
    api.condense_data("digits", "mean", 1, out=root / "mean", quiet=True)
    return [root / "random" / "synset.safetensors", root / "mean" / "synset.safetensors"]


def _is_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path).ndim == 3


def test_two_sets_on_two_models_give_the_matrix_of_their_own_results(cli, sets, tmp_path):
    r = cli("evaluate", *sets, "--models", *SPECS, "--runs", 2, "--epochs", 3, "--out", tmp_path / "m", "--quiet")
    assert r.code == 0, r.err
    m = r.json
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["matrix"] == m["matrix"]
    # each set alone, by the same protocol and seed: its row of the matrix is its own result
    alone = [api.evaluate_synset(p, models=SPECS, out=tmp_path / f"alone{i}", quiet=True, **PROTOCOL).metrics
             for i, p in enumerate(sets)]
    assert m["matrix"]["rows"] == ["random IPC 2", "mean IPC 1"] and m["matrix"]["columns"] == SPECS
    for i, one in enumerate(alone):
        assert m["synsets"][i]["synset"] == str(sets[i]) and m["synsets"][i]["method"] == one["method"]
        assert m["matrix"]["mean"][i] == [one["models"][s]["mean"] for s in SPECS]
        assert m["matrix"]["std"][i] == [one["models"][s]["std"] for s in SPECS]
        assert [m["synsets"][i]["models"][s]["runs"] for s in SPECS] == [one["models"][s]["runs"] for s in SPECS]
    assert m["matrix"]["mean"][0] != m["matrix"]["mean"][1]  # the rows differ: a swap or a transpose would show
    table = (tmp_path / "m" / "matrix.md").read_text().splitlines()
    assert table[0] == "| condensed with \\ evaluated on | " + " | ".join(SPECS) + " |"
    one = alone[1]["models"]
    assert table[3] == (f"| mean IPC 1 | {100 * one[SPECS[0]]['mean']:.2f} ± {100 * one[SPECS[0]]['std']:.2f} | "
                        f"{100 * one[SPECS[1]]['mean']:.2f} ± {100 * one[SPECS[1]]['std']:.2f} |")
    assert _is_png(tmp_path / "m" / "matrix.png")
    lines = [json.loads(line) for line in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["synset"], x["model"]) for x in lines] == [(row, s) for row in m["matrix"]["rows"] for s in SPECS]


def test_one_set_keeps_its_metrics_and_gets_a_matrix_only_with_several_models(sets, tmp_path):
    one = api.evaluate_synset(sets[1], models=SPECS[1:], out=tmp_path / "one", quiet=True, **PROTOCOL).metrics
    assert {"synset", "synset_sha256", "data", "method", "ipc", "models", "epochs", "dsa"} <= set(one)
    assert "synsets" not in one and "matrix" not in one and not (tmp_path / "one" / "matrix.md").exists()
    two = api.evaluate_synset(sets[1], models=SPECS, out=tmp_path / "two", quiet=True, **PROTOCOL).metrics
    assert two["synset"] == str(sets[1]) and set(two["models"]) == set(SPECS) and "synsets" not in two
    assert two["matrix"]["rows"] == ["mean IPC 1"] and two["matrix"]["columns"] == SPECS
    assert two["matrix"]["mean"] == [[two["models"][s]["mean"] for s in SPECS]]
    assert (tmp_path / "two" / "matrix.md").exists() and _is_png(tmp_path / "two" / "matrix.png")


def test_sets_of_different_datasets_are_refused_before_anything_is_written(cli, sets, tmp_path):
    npz = write_npz(tmp_path / "d.npz", classes=10, n=100, with_test=True)  # 8x8 too: only the dataset differs
    api.condense_data(f"npz:{npz}", "random", 1, out=tmp_path / "other", quiet=True)
    out = tmp_path / "m"
    r = cli("evaluate", sets[0], tmp_path / "other" / "synset.safetensors", "--models", SPECS[1], "--out", out)
    assert_one_line_error(r, "different datasets", "digits")
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_a_model_file_among_sets_is_refused(cli, sets, tmp_path):
    api.train(data="digits", model="mlp:hidden=4", epochs=1, out=tmp_path / "t", quiet=True)
    model = tmp_path / "t" / "model.safetensors"
    r = cli("evaluate", sets[0], model, "--out", tmp_path / "m")
    assert_one_line_error(r, str(model), "not a synthetic set")
    assert not (tmp_path / "m").exists()
    assert_one_line_error(cli("evaluate", sets[0], sets[0], "--out", tmp_path / "m"), "given twice")


def test_rows_that_would_share_a_label_say_their_file():
    def s(method, ipc):
        return SimpleNamespace(meta={"method": method}, ipc=ipc)

    assert api.synset_labels(["a/x.safetensors", "b/y.safetensors"], [s("dm", 10), s("dsa", 10)]) == [
        "dm IPC 10", "dsa IPC 10"]
    assert api.synset_labels(["a/x.safetensors", "b/y.safetensors", "c/z.safetensors"],
                             [s("dm", 10), s("dm", 10), s("dm", 1)]) == [
        "dm IPC 10 (x.safetensors)", "dm IPC 10 (y.safetensors)", "dm IPC 1"]
    assert api.synset_labels(["a/synset.safetensors", "b/synset.safetensors"], [s("dm", 10), s("dm", 10)]) == [
        "dm IPC 10 (a/synset.safetensors)", "dm IPC 10 (b/synset.safetensors)"]


def test_several_sets_resume_inside_the_second_set(sets, tmp_path, monkeypatch):
    kwargs = dict(path=[str(p) for p in sets], models=SPECS[1:], **PROTOCOL)
    reference = api.evaluate_synset(out=tmp_path / "reference", quiet=True, **kwargs).metrics
    calls = {"n": 0}

    def requested():  # the third model (the first of the second set) sees a stop request, as SIGTERM would make it
        calls["n"] += 1
        return calls["n"] == 3

    monkeypatch.setattr(checkpoint, "stop_requested", requested)
    out = tmp_path / "resumed"
    with pytest.raises(checkpoint.Interrupted):
        api.evaluate_synset(out=out, quiet=True, **kwargs)
    partial = out.with_name(f".{out.name}.partial")
    assert sorted(p.name for p in (partial / "checkpoints").iterdir()) == ["protocol-2.safetensors",
                                                                           "protocol.safetensors"]
    monkeypatch.setattr(checkpoint, "stop_requested", lambda: False)
    resumed = api.resume(out, command="evaluate").metrics
    assert resumed["matrix"] == reference["matrix"]
    assert [row["models"][SPECS[1]]["runs"] for row in resumed["synsets"]] == [
        row["models"][SPECS[1]]["runs"] for row in reference["synsets"]]
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["synset"] for x in log] == ["random IPC 2", "mean IPC 1"]
