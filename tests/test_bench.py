"""The --quick form of every benchmark: same code path as the full runs, on digits, in seconds."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from distillab.bench import BENCHMARKS, run_benchmark
from distillab.errors import DistillabError


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


def _load(out, name):
    data = json.loads((out / f"{name}.json").read_text())
    assert data["quick"] and data["benchmark"] == name and data["machine"]["cpus"] >= 1
    assert (out / f"{name}.md").read_text().startswith(f"## {name}")
    return data


def test_hinton_mnist_quick(bench_out):
    run_benchmark("hinton-mnist", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "hinton-mnist")
    for key in ("teacher", "student_alone", "student_kd"):
        assert set(d[key]) >= {"test_errors", "test_accuracy"} and 0 < d[key]["test_accuracy"] <= 1
    assert d["paper_test_errors"] == {"teacher": 67, "student_alone": 146, "student_kd": 74}


def test_ls_teacher_quick(bench_out):
    run_benchmark("ls-teacher", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "ls-teacher")
    for name in ("dropout", "label_smoothing"):
        assert len(d[name]["student_test_accuracy"]["runs"]) == 2
    assert set(d["direction_reproduced"]) == {"ls_teacher_better_alone", "ls_student_worse"}


def test_kd_losses_quick(bench_out):
    run_benchmark("kd-losses", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "kd-losses")
    for name in ("ce", "kl_T1", "kl_T4", "kl_T20", "logit_mse", "blackbox_centred_logprob", "blackbox_top5_kl_T4"):
        assert set(d[name]) == {"mean", "std", "runs"}
    # the identity behind the black-box row: centred log-probabilities are logit matching
    assert abs(d["blackbox_centred_logprob"]["mean"] - d["logit_mse"]["mean"]) < 0.02


def test_takd_quick(bench_out):
    run_benchmark("takd", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "takd")
    assert {"alone_8", "direct_8", "via_ta_8", "alone_4", "direct_4", "via_ta_4"} <= set(d)


def test_rkd_quick(bench_out):
    run_benchmark("rkd", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "rkd")
    assert {"ce", "ce+rkd", "ce+kd", "ce+kd+rkd"} <= set(d)
    effect = d["rkd_effect"]["ce+rkd"]
    assert effect["difference"] == pytest.approx(d["ce+rkd"]["mean"] - d["ce"]["mean"])
    assert effect["seeds"] == [2, 2] and 0 <= effect["p"] <= 1


def test_power_of_a_difference_by_hand():
    from scipy import stats

    from distillab.bench.common import difference_and_power

    a, b = [0.90, 0.92, 0.91], [0.93, 0.95, 0.94]
    e = difference_and_power(a, b)
    assert e["difference"] == pytest.approx(0.03) and e["p"] == pytest.approx(stats.ttest_ind(b, a).pvalue)
    # equal spreads (0.01): the smallest detectable difference is (t_.975 + t_.8, 4 df) * 0.01 * sqrt(2/3)
    assert e["detectable_at_power_0.8"] == pytest.approx((2.7764 + 0.9410) * 0.01 * (2 / 3) ** 0.5, rel=1e-3)


def test_omni_mnist_quick(bench_out):
    run_benchmark("omni-mnist", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "omni-mnist")
    for row in ("labelled_only", "single", "multi"):
        assert len(d[row]["test_accuracy"]["runs"]) == 2 and 0 < d[row]["test_accuracy"]["mean"] <= 1
    for row in ("single", "multi"):
        assert 0 < d[row]["pseudo_label_accuracy"]["mean"] <= 1
    assert [d["per_seed"]["0"][row]["views"] for row in ("single", "multi")] == [1, 9]
    assert d["recipe"]["labelled_images"] == 100 and d["recipe"]["unlabeled_images"] == 1348 - 100
    assert isinstance(d["order_reproduced"], bool) and 0 <= d["seeds_in_order"] <= 2


def test_datafree_mnist_quick(bench_out):
    from distillab.bench.common import evaluate_file
    from distillab.bench.datafree import DATAFREE_ROWS

    run_benchmark("datafree-mnist", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "datafree-mnist")
    assert set(d["cells"]) == {f"{p}-{r}" for p, rows in DATAFREE_ROWS.items() for r in rows}
    assert all(0 < c["test_accuracy"] <= 1 for c in d["cells"].values())
    for pair, key in (("mlp", "hinton-1200"), ("lenet", "lenet5"), ("lenet-bn", "lenet5-bn")):
        teacher = evaluate_file(bench_out / "teachers" / "quick-" / key / "model.safetensors", "digits")
        assert d["cells"][f"{pair}-noise"]["teacher_test_accuracy"] == teacher["test_accuracy"]
    for records in ("top", "all", "spectral"):
        cell = d["cells"][f"mlp-lopes-{records}"]
        assert 0 < cell["metadata_bytes"] < cell["training_set_bytes_uint8"]
    assert d["above_noise"]["lenet-bn-deepinversion"] == (
        d["cells"]["lenet-bn-deepinversion"]["test_accuracy"] > d["cells"]["lenet-bn-noise"]["test_accuracy"])


def test_poison_mnist_quick(bench_out):
    run_benchmark("poison-mnist", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "poison-mnist")
    sets = d["sets"]
    assert set(sets) == {"noise-clean", "noise-poisoned", "real-clean", "real-poisoned"}
    for init in ("noise", "real"):  # the attack works and leaves the other classes learned
        clean, poisoned = sets[f"{init}-clean"], sets[f"{init}-poisoned"]
        assert clean["attack_success"] < 0.05 < 0.8 < poisoned["attack_success"], (clean, poisoned)
        assert poisoned["other_classes_accuracy"] > 0.85 and poisoned["source_recall"] < 0.1
        assert d["separates"][init]["confusion"]  # what the set teaches gives it away
        assert poisoned["audits"]["confusion"]["summary"].startswith("real 3 taught as 8")
        assert poisoned["flagged_by"] == [n for n, a in poisoned["audits"].items() if a["flagged"]]
    assert d["recipe"]["real-poisoned"]["bptt"]["attack"] == "source:3,target:8"
    assert d["recipe"]["real-clean"]["bptt"]["attack"] == ""


def test_privacy_mnist_quick(bench_out):
    run_benchmark("privacy-mnist", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "privacy-mnist")
    assert set(d["cells"]) == {"2", "5"}
    for ipc, cell in d["cells"].items():
        random_copies = cell["memorisation"]["random"]
        assert len(random_copies["copies"]) == random_copies["images"] == 10 * int(ipc)  # real images: all copies
        m = cell["membership"]
        assert m["counts"]["members"] == m["counts"]["nonmembers"] and m["counts"]["shadows"] == 2
        for producer in ("synset", "random_subset"):
            for attack in ("loss", "lira"):
                a = m[producer][attack]
                assert a["auc_ci"][0] <= a["auc"] <= a["auc_ci"][1] and set(a["tpr_at"]) == {"0.05", "0.1"}
    assert (bench_out / "work-quick" / "privacy-mnist" / "audit-dm-5" / "roc.png").exists()


def test_teacher_service_quick(bench_out):
    run_benchmark("teacher-service", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "teacher-service")
    s = d["students"]
    assert d["replay_identical"] and s["URL, cache replayed"]["teacher_queries"] == 0
    assert s["URL"]["teacher_queries"] == s["URL, cache replayed"]["cache_hits"] == 1214  # each input asked once
    assert abs(d["url_minus_local_accuracy"]) <= 0.01  # the same teacher's probabilities, through HTTP
    assert s["URL with augmentation"]["queries_per_epoch"] > 0 and "live" in s["URL with augmentation"]["teacher_mode"]
    assert [c["concurrency"] for c in d["load"]] == [1, 4, 16]
    assert all(c["requests_per_second"] > 0 and 0 < c["p50_ms"] <= c["p99_ms"] for c in d["load"])


def test_kd_losses_tuned_quick(bench_out):
    run_benchmark("kd-losses-tuned", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "kd-losses-tuned")
    for name in ("kl_T1", "kl_T4", "logit_mse"):
        cell = d[name]
        trials = cell["recipe_search"]["trials"]
        assert [t["params"]["lr"] for t in trials] == [0.01, 0.1]  # the whole grid, in order, on validation
        best = max(trials, key=lambda t: (t["val_accuracy"], -t["trial"]))
        assert cell["chosen"] == best["params"] and "test_accuracy" not in best
        assert len(cell["test_accuracy"]["runs"]) == 2
    assert set(d["direction"]) == {"logit_mse_ge_kl_T4", "kl_T4_gt_kl_T1"}


def test_takd_tuned_quick(bench_out):
    run_benchmark("takd-tuned", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "takd-tuned")
    assert set(d["students"]) == {f"{k}_{w}" for w in (8, 4) for k in ("alone", "direct", "via_ta")}
    for key, cell in [("ta", d["assistant"])] + [(k, v) for k, v in d["students"].items() if "alone" not in k]:
        trials = cell["recipe_search"]["trials"]
        assert len(trials) == 4 and all("test_accuracy" not in t for t in trials)  # T x alpha, on validation
        assert cell["chosen"] == max(trials, key=lambda t: (t["val_accuracy"], -t["trial"]))["params"]
    config = yaml.safe_load((bench_out / "work-quick" / "takd-tuned" / "via_ta-8" / "final-seed-0" / "config.yaml")
                            .read_text())
    assert config["teacher"].endswith("takd-tuned/ta/final-seed-0/model.safetensors")  # taught by the assistant


def test_kd_menu_quick(bench_out, monkeypatch):
    from distillab.bench import kd_menu
    from distillab.kd import LOSSES

    run_benchmark("kd-menu", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "kd-menu")
    rows, recipe = d["rows"], d["recipe"]
    # every built-in term of the registry is on the menu, alone with CE; the feature terms also beside KD
    builtin = {n for n in LOSSES.names() if LOSSES.get(n).__module__.startswith("distillab.kd.losses.")} - {"ce"}
    assert set(d["terms"]) == builtin and {"kd", "dkd", "dist", "lskd", "hint", "crd", "reviewkd"} <= builtin
    for name, term in d["terms"].items():
        assert term["combinations"]["alone"][0] == "ce" and term["combinations"]["alone"][1].split(":")[0] == name
        if term["feature_term"]:
            assert term["combinations"]["paper"] == ["ce", "kd:T=4", term["spec"]]
        else:
            assert set(term["combinations"]) == {"alone"}  # a logit term replaces KD: its paper row is the alone row
    assert d["terms"]["at"]["spec"] == "at:student=features.0,teacher=features.0"  # the class's example taps
    assert d["terms"]["hint"]["spec"] == "hint"  # no example: the defaults (penultimate on both sides)
    cells = {f"{t}-{c}" for t, term in d["terms"].items() for c in term["combinations"]} | {"ce-alone"}
    assert set(rows) | set(d["failed"]) == cells and len(cells) == 1 + len(builtin) + sum(
        t["feature_term"] for t in d["terms"].values())
    config = yaml.safe_load((bench_out / "work-quick" / "kd-menu" / "at-paper" / "final-seed-1" / "config.yaml")
                            .read_text())
    assert [(t["name"], t.get("student")) for t in config["losses"]] == [("ce", None), ("kd", None),
                                                                         ("at", "features.0")]
    assert config["data"].startswith("npz:") and config["teacher_mode"] == "cached"
    assert recipe["labelled_images"] == 200 and recipe["validation_images"] == 20 and recipe["test_images"] == 449
    # each row at the learning rate tune chose on validation (the whole grid, test sealed), then its final seeds
    for name, row in rows.items():
        trials = row["recipe_search"]["trials"]
        assert [t["params"]["lr"] for t in trials] == recipe["grid"]["lr"] and all("test_accuracy" not in t
                                                                                  for t in trials)
        done = [t for t in trials if t["status"] == "done"]
        assert row["chosen"] == max(done, key=lambda t: (t["val_accuracy"], -t["trial"]))["params"]
        assert len(row["test_accuracy"]["runs"]) == len(recipe["seeds"]) == 2
        assert len(row["epoch_seconds"]) == 2 * recipe["options"]["epochs"]  # every epoch of both final seeds
    # the ranking is every row, best mean first; costs are epoch times over CE alone's; headroom is teacher - alone
    means = [rows[k]["test_accuracy"]["mean"] for k in d["ranking"]]
    assert sorted(d["ranking"]) == sorted(rows) and means == sorted(means, reverse=True)
    ce = rows["ce-alone"]
    assert ce["epoch_time_over_ce"] == 1.0 and ce["gain_over_ce"] == 0
    for row in rows.values():
        assert row["epoch_time_over_ce"] == pytest.approx(row["median_epoch_seconds"] / ce["median_epoch_seconds"],
                                                          abs=1e-3)
    h = d["headroom"]
    assert h["student_alone_test_accuracy"] == ce["test_accuracy"]["mean"]
    assert h["teacher_minus_student_alone"] == pytest.approx(h["teacher_test_accuracy"] - ce["test_accuracy"]["mean"])
    assert h["teacher_test_accuracy"] == d["teacher"]["test_accuracy"] > 0.9

    # a second run keeps every cell: none runs again (an edited result comes back as written); a failed row is
    # reported apart, out of the ranking, and its file removed so that the next run tries it again
    folder = bench_out / "work-quick" / "kd-menu" / "cells"
    kept = json.loads((folder / "kd-alone.json").read_text())
    kept["result"]["test_accuracy"]["mean"] = 0.123
    (folder / "kd-alone.json").write_text(json.dumps(kept))
    failed = json.loads((folder / "dkd-alone.json").read_text())
    failed["result"] = {"losses": failed["result"]["losses"], "failed": "LinAlgError: made up", "wall_seconds": 1.0}
    (folder / "dkd-alone.json").write_text(json.dumps(failed))

    def no_cell_runs(*args, **kwargs):
        raise AssertionError(f"a kept cell ran again: {args[2:]}")

    monkeypatch.setattr(kd_menu, "_menu_cell", no_cell_runs)
    run_benchmark("kd-menu", quick=True, out=bench_out, quiet=True)
    again = _load(bench_out, "kd-menu")
    assert again["rows"]["kd-alone"]["test_accuracy"]["mean"] == 0.123
    assert again["failed"]["dkd-alone"]["failed"] == "LinAlgError: made up" and "dkd-alone" not in again["ranking"]
    assert not (folder / "dkd-alone.json").exists() and (folder / "kd-alone.json").exists()
    assert "LinAlgError: made up" in (bench_out / "kd-menu.md").read_text()


def test_kd_menu_full_form_terms_parse_and_their_taps_exist_on_its_nets():
    """The full form's rows, not run by the suite: every spec parses, and every tap names a module of both nets."""
    from distillab.bench import kd_menu
    from distillab.bench.common import teacher_recipe
    from distillab.kd import parse_loss
    from distillab.models import build_model

    r = kd_menu.menu_recipe(False)
    assert set(kd_menu.FULL_OVERRIDES) <= set(kd_menu.menu_terms())
    nets = {side: dict(build_model(spec, (1, 28, 28), 10).named_modules())
            for side, spec in (("student", r["student"]), ("teacher", teacher_recipe(r["teacher"], False)["model"]))}
    for name in kd_menu.menu_terms():
        for losses in kd_menu.combinations(name, False).values():
            for term in map(parse_loss, losses):
                for side, taps in (("student", term.student_taps()), ("teacher", term.teacher_taps())):
                    assert all(t == "penultimate" or t in nets[side] for t in taps), (name, side, taps)


