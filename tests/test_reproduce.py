"""Reference recipes and protocols by name: what each fills in, how it trains, how it is recorded, the bad names and
clashes that end in one line, and bench reproduce-mnist's cells (quick form)."""

import json
import re

import pytest
import torch

from conftest import assert_one_line_error
from distillab import api, data
from distillab.condense import METHODS, SyntheticSet, condense
from distillab.condense.methods.gm import GM, inner_batches, real_batch
from distillab.errors import DistillabError
from distillab.evaluation import PROTOCOLS
from distillab.protocols import parse_protocol
from distillab.testing import contract_synset


@pytest.fixture(scope="module")
def train():
    return data.split(data.load("digits")).train_set()


# ---- protocols ------------------------------------------------------------------------------------------------


def test_the_vico_schedule_is_evaluate_synsets():
    """E + 1 passes; the rate x0.1 after 0-based pass E//2 + 1, where the optimiser is made anew; distillab's own:
    E passes, x0.1 from epoch E//2 + 1 (1-based), one optimiser."""
    spec = "convnet:width=4,depth=2"
    for e in (1, 4, 10, 1000):
        vico = parse_protocol(f"vico-dsa:epochs={e}")
        assert vico.passes(spec) == e + 1
        low = [p for p in range(e + 1) if vico.lr_at(spec, p) < vico.lr]
        assert low == list(range(e // 2 + 2, e + 1))
        assert [p for p in range(e + 1) if vico.rebuilds_before(spec, p)] == ([e // 2 + 2] if e // 2 + 2 <= e else [])
        own = parse_protocol(f"distillab:epochs={e}")
        assert own.passes(spec) == e and not any(own.rebuilds_before(spec, p) for p in range(e))
        assert [p for p in range(e) if own.lr_at(spec, p) < own.lr] == list(range(e // 2, e))


def test_vico_dc_sets_its_augmentation_and_epochs_per_dataset_and_model():
    """get_daparam: crop_scale_rotate for MNIST (so 1000 epochs), none elsewhere (300), crop_noise for a batch-norm
    ConvNet on any dataset (1000)."""
    plain, bn = "convnet:width=4,depth=2", "convnet:width=4,depth=2,norm=batch"
    mnist, other = parse_protocol("vico-dc").for_data("mnist"), parse_protocol("vico-dc").for_data("cifar10")
    assert (mnist.strategy_for(plain), mnist.epochs_for(plain)) == ("crop_scale_rotate", 1000)
    assert (other.strategy_for(plain), other.epochs_for(plain), other.augmentation((3, 32, 32), plain)) == \
        ("none", 300, None)
    assert (other.strategy_for(bn), other.epochs_for(bn)) == ("crop_noise", 1000)
    assert parse_protocol("vico-dc:epochs=7").for_data("cifar10").epochs_for(plain) == 7
    with pytest.raises(DistillabError, match="for_data"):
        parse_protocol("vico-dc").augmentation((1, 28, 28), plain)  # unresolved: the dataset decides


def test_vico_dsa_drops_the_flip_for_digits_and_vico_dm_keeps_it():
    assert "flip" not in parse_protocol("vico-dsa").for_data("mnist").strategy
    assert "flip" in parse_protocol("vico-dsa").for_data("cifar10").strategy
    assert "flip" in parse_protocol("vico-dm").for_data("mnist").strategy
    aug = parse_protocol("vico-dsa").for_data("mnist").augmentation((1, 28, 28), "convnet")
    assert aug.per_image and aug.op.style == "vico"
    assert not parse_protocol("distillab:dsa=1").augmentation((1, 28, 28), "convnet").per_image


def test_mtt_protocol_trains_with_the_sets_learned_rate():
    synset, splits = contract_synset()
    assert parse_protocol("mtt").for_data("digits", synset).lr == pytest.approx(0.01)  # not an mtt set
    made = SyntheticSet(images=synset.images, labels=synset.labels, classes=synset.classes, mean=synset.mean,
                        std=synset.std, lrs=torch.tensor([0.037]), meta={"method": "mtt"})
    assert parse_protocol("mtt").for_data("digits", made).lr == pytest.approx(0.037)
    assert parse_protocol("mtt:lr=0.2").for_data("digits", made).lr == pytest.approx(0.2)


def test_wang2018_refuses_a_set_without_a_schedule(tmp_path):
    synset, splits = contract_synset()
    synset.save(tmp_path / "random.safetensors")
    with pytest.raises(DistillabError, match="learned schedule") as e:
        api.evaluate(tmp_path / "random.safetensors", protocol="wang2018", out=tmp_path / "e", quiet=True)
    assert "\n" not in str(e.value) and not (tmp_path / "e").exists()
    with pytest.raises(DistillabError, match="do not apply"):
        parse_protocol("wang2018:epochs=5")


def test_every_protocol_records_itself_and_whose_it_is():
    for name in PROTOCOLS.names():
        record = parse_protocol(name).record()
        assert record["name"] == name and record["reference"], name
        json.dumps(record)


def test_evaluate_by_a_reference_protocol_from_the_cli(cli, tmp_path):
    r = cli("condense", "--data", "digits", "--method", "random", "--ipc", "2", "--quiet", "--out", tmp_path / "c")
    assert r.code == 0, r.err
    s = tmp_path / "c/synset.safetensors"
    e = cli("evaluate", s, "--protocol", "vico-dc:strategy=crop_scale_rotate,epochs=2", "--runs", "2", "--models",
            "convnet:width=4,depth=2", "--quiet", "--out", tmp_path / "e")
    assert e.code == 0, e.err
    m = json.loads((tmp_path / "e/metrics.json").read_text())
    assert m["protocol"]["name"] == "vico-dc" and m["protocol"]["strategy"] == "crop_scale_rotate"
    assert m["protocol"]["runs"] == 2 and "VICO" in m["protocol"]["reference"] and m["epochs"] == 2
    assert len(m["models"]["convnet:width=4,depth=2"]["runs"]) == 2
    bad = [(["--protocol", "nope"], "unknown evaluation protocol 'nope'"),
           (["--protocol", "vico-dsa", "--dsa"], "--dsa does not apply to the vico-dsa protocol"),
           (["--protocol", "vico-dsa", "--augment", "dc"], "--augment does not apply"),
           (["--protocol", "vico-dc:epochs=2", "--epochs", "3"], "both set epochs"),
           (["--protocol", "vico-dc:strategy=crop_flip"], "unknown DC augmentation op"),
           (["--protocol", "vico-dsa:strategy=color_zoom"], "unknown DSA op family"),
           (["--protocol", "vico-dc:runs=0"], "--runs must be at least 1"),
           (["--protocol", "mtt:lr=-1"], "lr must be > 0"),
           (["--protocol", "vico-dc:bogus=1"], "unknown option(s) bogus"),
           (["--protocol", "import:os:path"], "is not an evaluation protocol")]
    for i, (flags, message) in enumerate(bad):
        out = tmp_path / f"bad{i}"
        assert_one_line_error(cli("evaluate", s, *flags, "--quiet", "--out", out), message)
        assert not out.exists()


# ---- recipes --------------------------------------------------------------------------------------------------


def test_a_recipe_fills_the_options_and_explicit_ones_override_it():
    vico = METHODS.parse("gm:recipe=vico")
    assert (vico.init, vico.real_draw, vico.inner_unit, vico.dsa_style, vico.batch_real) == \
        ("noise", "distinct", "epoch", "vico", 256)
    assert vico.recipe == "vico" and vico.recipe_record()["departures"] == {}
    mine = METHODS.parse("gm:recipe=vico,iterations=7,init=real")
    assert (mine.iterations, mine.init, mine.real_draw) == (7, "real", "distinct")
    record = mine.recipe_record()
    assert record["departures"] == {"iterations": {"recipe": 1000, "used": 7}, "init": {"recipe": "noise",
                                                                                       "used": "real"}}
    assert str(mine).startswith("gm:recipe=vico,") and METHODS.parse(str(mine)) == mine
    assert GM.from_recipe("vico", iterations=7, init="real") == mine
    assert METHODS.parse("dsa:recipe=vico").init == "real" and METHODS.parse("dsa:recipe=vico").dsa
    assert METHODS.parse("dm:recipe=vico").iterations == 20000 and "flip" in METHODS.parse("dm:recipe=vico").dsa_strategy
    assert METHODS.parse("bptt:recipe=wang2018-fixed").init_net == "fixed"
    assert METHODS.parse("herding:recipe=dc").space == "features"


def test_bad_recipes_end_in_one_line():
    for spec, message in [("gm:recipe=nope", "gm has no recipe 'nope'; its recipes: vico"),
                          ("random:recipe=vico", "random has no recipe 'vico'; it has no reference recipes"),
                          ("gm:recipe=vico,recipe=vico", "given twice"),
                          ("gm:recipe=vico,real_draw=sometimes", "real_draw must be one of replace, distinct")]:
        with pytest.raises(DistillabError, match=message) as e:
            METHODS.parse(spec)
        assert "\n" not in str(e.value)


def test_the_recipe_is_recorded_with_the_set_and_the_run(cli, tmp_path):
    spec = "gm:recipe=vico,iterations=1,batch_real=8,model=[convnet:width=4,depth=2]"
    r = cli("condense", "--data", "digits", "--method", spec, "--ipc", "1", "--quiet", "--out", tmp_path / "c",
            "--protocol", "vico-dc:epochs=2,runs=1,models=[convnet:width=4,depth=2],strategy=crop_scale_rotate")
    assert r.code == 0, r.err
    m = json.loads((tmp_path / "c/metrics.json").read_text())
    assert m["method_recipe"]["name"] == "vico" and set(m["method_recipe"]["departures"]) == {
        "iterations", "batch_real", "model"}
    assert m["evaluation"]["protocol"]["name"] == "vico-dc" and len(m["evaluation"]["models"]) == 1
    synset = SyntheticSet.load(tmp_path / "c/synset.safetensors")
    assert synset.meta["method_recipe"]["name"] == "vico" and synset.meta["recipe"]["init"] == "noise"
    assert_one_line_error(cli("condense", "--data", "digits", "--method", "gm:recipe=nope", "--ipc", "1", "--quiet",
                              "--out", tmp_path / "x"), "no recipe 'nope'")
    assert_one_line_error(cli("condense", "--data", "digits", "--method", "random", "--ipc", "1", "--quiet",
                              "--protocol", "nope", "--out", tmp_path / "y"), "unknown evaluation protocol")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_distinct_real_batches_never_repeat_an_image_and_replace_does(train):
    idx = train.class_indices()[0]
    g = torch.Generator().manual_seed(0)
    distinct = [real_batch(train.counted(), idx, len(idx) - 1, "distinct", g) for _ in range(5)]
    assert all(len(torch.unique(b.flatten(1), dim=0)) == len(b) for b in distinct)
    repeats = [real_batch(train.counted(), idx, len(idx) - 1, "replace", g) for _ in range(5)]
    assert any(len(torch.unique(b.flatten(1), dim=0)) < len(b) for b in repeats)


def test_inner_epochs_cover_the_set_once_each_in_batches():
    cfg = GM(inner_unit="epoch", batch_train=8)
    batches = list(inner_batches(20, cfg, torch.Generator().manual_seed(0), 2))
    assert [len(b) for b in batches] == [8, 8, 4, 8, 8, 4]
    assert sorted(torch.cat(batches[:3]).tolist()) == list(range(20)) == sorted(torch.cat(batches[3:]).tolist())
    steps = list(inner_batches(20, GM(batch_train=8), torch.Generator().manual_seed(0), 2))
    assert [len(b) for b in steps] == [8, 8]


def test_herding_in_feature_space_picks_real_images_by_a_trained_networks_features(train):
    cls = METHODS.get("herding")
    pixels = condense(train, cls(), 2, seed=0)
    features = condense(train, cls(space="features", model="convnet:width=4,depth=2", epochs=1), 2, seed=0)
    as_rows = {tuple(r.tolist()) for r in train.x.flatten(1)}
    assert all(tuple(r.tolist()) in as_rows for r in features.images.flatten(1))  # a coreset of real images
    assert not torch.equal(pixels.images, features.images)
    assert features.meta["budget"]["real_images_read"] >= len(train)  # the network's epoch read every image


# ---- bench reproduce-mnist -------------------------------------------------------------------------------------


def test_reproduce_mnist_quick(tmp_path):
    from distillab.bench import run_benchmark

    run_benchmark("reproduce-mnist", quick=True, out=tmp_path, quiet=True)
    d = json.loads((tmp_path / "reproduce-mnist.json").read_text())
    assert d["quick"] and not d["not_run"]
    md = (tmp_path / "reproduce-mnist.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    for name, protocol in [("gm", "vico-dc"), ("dsa", "vico-dsa"), ("dm", "vico-dm"), ("bptt", "wang2018")]:
        assert any(r.startswith(f"| {name} |") and f"| {protocol} |" in r for r in rows), name
    assert "NOT met" not in md and "| met |" not in md  # quick figures are never set against the papers'
    cells = d["cells"]
    assert cells["gm-1-condense"]["recipe"]["name"] == "vico"
    assert cells["gm-1-eval-2"]["reference"]["protocol"]["name"] == "vico-dc"
    assert cells["dsa-1-eval-2"]["reference"]["protocol"]["strategy"] == "color_crop_cutout_scale_rotate"
    assert cells["random-1-0"]["reference"]["protocol"]["name"] == "vico-dc"
    assert cells["herding-1-features"]["method"].startswith("herding:recipe=dc")
    assert cells["gm-2-probe"]["reference_iterations"] == 1000 and cells["gm-2-probe"]["seconds_per_iteration"] > 0
    assert set(cells["dm-1-condense"]["condense_seconds"]) == {"2", "4"}


def test_a_reproduce_condense_cell_stopped_part_way_resumes_to_the_same_sets(tmp_path, stop_after):
    from distillab import checkpoint
    from distillab.bench.reproduce import _condense_cell, _set_path
    from distillab.bench.common import Bench

    whole = _condense_cell(tmp_path / "whole", True, "dm", 1)
    stop_after(3)
    with pytest.raises(checkpoint.Interrupted):
        _condense_cell(tmp_path / "stopped", True, "dm", 1)
    assert _set_path(Bench(tmp_path / "stopped", True), "dm", 1, 2).exists()  # the point before the stop is kept
    assert not _set_path(Bench(tmp_path / "stopped", True), "dm", 1, 4).exists()
    stop_after(0)
    resumed = _condense_cell(tmp_path / "stopped", True, "dm", 1)
    for n in whole["points"]:
        a, b = (SyntheticSet.load(_set_path(Bench(tmp_path / o, True), "dm", 1, n)) for o in ("whole", "stopped"))
        assert torch.equal(a.images, b.images), n
    assert resumed["points"] == whole["points"]
    assert not list((tmp_path / "stopped" / "work-quick" / "checkpoints").iterdir())


def test_a_budget_point_is_evaluated_while_its_condense_cell_is_unfinished(tmp_path, monkeypatch, stop_after):
    """A condense cell stopped after its first budget point (as at a session's end): that point's set is evaluated
    and in the table, the later point is not; a set left by another recipe is neither evaluated nor kept when the
    cell starts afresh."""
    from distillab import checkpoint
    from distillab.bench import reproduce, run_benchmark
    from distillab.bench.common import Bench
    from distillab.bench.reproduce import _condense_cell, _set_path

    stop_after(3)
    with pytest.raises(checkpoint.Interrupted):
        _condense_cell(tmp_path, True, "dm", 1)
    stop_after(0)
    d = run_benchmark("reproduce-mnist", quick=True, out=tmp_path, quiet=True, cells=("dm-1-eval-*",))
    assert "dm-1-eval-2" in d["cells"] and "dm-1-eval-4" not in d["cells"] and "dm-1-condense" not in d["cells"]
    counted = json.loads((tmp_path / "work-quick/reproduce-mnist/sets/dm-1-seconds.json").read_text())
    assert d["cells"]["dm-1-eval-2"]["condense_seconds"] == counted["2"] >= 0  # the seconds counted to that point
    md = (tmp_path / "reproduce-mnist.md").read_text()
    assert any(line.startswith("| dm | 1 |") and "| 2 / 20,000 |" in line for line in md.splitlines())
    assert re.search(r"dm-1-condense \(\d of 4 iterations, checkpointed\)", md)  # how far the stopped cell got

    # another recipe: the kept point is not its set, so it is not evaluated, and a fresh start replaces it
    kept = _set_path(Bench(tmp_path, True), "dm", 1, 2)
    before = SyntheticSet.load(kept)
    monkeypatch.setitem(reproduce.QUICK_OPTIONS, "dm", {**reproduce.QUICK_OPTIONS["dm"], "batch_real": 8})
    assert not reproduce._point_ready(Bench(tmp_path, True), "dm", 1, 2)
    for leftover in (tmp_path / "work-quick" / "checkpoints").iterdir():
        leftover.unlink()
    _condense_cell(tmp_path, True, "dm", 1)
    after = SyntheticSet.load(kept)
    assert after.meta["recipe"]["batch_real"] == 8 and before.meta["recipe"]["batch_real"] == 16
    assert reproduce._point_ready(Bench(tmp_path, True), "dm", 1, 2)


def test_tune_condense_scores_by_a_named_protocol(cli, tmp_path):
    """tune's --protocol picks the protocol that scores each trial's set (on the validation split) and the final
    runs (on the test split); --eval-* set its options, and a clash ends in one line before any trial."""
    common = ["tune", "condense", "--data", "digits", "--method", "dm", "--ipc", "1", "--iterations", "2",
              "--model", "convnet:width=4,depth=1", "--batch-real", "8", "--grid", "lr_img=0.1,1", "--final-seeds",
              "0", "--eval-runs", "1", "--final-runs", "1", "--eval-models", "mlp:hidden=8", "--quiet"]
    r = cli(*common, "--protocol", "vico-dc:epochs=2,strategy=crop_scale_rotate", "--out", tmp_path / "t")
    assert r.code == 0, r.err
    scores = [json.loads(p.read_text()) for p in sorted((tmp_path / "t").rglob("scores.json"))]
    assert len(scores) == 3 and all(s["protocol"]["name"] == "vico-dc" for s in scores)
    assert all(s["protocol"]["strategy"] == "crop_scale_rotate" and s["protocol"]["epochs"] == 2 for s in scores)
    assert sorted(s["scored_on"] for s in scores) == ["test", "validation", "validation"]
    assert_one_line_error(cli(*common, "--protocol", "vico-dsa", "--eval-dsa", "--out", tmp_path / "x"),
                          "--dsa does not apply to the vico-dsa protocol")
    assert_one_line_error(cli(*common, "--protocol", "vico-dc:runs=2", "--out", tmp_path / "y"),
                          "both set runs")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_dd_benchmarks_take_another_protocol_and_keep_its_cells_apart(tmp_path, cli):
    from distillab.bench import run_benchmark

    own = run_benchmark("dm-budget", quick=True, out=tmp_path, quiet=True)
    vico = run_benchmark("dm-budget", quick=True, out=tmp_path, quiet=True, protocol="vico-dsa")
    assert vico["protocol"].startswith("vico-dsa:") and "--protocol 'vico-dsa" in vico["command"]
    assert own["curve"][0]["accuracy"]["runs"] != vico["curve"][0]["accuracy"]["runs"]  # another training
    folders = sorted(p.name for p in (tmp_path / "work-quick" / "dm-budget").iterdir())
    assert folders[0] == "cells" and folders[1].startswith("cells-vico-dsa")
    again = run_benchmark("dm-budget", quick=True, out=tmp_path, quiet=True)  # its own cells kept, not rerun
    assert again["curve"] == own["curve"]
    assert_one_line_error(cli("bench", "reproduce-mnist", "--quick", "--protocol", "vico-dsa", "--out",
                              tmp_path / "r"), "has no evaluation protocol to replace")
    assert_one_line_error(cli("bench", "dm-budget", "--quick", "--protocol", "nope", "--out", tmp_path / "s"),
                          "unknown evaluation protocol")
    assert_one_line_error(cli("bench", "dm-budget", "--quick", "--protocol", "import:os:path", "--out",
                              tmp_path / "t"), "--trust-code")
