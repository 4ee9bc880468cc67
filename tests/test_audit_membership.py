"""The membership-inference audit: its metrics (audits/mia.py) and the audit end to end on digits."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from distillab.audits import AUDITS, AuditInputs, parse_audit, run_audits
from distillab.audits import mia
from distillab.audits.checks.membership import Membership, leaks_more
from distillab.condense import condense
from distillab.data import ImageSet, load, split
from distillab.errors import DistillabError

DM_QUICK = "dm:iterations=3,batch_real=16,model=[convnet:width=8,depth=2]"


# ---- metrics ----


def test_auc_separated_identical_and_ties():
    assert mia.auc([3.0, 4.0, 5.0], [0.0, 1.0, 2.0]) == 1.0
    assert mia.auc([0.0, 1.0], [2.0, 3.0]) == 0.0
    g = torch.Generator().manual_seed(0)
    same = mia.auc(torch.randn(2000, generator=g), torch.randn(2000, generator=g))
    assert abs(same - 0.5) < 0.03
    assert mia.auc([1.0, 1.0], [1.0, 1.0]) == 0.5          # all tied: half
    assert mia.auc([1.0, 2.0], [1.0]) == pytest.approx(0.75)  # one tie (1/2) and one win (1)


def test_auc_agrees_with_sklearn_and_the_roc_area():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(1)
    m = torch.randint(0, 6, (57,), generator=g).double()     # many ties
    n = torch.randint(0, 5, (81,), generator=g).double()
    expected = roc_auc_score(np.r_[np.ones(57), np.zeros(81)], np.r_[m.numpy(), n.numpy()])
    assert mia.auc(m, n) == pytest.approx(expected, abs=1e-12)
    fpr, tpr = mia.roc_curve(m, n)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    area = float((np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2).sum())
    assert area == pytest.approx(expected, abs=1e-12)  # ties drawn as diagonals: the same area


def test_tpr_at_fpr_by_hand_ties_not_split():
    members, nonmembers = [5.0, 4.0, 3.0, 1.0], [4.0, 2.0, 0.0, -1.0, -2.0]
    # no threshold may take the member 4 without the non-member 4: at FPR 0 only the 5 is caught
    assert mia.tpr_at_fpr(members, nonmembers, 0.1) == 0.25
    assert mia.tpr_at_fpr(members, nonmembers, 0.2) == 0.75   # >= 3: one false positive of five
    assert mia.tpr_at_fpr(members, nonmembers, 0.3) == 0.75
    assert mia.tpr_at_fpr(members, nonmembers, 0.4) == 1.0    # >= 1: two of five


def test_needed_nonmembers():
    assert mia.needed_nonmembers(0.001) == 10000
    assert mia.needed_nonmembers(0.01) == 1000
    assert mia.needed_nonmembers(0.003) == 3334


def test_bootstrap_deterministic_and_covers_the_estimate():
    g = torch.Generator().manual_seed(2)
    m, n = torch.randn(300, generator=g) + 0.5, torch.randn(400, generator=g)
    a = mia.bootstrap(m, n, (0.05, 0.1), torch.Generator().manual_seed(7), rounds=100)
    b = mia.bootstrap(m, n, (0.05, 0.1), torch.Generator().manual_seed(7), rounds=100)
    c = mia.bootstrap(m, n, (0.05, 0.1), torch.Generator().manual_seed(8), rounds=100)
    assert a == b and a["auc_ci"] != c["auc_ci"]
    assert a["auc"] == mia.auc(m, n) and a["tpr_at"][0.1] == mia.tpr_at_fpr(m, n, 0.1)
    lo, hi = a["auc_ci"]
    assert lo < a["auc"] < hi and hi - lo < 0.2
    for f in (0.05, 0.1):
        assert a["tpr_ci"][f][0] <= a["tpr_at"][f] <= a["tpr_ci"][f][1]
    # members and non-members are each resampled: either side alone still moves the AUC
    constant = torch.zeros(300, dtype=torch.float64)
    for mm, nn in ((constant, n), (m, constant)):
        lo, hi = mia.bootstrap(mm, nn, (0.1,), torch.Generator().manual_seed(7), rounds=50)["auc_ci"]
        assert hi - lo > 0.02


def test_logit_confidence_is_the_log_odds():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-3.0, 4.0, 1.0]])
    labels = torch.tensor([0, 2, 0])
    p = torch.softmax(logits.double(), 1)[torch.arange(3), labels]
    assert torch.allclose(mia.logit_confidence(logits, labels), torch.log(p / (1 - p)), atol=1e-12)
    huge = mia.logit_confidence(torch.tensor([[200.0, 0.0, 0.0]]), torch.tensor([0]))
    assert huge.item() == pytest.approx(200 - math.log(2))  # 1 - p underflows in float: the direct form would not


def test_lira_ranks_the_in_mean_above_the_out_mean():
    g = torch.Generator().manual_seed(3)
    shadows, n = 8, 3
    inside = torch.zeros(shadows, n, dtype=torch.bool)
    inside[:4, :2] = True                                  # examples 0, 1: four IN shadows each; example 2: none
    conf = torch.where(inside, 3.0, 0.0) + 0.3 * torch.randn(shadows, n, generator=g, dtype=torch.float64)
    target = torch.stack([conf[:4, 0].mean(), conf[4:, 1].mean(), torch.tensor(1.0, dtype=torch.float64)])
    scores = mia.lira_scores(target, conf, inside)
    assert scores[0] > 0 > scores[1]                       # at the IN mean: member; at the OUT mean: not
    # no IN shadow: the offline score (c - mu_out) / s, rising with c
    higher = mia.lira_scores(torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64), conf, inside)
    assert higher[2] > scores[2] > 0


def test_shadow_design_is_balanced_and_random():
    inside = mia.shadow_design(500, 6, torch.Generator().manual_seed(4))
    assert inside.shape == (6, 500) and inside.dtype == torch.bool
    assert (inside.sum(0) == 3).all()                      # every example IN for exactly half the shadows
    assert len({tuple(col) for col in inside.T.tolist()}) == 20  # all C(6, 3) halves occur: drawn per example
    assert (inside.sum(1) - 250).abs().max() < 50           # each shadow trains on about half the data
    assert torch.equal(inside, mia.shadow_design(500, 6, torch.Generator().manual_seed(4)))


def test_flagged_only_above_the_control_bound_and_twice_the_rate():
    at = lambda tpr, high: {"tpr_at": {"0.01": tpr}, "tpr_ci": {"0.01": [0.0, high]}}
    assert leaks_more(at(0.30, 0.5), at(0.02, 0.10), 0.01)
    assert not leaks_more(at(0.08, 0.5), at(0.02, 0.10), 0.01)   # inside the control's interval
    assert not leaks_more(at(0.015, 0.5), at(0.0, 0.01), 0.01)   # above the control, but about chance (2x fpr)


# ---- the audit ----


@pytest.fixture(scope="module")
def splits():
    return split(load("digits"))


@pytest.fixture(scope="module")
def sets(splits):
    train = splits.train_set()
    return {"random": condense(train, "random", 2, seed=0), "random1": condense(train, "random", 2, seed=1),
            "dm": condense(train, DM_QUICK, 2, seed=0)}


def audit(synset, splits, seed=0, **options):
    inputs = AuditInputs(synset=synset, splits=splits, fpr=options.pop("fpr", (0.1,)), folder=options.pop("folder",
                                                                                                         None))
    return run_audits([Membership(**{**Membership.quick, **options})], inputs, seed=seed)["membership"]


def numbers(finding):
    return json.dumps(finding, sort_keys=True)


def test_registered_as_a_privacy_audit():
    assert AUDITS.get("membership") is Membership and Membership.privacy and Membership.needs == ("data",)
    assert parse_audit("membership:shadows=4,epochs=7") == Membership(shadows=4, epochs=7)
    for bad in (1, 3, -2):
        with pytest.raises(DistillabError, match="shadows"):
            Membership(shadows=bad)
    Membership(shadows=0)


def test_finding_structure_figure_and_markdown(splits, sets, tmp_path):
    before = torch.random.get_rng_state()
    finding = audit(sets["dm"], splits, folder=tmp_path)
    assert torch.equal(before, torch.random.get_rng_state())
    json.dumps(finding)
    assert isinstance(finding["flagged"], bool) and "AUC" in finding["summary"]
    assert finding["counts"] == {"members": 583, "nonmembers": 583, "shadows": 2, "images_per_class": 2}
    assert finding["attack"] == "lira" and finding["note"] is None
    for producer in ("synset", "random_subset"):
        assert 0 <= finding[producer]["test_accuracy"] <= 1
        for attack in ("loss", "lira"):
            r = finding[producer][attack]
            assert 0 <= r["auc_ci"][0] <= r["auc"] <= r["auc_ci"][1] <= 1
            assert set(r["tpr_at"]) == {"0.1"} and 0 <= r["tpr_at"]["0.1"] <= 1
            assert r["tpr_ci"]["0.1"][0] <= r["tpr_ci"]["0.1"][1]
    assert (tmp_path / "roc.png").stat().st_size > 1000
    lines = Membership().markdown(finding)
    rows = [line for line in lines if line.startswith("| the set") or line.startswith("| random real subset")]
    assert len(rows) == 4 and all(line.count("[") == 2 for line in rows)


def test_same_seed_same_finding_and_the_control_does_not_depend_on_the_set(splits, sets):
    a, b = audit(sets["random"], splits), audit(sets["random"], splits)
    assert numbers(a) == numbers(b)
    other = audit(sets["random1"], splits)
    # the control is the same game whatever the set: same members, same random subset, same models
    assert other["random_subset"] == a["random_subset"]
    assert other["synset"]["loss"] != a["synset"]["loss"]
    assert numbers(audit(sets["random"], splits, seed=1)) != numbers(a)
    # more bootstrap rounds: the same estimates (drawn after all training), other intervals
    longer = audit(sets["random"], splits, bootstrap=40)
    for p in ("synset", "random_subset"):
        for attack in ("loss", "lira"):
            assert longer[p][attack]["auc"] == a[p][attack]["auc"]
            assert longer[p][attack]["tpr_at"] == a[p][attack]["tpr_at"]
            assert longer[p][attack]["auc_ci"] != a[p][attack]["auc_ci"]


def test_the_loss_attack_finds_memorised_members(splits):
    # labels drawn at random can only be learned by memorising them: a member's loss is then low, a non-member's
    # high (on the real labels, digits generalises too well for a tiny model to show a reliable gap)
    g = torch.Generator().manual_seed(0)
    noisy = lambda s: ImageSet(s.x, torch.randint(10, (len(s),), generator=g))
    shuffled = dataclasses.replace(splits, train=noisy(splits.train), val=noisy(splits.val), test=noisy(splits.test))
    synset = condense(shuffled.train_set(), "random", 60, seed=0)
    finding = audit(synset, shuffled, shadows=0, model="mlp:hidden=128", epochs=300)
    for producer in ("synset", "random_subset"):
        assert finding[producer]["loss"]["auc"] > 0.6
        assert finding[producer]["loss"]["tpr_at"]["0.1"] > 0.2
        assert finding[producer]["lira"] is None
    assert finding["attack"] == "loss" and "shadows=0" in finding["note"]


def test_too_few_nonmembers_for_the_rate(splits, sets):
    with pytest.raises(DistillabError, match="10000 non-members") as e:
        audit(sets["random"], splits, fpr=(0.001, 0.1))
    assert "583" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("method", ["no_such_method", "import:os.path:join"])
def test_a_recipe_that_cannot_be_rerun_gets_the_loss_attack_only(splits, sets, method):
    synset = dataclasses.replace(sets["random"], meta={**sets["random"].meta,
                                                       "recipe": {**sets["random"].meta["recipe"], "method": method}})
    finding = audit(synset, splits)
    assert finding["attack"] == "loss" and finding["counts"]["shadows"] == 0
    assert finding["synset"]["lira"] is None and finding["random_subset"]["lira"] is None
    assert finding["synset"]["loss"] is not None
    assert ("unknown condensation method" if method == "no_such_method" else "--trust-code") in finding["note"]
    no_recipe = dataclasses.replace(sets["random"], meta={})
    assert "no recipe" in audit(no_recipe, splits)["note"]
    for forged in ("gm", {"method": 7}):  # a recipe that is a string, or names no method
        finding = audit(dataclasses.replace(sets["random"], meta={**sets["random"].meta, "recipe": forged}), splits)
        assert finding["attack"] == "loss" and "forged or damaged" in finding["note"]


@pytest.mark.parametrize("recipe, note", [({"method": "import:trap:make"}, "--trust-code"),
                                          ("import:trap:make", "forged or damaged"),
                                          ({"method": "no_such_method"}, "unknown condensation method")],
                         ids=["import", "string", "unknown-method"])
def test_a_forged_recipe_runs_no_code_and_gets_the_loss_attacks_true_figures(splits, sets, recipe, note):
    """An audited set whose recipe names code, is a bare string, or names an unknown method: nothing is imported,
    no shadow is trained on it, and the loss attack's figures are the ones the same set gets with no recipe."""
    import sys

    sys.modules.pop("trap", None)
    forged = {**sets["random"].meta["recipe"], **recipe} if isinstance(recipe, dict) else recipe
    finding = audit(dataclasses.replace(sets["random"], meta={**sets["random"].meta, "recipe": forged}), splits)
    assert "trap" not in sys.modules
    assert finding["attack"] == "loss" and note in finding["note"] and finding["counts"]["shadows"] == 0
    plain = audit(dataclasses.replace(sets["random"], meta={}), splits)
    for producer in ("synset", "random_subset"):
        assert finding[producer]["lira"] is None
        assert numbers(finding[producer]["loss"]) == numbers(plain[producer]["loss"])