def test_wang2018_budget_quick(bench_out):
    run_benchmark("wang2018-budget", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "wang2018-budget")
    for setting in ("fixed", "random"):
        assert [p["iterations"] for p in d["curves"][setting]] == [5, 10]  # one run per budget, shown in order
    assert {n: r["bptt"]["iterations"] for n, r in d["recipe"].items()} == {"fixed-10": 10, "fixed-5": 5,
                                                                            "random-10": 10, "random-5": 5}
    from distillab.bench.dd import _wang2018_recipe
    full = _wang2018_recipe(False, "random", 2000)  # the full form: the rate halved every fifth of each run
    assert (full["bptt"].lr_decay_every, full["bptt"].steps, full["ipc"], full["runs"]) == (400, 10, 10, 50)
    assert all(0 <= p["test_accuracy"] <= 1 for p in d["curves"]["fixed"])
    assert all(len(p["test_accuracy"]["runs"]) == 2 for p in d["curves"]["random"])  # fresh nets, as in wang2018
    cells = bench_out / "work-quick" / "wang2018-budget" / "cells"
    assert (cells / "fixed-5.safetensors").exists() and (cells / "random-10.safetensors").exists()


def test_hinton_mnist_tuned_quick(bench_out):
    run_benchmark("hinton-mnist-tuned", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "hinton-mnist-tuned")
    teacher, student = d["teacher"], d["student_kd"]
    for cell, n in ((teacher, 4), (student, 2)):
        trials = cell["recipe_search"]["trials"]
        assert len(trials) == n and all("test_accuracy" not in t for t in trials)  # the grid, on validation only
        assert cell["chosen"] == max(trials, key=lambda t: (t["val_accuracy"], -t["trial"]))["params"]
        assert len(cell["test_errors"]["runs"]) == 2
    ensemble = teacher["ensemble"]
    assert ensemble["members_test_errors"] == teacher["test_errors"]["runs"]  # the final seeds are the members
    work = bench_out / "work-quick" / "hinton-mnist-tuned"
    config = yaml.safe_load((work / "student" / "final-seed-1" / "config.yaml").read_text())
    assert [Path(t).parent.name for t in config["teacher"]] == ["final-seed-0", "final-seed-1"]
    assert config["losses"][0]["T"] == student["chosen"]["temperature"]
    kd = json.loads((work / "student" / "final-seed-0" / "metrics.json").read_text())
    assert kd["teacher_mode"].startswith("ensemble of 2") and "teacher_test_accuracy" not in kd
    assert [round((1 - a) * 449) for a in kd["teacher_members_test_accuracy"]] == ensemble["members_test_errors"]
    # the ensemble's figure, computed another way: the mean of the members' probabilities from `distillab predict`
    import numpy as np
    from distillab.api import predict
    probs = [np.load(predict(work / "teacher" / f"final-seed-{s}" / "model.safetensors", "digits", split="test",
                             out=bench_out / f"p{s}.npz", overwrite=True, quiet=True)["out"])["probs"] for s in (0, 1)]
    labels = np.load(bench_out / "p0.npz")["labels"]
    assert int(((probs[0] + probs[1]).argmax(1) != labels).sum()) == ensemble["test_errors"]


