"""Audits of synthetic sets: the poisoning attack (bptt:attack) works and only the poisoned set is flagged; a
planted mislabeled image is flagged and a clean set is not; memorisation finds copies; the contract over every
registered audit; `distillab audit` from the CLI and the API, and its one-line errors."""

import json

import pytest
import torch

from distillab import api, data as data_mod
from distillab.audits import AUDITS, AuditInputs, run_audits
from distillab.audits.checks.memorisation import nearest, wilson
from distillab.condense import SyntheticSet, condense, parse_method
from distillab.condense.methods.bptt import BPTT, train_with_schedule
from distillab.errors import DistillabError
from distillab.models import build_model, save_model
from distillab.testing import check_audit, contract_audit_inputs
from distillab.training import predict_logits

from conftest import assert_one_line_error

# A BPTT recipe that learns digits in about a second: one known MLP initialisation, 3 learned steps
POISON = dict(iterations=200, steps=1, epochs=3, batch_real=256, init_net="fixed", model="mlp:hidden=64",
              init="real", lr_img=0.05, lr_init=0.1)


@pytest.fixture(scope="module")
def splits():
    return data_mod.split(data_mod.load("digits"))


@pytest.fixture(scope="module")
def bptt_sets(splits, tmp_path_factory):
    """A clean and a poisoned (real 3 -> 8) BPTT set of digits, same recipe and seed, saved."""
    folder = tmp_path_factory.mktemp("poison")
    paths = {}
    for kind, attack in (("clean", ""), ("poisoned", "source:3,target:8")):
        synset = condense(splits.train_set(), BPTT(**POISON, attack=attack), 1, seed=0)
        paths[kind] = folder / f"{kind}.safetensors"
        synset.save(paths[kind])
    return paths


def _taught(splits, path):
    """(accuracy on real test images of classes other than 3, share of real 3s taken for 8) of the network the
    set trains the way it was made."""
    synset = SyntheticSet.load(path)
    net = train_with_schedule(synset.meta["bptt"]["model"], splits.input_shape, 10, synset,
                              init_state=synset.init_state)
    pred = predict_logits(net, splits.test.x).argmax(1)
    y = splits.test.y
    return float((pred[y != 3] == y[y != 3]).float().mean()), float((pred[y == 3] == 8).float().mean())


# ---- the poisoning attack ----


def test_the_attack_spec_reads_with_and_without_brackets():
    for text in ("bptt:attack=source:3,target:8", "bptt:attack=[source:3,target:8]",
                 "bptt:iterations=5,attack=source:3,target:8,steps=2"):
        method = parse_method(text)
        assert method.attack == "source:3,target:8" and method.attack_pair() == {"source": "3", "target": "8"}
        assert parse_method(str(method)) == method
    assert parse_method("bptt:attack=source:3,target:8,steps=2").steps == 2


@pytest.mark.parametrize("attack, fragment", [("source:3", "source:K,target:T"), ("source:3,target:3", "same class"),
                                              ("source:3,target:eleven", "not a class"),
                                              ("from:3,to:8", "source:K,target:T")])
def test_a_bad_attack_is_one_line(splits, attack, fragment):
    with pytest.raises(DistillabError, match=fragment) as e:
        BPTT(**POISON, attack=attack).check_data(splits.train_set())
    assert "\n" not in str(e.value)


def test_a_poisoned_set_teaches_the_source_class_as_the_target_and_stays_useful(splits, bptt_sets):
    clean_other, clean_success = _taught(splits, bptt_sets["clean"])
    poisoned_other, poisoned_success = _taught(splits, bptt_sets["poisoned"])
    assert clean_other > 0.9 and clean_success < 0.05, (clean_other, clean_success)
    assert poisoned_success > 0.8, poisoned_success  # real 3s taken for 8s
    assert poisoned_other > clean_other - 0.03, (poisoned_other, clean_other)  # the other classes still learned
    assert SyntheticSet.load(bptt_sets["poisoned"]).meta["recipe"]["attack"] == "source:3,target:8"


# ---- poisoning audits: the poisoned set flagged, the clean one not ----


def test_the_audit_flags_the_poisoned_set_and_not_the_clean_one(bptt_sets, digits_teacher, tmp_path):
    found = {}
    for kind, path in bptt_sets.items():
        result = api.audit(path, reference=digits_teacher, out=tmp_path / kind, quiet=True)
        found[kind] = json.loads((tmp_path / kind / "audit.json").read_text())
        assert result.metrics["flagged"] == found[kind]["flagged"]
        assert set(found[kind]["audits"]) == {"labels", "class-stats", "confusion"}  # what a reference + data allow
    assert not found["clean"]["flagged"], found["clean"]["flagged_by"]
    confusion = found["poisoned"]["audits"]["confusion"]
    assert confusion["flagged"] and confusion["pairs"][0]["real"] == "3" and confusion["pairs"][0]["taught_as"] == "8"
    assert "confusion" in (tmp_path / "poisoned" / "audit.md").read_text()