def test_dm_budget_quick(bench_out):
    from distillab.bench.dd import _dm_budget_path, _dm_budget_recipe, dd_splits
    from distillab.bench.common import Bench
    from distillab.condense import DM, SyntheticSet, condense

    run_benchmark("dm-budget", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "dm-budget")
    assert [p["iterations"] for p in d["curve"]] == [2, 4, 8]
    seconds = [p["condense_seconds"] for p in d["curve"]]
    assert seconds == sorted(seconds) and all(len(p["accuracy"]["runs"]) == 2 for p in d["curve"])
    # the images after 4 iterations of the long run are those a 4-iteration run ends with
    r = _dm_budget_recipe(True)
    short = condense(dd_splits(Bench(bench_out, True)).train_set(), DM(**{**r["config"], "iterations": 4}), r["ipc"])
    kept = SyntheticSet.load(_dm_budget_path(bench_out, True, 4))
    assert torch.equal(short.images, kept.images)
    assert not torch.equal(kept.images, SyntheticSet.load(_dm_budget_path(bench_out, True, 8)).images)


def test_kd_speed_quick(bench_out):
    run_benchmark("kd-speed", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "kd-speed")
    assert set(d["epoch_seconds"]) == {"alone", "cached", "live"} and d["cached_over_alone"] > 0
    assert d["images_per_second"]["alone"] > 0


def test_noisy_teacher_quick(bench_out):
    run_benchmark("noisy-teacher", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "noisy-teacher")
    rows = ["alone", "T1", "T4", "T20", "T1-noise0.05", "T1-noise0.1", "T1-noise0.2"]
    for name in rows:
        assert len(d[name]["test_errors"]["runs"]) == 2 and set(d[name]["test_accuracy"]) == {"mean", "std", "runs"}
    assert d["recipe"]["configs"]["T1-noise0.1"] == ["kd:T=1,noise=0.1"] and d["teacher"]["test_errors"] >= 0
    assert d["best_temperature"] in ("T1", "T4", "T20") and d["best_noise"].startswith("T1-noise")
    work = bench_out / "work-quick" / "noisy-teacher"
    assert len(list((work / "cells").glob("*.json"))) == len(rows) * 2
    config = yaml.safe_load((work / "T1-noise0.2-1" / "config.yaml").read_text())  # the noise reaches the run
    assert config["losses"] == [{"name": "kd", "w": 1.0, "T": 1.0, "noise": 0.2}] and config["seed"] == 1


def test_dd_mnist_quick(bench_out):
    from distillab.condense import SyntheticSet

    run_benchmark("dd-mnist", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "dd-mnist")
    cells = d["cells"]
    for method in ("random", "herding", "kmeans", "mean", "dm", "bptt", "gm", "dsa", "mtt"):  # every built-in method
        for ipc in ("1", "2"):
            c = cells[f"{method}-{ipc}"]
            assert len(c["runs"]) == 2 and c["bytes"] > 0 and c["evaluate_seconds"] >= 0 and c["labels"] == "hard"
    assert {"random-3", "dm-3", "dsa-3"} <= set(cells)  # the big IPC for the three the issue names
    assert {"random-1-dc", "random-2-dc", "herding-1-dc", "herding-2-dc"} <= set(cells)
    best = d["learned_labels"]["best_other_method"]
    assert best not in (None, "dm", "random")
    assert {"dm-2-learn", "random-2-learn", f"{best}-2-learn", "dm-2-teacher", "random-2-teacher"} <= set(cells)
    assert cells["random-2-teacher"]["runs"] != cells["random-2-learn"]["runs"] != cells["random-2"]["runs"]
    assert d["experts"]["experts"] == 1 and cells["mtt-2"]["real_images_read"] > 0
    # the targets are for condensation methods: a coreset or the random control never counts as the best cell
    assert all(cells[v["cell"]]["method"] not in ("random", "herding", "kmeans", "mean")
               for v in d["best_per_ipc"].values())
    folder = bench_out / "work-quick" / "dd-mnist" / "cells"
    assert (folder / "dm-2.safetensors").exists()

    # a learned-label cell relabels the hard-label cell's set: same images, soft labels, more bytes
    hard, soft = SyntheticSet.load(folder / "dm-2.safetensors"), SyntheticSet.load(folder / "dm-2-learn.safetensors")
    assert torch.equal(hard.images, soft.images) and soft.label_logits is not None
    assert cells["dm-2-learn"]["bytes"] > cells["dm-2"]["bytes"]
    # the dc cells train under the reference's augmentation, not DSA: another protocol, other figures
    dc = json.loads((folder / "random-1-hard-dc.json").read_text())["recipe"]["protocol"]
    assert dc["augment"] == "dc" and dc["dsa"] is False and cells["random-1-dc"]["runs"] != cells["random-1"]["runs"]

    # a rerun resumes from the kept cells: an edited cell result comes back as it was written, not recomputed
    kept = json.loads((folder / "random-1-hard-dsa.json").read_text())
    kept["result"]["mean"] = 0.123
    (folder / "random-1-hard-dsa.json").write_text(json.dumps(kept))
    run_benchmark("dd-mnist", quick=True, out=bench_out, quiet=True)
    assert _load(bench_out, "dd-mnist")["cells"]["random-1"]["mean"] == 0.123

    # a cell's recipe holds the protocol and its own method's settings only
    assert kept["recipe"]["config"] == {} and kept["recipe"]["protocol"]["epochs"] == 20
    assert json.loads((folder / "dm-1-hard-dsa.json").read_text())["recipe"]["config"]["iterations"] == 10

    # a cell kept under another recipe is recomputed
    kept["recipe"]["protocol"]["epochs"] = 999
    (folder / "random-1-hard-dsa.json").write_text(json.dumps(kept))
    run_benchmark("dd-mnist", quick=True, out=bench_out, quiet=True)
    again = _load(bench_out, "dd-mnist")["cells"]["random-1"]
    assert again["mean"] == cells["random-1"]["mean"] and again["runs"] == cells["random-1"]["runs"]

    # mtt's cells run after its experts, yet compete for the best other method like every other method's
    kept_mtt = json.loads((folder / "mtt-2-hard-dsa.json").read_text())
    kept_mtt["result"]["mean"] = 0.999
    (folder / "mtt-2-hard-dsa.json").write_text(json.dumps(kept_mtt))
    run_benchmark("dd-mnist", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "dd-mnist")
    assert d["learned_labels"]["best_other_method"] == "mtt" and "mtt-2-learn" in d["cells"]
    # ... each IPC with its own best other method
    at_1 = {c["method"]: c["mean"] for c in d["cells"].values() if c["ipc"] == 1 and c["labels"] == "hard"
            and c["augment"] == "dsa" and c["method"] not in ("dm", "random", "herding", "kmeans", "mean")}
    best_1 = max(at_1, key=at_1.get)
    assert d["learned_labels"]["best_other_method_by_ipc"] == {"1": best_1, "2": "mtt"}
    assert f"{best_1}-1-learn" in d["cells"] and (best_1 == "mtt") == ("mtt-1-learn" in d["cells"])