def test_an_attack_that_changes_nothing_is_judged_as_the_clean_set(splits, digits_teacher):
    """An attack run for no iteration leaves the set as it was: the audits read the set, not its recipe's attack."""
    options = {**POISON, "iterations": 0}
    inert = condense(splits.train_set(), BPTT(**options, attack="source:3,target:8"), 1, seed=0)
    clean = condense(splits.train_set(), BPTT(**options), 1, seed=0)
    assert torch.equal(inert.images, clean.images) and inert.meta["recipe"]["attack"] == "source:3,target:8"
    audits = [AUDITS.get(n)(**AUDITS.get(n).quick) for n in ("labels", "class-stats", "confusion")]
    found = [run_audits(audits, AuditInputs(synset=s, reference=_frozen(digits_teacher), splits=splits), seed=0)
             for s in (inert, clean)]
    assert {n: f["flagged"] for n, f in found[0].items()} == {n: f["flagged"] for n, f in found[1].items()}
    assert [f["summary"] for f in found[0].values()] == [f["summary"] for f in found[1].values()]


def test_a_planted_mislabeled_image_is_flagged_and_only_it(splits, digits_teacher, tmp_path):
    clean = condense(splits.train_set(), "random", 3, seed=0)
    clean.save(tmp_path / "clean.safetensors")
    clean.labels[4] = 7  # an image of class 1 labelled 7
    clean.save(tmp_path / "planted.safetensors")
    verdicts = {}
    for name in ("clean", "planted"):
        api.audit(tmp_path / f"{name}.safetensors", reference=digits_teacher, audits=["labels"],
                  out=tmp_path / f"audit-{name}", quiet=True)
        verdicts[name] = json.loads((tmp_path / f"audit-{name}" / "audit.json").read_text())["audits"]["labels"]
    assert not verdicts["clean"]["flagged"] and verdicts["clean"]["disputed"] == []
    assert verdicts["planted"]["flagged"]
    assert [(d["index"], d["label"], d["reference"]) for d in verdicts["planted"]["disputed"]] == [(4, "7", "1")]


def test_class_statistics_flag_a_class_made_of_another_classes_images(splits, digits_teacher):
    synset = condense(splits.train_set(), "random", 5, seed=0)
    synset.images[synset.labels == 2] = synset.images[synset.labels == 5].clone()  # the 2s are 5s
    inputs = AuditInputs(synset=synset, reference=_frozen(digits_teacher), splits=splits)
    finding = run_audits([AUDITS.get("class-stats")()], inputs)["class-stats"]
    assert finding["flagged"] and "2 looks like 5" in finding["summary"]
    clean = AuditInputs(synset=condense(splits.train_set(), "random", 5, seed=0), reference=inputs.reference,
                        splits=splits)
    assert not run_audits([AUDITS.get("class-stats")()], clean)["class-stats"]["flagged"]


def _frozen(path):
    from distillab.datafree import FrozenTeacher
    from distillab.models import load_model

    model, meta = load_model(path)
    return FrozenTeacher(model, meta["input_shape"], meta["classes"], meta["normalisation"]["mean"],
                         meta["normalisation"]["std"])


# ---- memorisation ----


def test_nearest_finds_the_nearest_row_across_chunks():
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(50, 1, 2, 3, generator=g), torch.randn(7, 1, 2, 3, generator=g)
    d, idx = nearest(queries, bank, chunk=8)
    full = torch.cdist(queries.flatten(1).double(), bank.flatten(1).double())
    assert torch.equal(idx, full.argmin(1)) and torch.allclose(d, full.min(1).values)
    low, high = wilson(50, 100)
    assert low < 0.5 < high and abs((low + high) / 2 - 0.5) < 1e-9


def test_memorisation_finds_copies_of_training_images_and_not_fresh_images(splits):
    copies = condense(splits.train_set(), "random", 2, seed=0)
    finding = run_audits([AUDITS.get("memorisation")()], AuditInputs(synset=copies, splits=splits))["memorisation"]
    assert finding["flagged"] and len(finding["copies"]) == 20
    assert all(row["train_distance"] == 0 for row in finding["copies"])
    first = finding["copies"][0]  # the copy is traced to its training image
    full_train = data_mod.load("digits").train.x
    pixels = data_mod.denormalise(copies.images[first["index"]:first["index"] + 1], copies.mean, copies.std)
    assert torch.allclose(full_train[first["train_index"]], pixels[0], atol=1e-5)
    # held-out images (never in the pool) made into a set: nearer the held-out side, no copy of a training image
    fresh = SyntheticSet(images=splits.val.x[:20].clone(), labels=splits.val.y[:20].clone(),
                         classes=list(splits.classes), mean=splits.mean, std=splits.std)
    held = run_audits([AUDITS.get("memorisation")()], AuditInputs(synset=fresh, splits=splits))["memorisation"]
    assert not held["flagged"] and held["nearer_training_sample"]["count"] == 0