def test_bench_cells_runs_only_the_named_cells(tmp_path):
    run_benchmark("dd-mnist", quick=True, out=tmp_path, quiet=True, cells=("random-1-hard-*",))
    d = _load(tmp_path, "dd-mnist")
    assert set(d["cells"]) == {"random-1", "random-1-dc"} and "--cells 'random-1-hard-*'" in d["command"]
    run_benchmark("dd-mnist", quick=True, out=tmp_path, quiet=True, cells=("herding-1-hard-dsa",))
    assert set(_load(tmp_path, "dd-mnist")["cells"]) == {"random-1", "random-1-dc", "herding-1"}  # kept + new
    with pytest.raises(DistillabError, match="does not take --cells"):
        run_benchmark("wang2018", quick=True, out=tmp_path, quiet=True, cells=("fixed",))


def _cell_square(out, quick, x, tag):
    import torch
    return {"value": x * x, "tag": tag, "threads": torch.get_num_threads()}


def test_bench_cells_in_worker_processes(tmp_path):
    from distillab.bench import Bench

    b = Bench(tmp_path, quick=True, workers=2)
    cells = [(3, "a"), (4, "b"), (5, "c")]
    got = b.cells("squares", _cell_square, cells, recipe_of=lambda cell: {"k": 1})
    assert [got[c]["value"] for c in cells] == [9, 16, 25] and got[(4, "b")]["tag"] == "b"
    assert sorted(p.name for p in (tmp_path / "work-quick" / "squares" / "cells").iterdir()) == [
        "3-a.json", "4-b.json", "5-c.json"]
    assert Bench(tmp_path, quick=True).cells("squares", None, cells, recipe_of=lambda cell: {"k": 1}) == got  # all kept
    again = Bench(tmp_path, quick=True).cells("squares", _cell_square, cells,
                                              recipe_of=lambda cell: {"k": 2 if cell[1] == "b" else 1})
    assert [again[c]["value"] for c in cells] == [9, 16, 25] and json.loads((tmp_path / "work-quick" / "squares" / "cells" / "4-b.json").read_text())[
        "recipe"] == {"k": 2}  # only the cell whose recipe changed ran again


def test_bench_workers_must_be_positive(cli):
    from conftest import assert_one_line_error
    assert_one_line_error(cli("bench", "dm-speed", "--quick", "--workers", "0"), "--workers")


def test_wang2018_quick(bench_out):
    run_benchmark("wang2018", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "wang2018")
    assert 0 <= d["fixed_init"]["test_accuracy"] <= 1 and set(d["random_init"]) >= {"mean", "std", "runs"}
    assert (bench_out / "work-quick" / "wang2018" / "cells" / "fixed.safetensors").exists()


def test_wang2018_full_recipes_are_the_papers_settings():
    from distillab.bench.dd import _wang2018_recipe
    fixed, rand = _wang2018_recipe(False, "fixed"), _wang2018_recipe(False, "random")
    # fixed: 10 images (1 per class) in one step, repeated for 3 epochs; random: 100 images, 10 steps of 10, x3
    assert (fixed["ipc"], fixed["bptt"].steps, fixed["bptt"].epochs, fixed["bptt"].init_net) == (1, 1, 3, "fixed")
    assert (rand["ipc"], rand["bptt"].steps, rand["bptt"].epochs, rand["bptt"].init_net) == (10, 10, 3, "random")
    assert all(r["bptt"].model == "lenet5:init=xavier" and r["bptt"].batch_real == 1024 for r in (fixed, rand))
    # the reference halves its rate every 40 passes (2,150 iterations); a shorter run halves it every fifth of itself
    assert [_wang2018_recipe(False, "fixed", n)["bptt"].lr_decay_every for n in (500, 5000, 21500)] == [100, 1000, 2150]


def test_searched_dd_recipes_are_the_validated_ones():
    """Each searched image rate (wang2018's settings, dd-mnist's DM at IPC 10) is the best trial *by validation* of
    its recorded search, and the benchmark runs with it: a rate picked by its test figure, or a search record that
    does not back the recipe, fails here."""
    from distillab.bench.dd import DD_MNIST_RECIPE_SEARCH, WANG2018_RECIPE_SEARCH, _wang2018_recipe, dd_mnist_method
    used = {("wang2018", s): _wang2018_recipe(False, s)["bptt"].lr_img for s in WANG2018_RECIPE_SEARCH}
    used[("dd-mnist", "dm")] = dd_mnist_method(False, "dm", DD_MNIST_RECIPE_SEARCH["dm"]["ipc"]).lr_img
    searches = {("wang2018", s): v for s, v in WANG2018_RECIPE_SEARCH.items()}
    searches[("dd-mnist", "dm")] = DD_MNIST_RECIPE_SEARCH["dm"]
    for key, search in searches.items():
        best = max(search["trials"], key=lambda t: t["val_accuracy"])
        assert search["chosen"] == {"lr_img": best["lr_img"]} and used[key] == best["lr_img"], key
        assert all(set(t) == {"lr_img", "val_accuracy"} for t in search["trials"])  # validation scores only


def test_eval_speed_quick(bench_out):
    run_benchmark("eval-speed", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "eval-speed")
    assert d["speedup"] > 0 and d["vectorised_seconds"] > 0 and d["sequential_seconds"] > 0
    assert abs(d["vectorised_accuracy"]["mean"] - d["sequential_accuracy"]["mean"]) < 0.1


def test_dm_speed_quick(bench_out):
    run_benchmark("dm-speed", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "dm-speed")
    assert d["iterations_per_second"] > 0 and d["peak_rss_mb"] > 0