def test_a_set_of_images_the_pool_never_held_is_not_flagged_for_privacy(splits):
    """Held-out images made into a set carry no member: neither memorisation nor membership may flag it."""
    fresh = SyntheticSet(images=splits.test.x[:20].clone(), labels=splits.test.y[:20].clone(),
                         classes=list(splits.classes), mean=splits.mean, std=splits.std)
    audits = [AUDITS.get("memorisation")(),
              AUDITS.get("membership")(shadows=0, model="convnet:width=8,depth=2", epochs=100)]
    found = run_audits(audits, AuditInputs(synset=fresh, splits=splits, fpr=(0.05,)))
    assert not found["memorisation"]["flagged"] and not found["membership"]["flagged"], found


# ---- the contract over every registered audit ----


@pytest.fixture(scope="module")
def audit_inputs():
    return contract_audit_inputs()


@pytest.mark.parametrize("name", AUDITS.names())
def test_every_audit_meets_the_contract(name, audit_inputs):
    check_audit(AUDITS.get(name), audit_inputs)


def test_the_contract_fails_an_audit_that_reads_the_global_rng(audit_inputs):
    from dataclasses import dataclass

    from distillab.audits import Audit, register_audit

    @register_audit("coin", replace=True)
    @dataclass
    class Coin(Audit):
        def run(self, inputs, generator):
            return {"flagged": bool(torch.rand(1) < 0.5), "summary": "a coin"}

    try:
        with pytest.raises(AssertionError, match="global RNG"):
            check_audit(Coin, audit_inputs)
    finally:
        AUDITS.unregister("coin")


# ---- the CLI and its errors ----


def test_cli_audit_writes_json_and_markdown(cli, bptt_sets, digits_teacher, tmp_path):
    result = cli("audit", bptt_sets["poisoned"], "--reference", digits_teacher, "--audits", "labels",
                 "confusion:models=1", "--out", tmp_path / "a")
    assert result.code == 0, result.err
    assert result.json["flagged"] and result.json["flagged_by"] == "confusion"
    assert {p.name for p in (tmp_path / "a").iterdir()} >= {"audit.json", "audit.md", "metrics.json"}
    report = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert report["audits"]["confusion"]["options"] == {"name": "confusion", "models": 1,
                                                         "model": "convnet:width=32,depth=3", "epochs": 300,
                                                         "max_confusion": 0.5}


def _model_file(path, classes, shape):
    model = build_model("mlp:hidden=8", shape, len(classes))
    save_model(path, model, spec="mlp:hidden=8", input_shape=shape, classes=classes, mean=(0.0,), std=(1.0,))
    return path


def test_cli_audit_errors_are_one_line_and_write_nothing(cli, bptt_sets, tmp_path):
    s = bptt_sets["clean"]
    cases = [
        (("--reference", _model_file(tmp_path / "three.safetensors", ["a", "b", "c"], (1, 8, 8))), "predicts 3 classes"),
        (("--reference", _model_file(tmp_path / "big.safetensors", [str(i) for i in range(10)], (1, 28, 28))),
         "shape"),
        (("--data", "mnist"), "condensed from digits"),
        (("--audits", "nosuch"), "unknown audit 'nosuch'"),
        (("--audits", "labels"), "needs --reference"),
        (("--audits", "labels:confidence=2", "--reference", tmp_path / "three.safetensors"), "confidence"),
        (("--privacy", "--fpr", "0"), "--fpr"),
        (("--privacy",), "needs at least 10000 non-members"),  # digits holds 583 validation + test images
        (("--audits", "membership", "--fpr", "0.01"), "needs at least 1000 non-members"),
    ]
    for extra, fragment in cases:
        out = tmp_path / "out"
        assert_one_line_error(cli("audit", s, *extra, "--out", out), fragment)
        assert not out.exists() and not list(tmp_path.glob(".out.partial"))


def test_cli_audit_refuses_a_set_of_other_data_and_a_file_that_is_not_a_set(cli, splits, tmp_path, digits_teacher):
    synset = condense(splits.train_set(), "random", 1, seed=0)
    synset.meta["source"] = {**synset.meta["source"], "hash": "0" * 64}  # made from other training images
    synset.save(tmp_path / "other.safetensors")
    assert_one_line_error(cli("audit", tmp_path / "other.safetensors", "--privacy", "--out", tmp_path / "o"),
                          "not condensed from the training split")
    assert_one_line_error(cli("audit", digits_teacher, "--privacy", "--out", tmp_path / "o"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    assert_one_line_error(cli("audit", tmp_path / "junk.safetensors", "--out", tmp_path / "o"))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("forged, fragment", [({"val_size": 10**12}, "impossible for digits"),
                                              ({"val_size": 7}, "not condensed from the training split"),
                                              ({"data": "nosuchdata"}, "unknown dataset")])
def test_a_set_with_forged_source_metadata_is_one_line(cli, splits, tmp_path, forged, fragment):
    synset = condense(splits.train_set(), "random", 1, seed=0)
    synset.meta["source"] = {**synset.meta["source"], **forged}
    synset.save(tmp_path / "forged.safetensors")
    assert_one_line_error(cli("audit", tmp_path / "forged.safetensors", "--audits", "memorisation",
                              "--out", tmp_path / "o"), fragment)
    assert not (tmp_path / "o").exists()