def test_cross_arch_quick(bench_out):
    import statistics

    from distillab.bench.dd import _dd_mnist_cell

    if not (bench_out / "work-quick" / "dd-mnist" / "cells" / "dm-2.safetensors").exists():  # run alone
        (bench_out / "work-quick" / "dd-mnist" / "cells").mkdir(parents=True, exist_ok=True)
        _dd_mnist_cell(bench_out, True, "dm", 2)
    run_benchmark("cross-arch", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "cross-arch")
    methods, archs = d["methods"], list(d["architectures"])
    assert {"dm", "dsa"} <= set(methods) and set(methods) | set(d["methods_not_registered"]) == {"dm", "dsa", "mtt"}
    assert d["sets"]["dm"]["from"] == "dd-mnist"  # the set dd-mnist made with the same recipe is not made again
    from distillab.bench.common import Bench
    from distillab.bench.crossarch import _matches, _set_recipe
    from distillab.bench.dd import dd_splits
    from distillab.data import dataset_hash
    kept, recipe = bench_out / d["sets"]["dm"]["file"], _set_recipe(True, "dm", d["ipc"])
    source = dataset_hash(dd_splits(Bench(bench_out, True)).train_set())
    assert _matches(kept, recipe, "digits", source)  # ... but one made otherwise, or from other data, would be
    assert not _matches(kept, {**recipe, "iterations": recipe["iterations"] + 1}, "digits", source)
    assert not _matches(kept, recipe, "digits", "0" * 16) and not _matches(kept, recipe, "mnist", source)
    m = d["matrix"]
    assert m["rows"] == [f"{method} IPC {d['ipc']}" for method in methods] and m["columns"] == list(
        d["architectures"].values()) and len(archs) == 5
    assert [len(row) for row in m["mean"]] == [len(archs)] * len(methods) == [len(row) for row in m["std"]]
    for i, method in enumerate(methods):
        for j, arch in enumerate(archs):
            cell = d["cells"][method][arch]
            assert len(cell["runs"]) == d["protocol"]["runs"] == 2
            assert m["mean"][i][j] == cell["mean"] == pytest.approx(statistics.mean(cell["runs"]))
            assert m["std"][i][j] == cell["std"] == pytest.approx(statistics.stdev(cell["runs"]))
            assert cell["content_sha256"] == d["sets"][method]["content_sha256"]  # evaluated on its own set
    png = (bench_out / d["heatmap"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert (bench_out / "cross-arch.md").read_text().count("\n| ") == len(methods) + 1  # header + one per set


def test_a_dd_cell_stopped_while_condensing_resumes_from_its_checkpoint_to_the_same_set(tmp_path, stop_after):
    """A cell longer than a session (gm or dsa at IPC 10 condense for hours) keeps its progress: stopped part-way,
    the next run resumes from the checkpoint and ends with the set an unstopped run makes; the checkpoint goes."""
    from distillab import checkpoint
    from distillab.bench.dd import _dd_mnist_cell, _hard_set_path
    from distillab.condense import SyntheticSet

    for out in ("reference", "stopped"):
        _hard_set_path(tmp_path / out, True, "dm", 1).parent.mkdir(parents=True)
    reference = _dd_mnist_cell(tmp_path / "reference", True, "dm", 1)
    stop_after(6)
    with pytest.raises(checkpoint.Interrupted):
        _dd_mnist_cell(tmp_path / "stopped", True, "dm", 1)
    kept = list((tmp_path / "stopped" / "work-quick" / "checkpoints").iterdir())
    assert len(kept) == 1 and checkpoint.Checkpoints(kept[0]).load()["iteration"] == 6
    assert not _hard_set_path(tmp_path / "stopped", True, "dm", 1).exists()
    stop_after(0)
    resumed = _dd_mnist_cell(tmp_path / "stopped", True, "dm", 1)
    made = [SyntheticSet.load(_hard_set_path(tmp_path / out, True, "dm", 1)) for out in ("reference", "stopped")]
    assert torch.equal(made[0].images, made[1].images) and resumed["runs"] == reference["runs"]
    assert not kept[0].exists()

    # a damaged checkpoint in its place is refused, naming the file to delete; no set is written
    kept[0].write_bytes(b"\xff" * 64)
    made_set = _hard_set_path(tmp_path / "stopped", True, "dm", 1)
    made_set.unlink()
    with pytest.raises(DistillabError, match=f"{kept[0].name}.*delete it to condense dm at IPC 1"):
        _dd_mnist_cell(tmp_path / "stopped", True, "dm", 1)
    assert not made_set.exists()


def test_cross_arch_rows_spread_over_runs_condense_only_the_sets_they_need(tmp_path):
    """`bench cross-arch --cells 'dm-*'` condenses dm's set and evaluates its row; the dsa and mtt sets (an hour
    each at full size) wait for the run that selects their cells, and the partial matrix shows finished rows only."""
    run_benchmark("cross-arch", quick=True, out=tmp_path, quiet=True, cells=("dm-mlp",))
    d = _load(tmp_path, "cross-arch")
    assert set(d["sets"]) == {"dm"} and d["sets"]["dm"]["from"] == "condensed"
    assert [p.name for p in (tmp_path / "work-quick" / "cross-arch" / "sets").iterdir()] == ["dm-2.safetensors"]
    assert set(d["cells"]) == {"dm"} and set(d["cells"]["dm"]) == {"mlp"}
    assert d["matrix"]["rows"] == [] and d["heatmap"] is None and len(d["cells_not_run"]) == 3 * 5 - 1
    first = d["cells"]["dm"]["mlp"]
    run_benchmark("cross-arch", quick=True, out=tmp_path, quiet=True, cells=("dm-*",))
    d = _load(tmp_path, "cross-arch")
    assert d["matrix"]["rows"] == ["dm IPC 2"] and len(d["matrix"]["mean"][0]) == 5 and d["heatmap"]
    assert d["cells"]["dm"]["mlp"] == first  # kept from the first run, not run again
    assert set(d["sets"]) == {"dm"} and len(d["cells_not_run"]) == 2 * 5


def test_mtt_memory_quick(bench_out):
    """Trajectory matching's memory against its unrolled steps: the full unroll (every step's graph kept) grows
    visibly with syn_steps, the checkpointed one (the default) stays flat beside it; time grows with the steps."""
    run_benchmark("mtt-memory", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "mtt-memory")
    assert d["steps"] == [10, 20, 40] and d["settings"]["method"]["unroll"] == "checkpointed"
    for unroll in ("checkpointed", "full"):
        for steps in ("10", "20", "40"):
            r = d[unroll][steps]
            assert r["seconds_per_iteration"] > 0 and r["peak_rss_mb"] > 0 and r["peak_above_start_mb"] is not None
        assert d[unroll]["40"]["seconds_per_iteration"] > 1.5 * d[unroll]["10"]["seconds_per_iteration"]
    grown = {u: d[u]["40"]["peak_above_start_mb"] - d[u]["10"]["peak_above_start_mb"] for u in ("checkpointed", "full")}
    assert grown["full"] > 3  # the measurement sees a step's graph at all ...
    assert grown["checkpointed"] < 0.25 * grown["full"]  # ... and the checkpointed unroll does not keep them


def test_unknown_benchmark(cli):
    from conftest import assert_one_line_error
    assert_one_line_error(cli("bench", "imagenet-sota"), "unknown benchmark")
    assert set(BENCHMARKS) == {"hinton-mnist", "ls-teacher", "kd-losses", "takd", "rkd", "kd-speed", "dd-mnist",
                               "wang2018", "eval-speed", "dm-speed", "perf", "cross-arch", "mtt-memory",
                               "noisy-teacher", "omni-mnist", "datafree-mnist", "poison-mnist", "privacy-mnist",
                               "teacher-service", "kd-losses-tuned", "takd-tuned", "wang2018-budget",
                               "hinton-mnist-tuned", "dm-budget", "reproduce-mnist", "kd-menu"}


def test_bench_cell_finished_by_another_process_meanwhile_is_not_rerun(tmp_path):
    from distillab.bench import Bench

    folder = tmp_path / "work-quick" / "shared" / "cells"

    def fn(out, quick, x):
        if x == 2:
            raise AssertionError("cell 2 was finished by the other process and must not run again")
        # while cell 1 runs, a second run on the same OUT finishes cell 2
        (folder / "2.json").write_text(json.dumps({"recipe": {"k": 1}, "result": {"value": -2}}))
        return {"value": x}

    got = Bench(tmp_path, quick=True).cells("shared", fn, [(1,), (2,)], recipe_of=lambda cell: {"k": 1})
    assert got == {(1,): {"value": 1}, (2,): {"value": -2}}


def test_perf_quick(bench_out):
    run_benchmark("perf", quick=True, out=bench_out, quiet=True)
    d = _load(bench_out, "perf")
    assert d["peak_gflops"] > 0 and 0 < d["eval_epoch"]["share_of_peak"] < 1.5  # counted work over measured time
    assert d["eval_epoch"]["reference_style_seconds"] > 0 and d["eval_epoch"]["speedup_over_reference_style"] > 0
    assert set(d["dm"]) == {"ipc10_real64", "ipc1_real64", "ipc10_real32"}
    assert d["dm"]["ipc10_real64"]["gflop"] > d["dm"]["ipc10_real32"]["gflop"]  # more real images, more work
    assert d["kd"]["cached_kd_over_alone"] > 0
    same = d["same_process"]  # the reference's loops beside distillab's, one process, one allocator setting
    assert set(same) == {"eval_epoch", "dm_iteration", "gm_iteration"} and all(r["reference_seconds"] > 0 for r in same.values())
    assert all(r["eager_speedup"] == pytest.approx(r["reference_seconds"] / r["eager_seconds"], rel=0.01)
               for r in same.values())
    budget = d["paper_budget"]  # seconds per iteration x the reference recipe's iterations
    assert set(budget) == {"gm IPC 10", "dsa IPC 10", "dm IPC 10"}
    assert [budget[k]["paper_iterations"] for k in ("gm IPC 10", "dsa IPC 10", "dm IPC 10")] == [1000, 1000, 20000]
    gm = budget["gm IPC 10"]
    assert (gm["outer"], gm["inner"]) == (10, 50)
    assert gm["seconds_per_iteration"] == pytest.approx(10 * gm["matching_step_seconds"] + 9 * gm["inner_loop_seconds"],
                                                        abs=0.02)
    assert all(r["hours_to_paper_budget"] == pytest.approx(r["seconds_per_iteration"] * r["paper_iterations"] / 3600,
                                                           abs=0.01) for r in budget.values())


def test_a_cell_killed_mid_run_runs_again_in_a_fresh_folder(tmp_path):
    """A killed cell leaves its run's .NAME.partial folder; the next attempt must not trip over it."""
    from distillab import train
    from distillab.bench import Bench

    b = Bench(tmp_path, quick=True)
    folder = b.run_dir("bench", "cell")
    (folder.parent / f".{folder.name}.partial").mkdir(parents=True)  # what a killed run leaves behind
    (folder.parent / f".{folder.name}.partial" / "call.json").write_text("{}")
    folder = b.run_dir("bench", "cell")
    train(data="digits", model="mlp:hidden=8", epochs=1, out=folder, quiet=True)
    assert (folder / "model.safetensors").exists()
