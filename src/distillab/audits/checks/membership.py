"""``membership``: can an attacker tell which real images the set was condensed from? (privacy)

Carlini et al. (2022, "No free lunch in 'privacy for free'") refuted the claim that condensed data is private by
construction: the honest test is a membership-inference game, read as AUC and as the true-positive rate at a low
false-positive rate, beside the same game played against a random real subset of equal size. This audit plays it:

- members: real images of the pool the set was condensed from (``splits.train``); non-members: the validation and
  test images, which no condensation reads; as many members as non-members are drawn;
- each producer -- the set itself, and ``random`` with the same images per class -- trains a target model
  (``model``, the evaluation protocol's training for ``epochs``);
- the loss attack scores a candidate by minus the target's cross-entropy on it; LiRA (online, global variance)
  compares the target's confidence with ``shadows`` shadow models, each trained on the producer's output for a
  random half of the data (every image IN for exactly half of them). Shadows rerun the set's recipe, so an
  imported set, or one whose method is not registered or whose code is not trusted, gets the loss attack only.

Flagged when the set's TPR at the lowest FPR (LiRA when it ran) exceeds the control's upper 95% bound and twice
that FPR: the set leaks more than simply keeping real images would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ...condense.labels import LABELS
from ...condense.method import METHODS, condense
from ...data import ImageSet, TrainSet
from ...errors import DistillabError, require
from ...evaluation import train_sequential
from ...protocols import Protocol
from ...models import build_model, set_dropout_generator
from ...training import accuracy, predict_logits
from ..audit import Audit, AuditInputs, register_audit
from ..mia import bootstrap, lira_scores, logit_confidence, needed_nonmembers, roc_curve, shadow_design

PRODUCERS = ("synset", "random_subset")
ATTACKS = ("loss", "lira")
NAMES = {"synset": "the set", "random_subset": "random real subset"}


def _child(g: torch.Generator) -> torch.Generator:
    """A generator of its own for one part of the audit, seeded from the audit's stream."""
    return torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=g)))


def _seed(g: torch.Generator) -> int:
    return int(torch.randint(2**31, (1,), generator=g))


def _key(fpr: float) -> str:
    return f"{fpr:g}"


def leaks_more(synset: dict, control: dict, fpr: float) -> bool:
    """The set's TPR at ``fpr`` is above the control's upper 95% bound and above twice ``fpr`` (a chance-level
    attack catches ``fpr`` of the members): it gives away more members than keeping real images would."""
    tpr = synset["tpr_at"][_key(fpr)]
    return bool(tpr > control["tpr_ci"][_key(fpr)][1] and tpr > 2 * fpr)


@register_audit("membership")
@dataclass
class Membership(Audit):
    shadows: int = 8                       # shadow models per producer for LiRA (0: the loss attack only)
    model: str = "convnet:width=32,depth=3"  # the target and shadow models
    epochs: int = 300                      # their training (the evaluation protocol's loop)
    bootstrap: int = 200                   # resamples for the 95% intervals

    needs = ("data",)
    privacy = True
    quick = {"shadows": 2, "model": "convnet:width=4,depth=2", "epochs": 5, "bootstrap": 20}

    def check(self) -> None:
        require(self.shadows == 0 or (self.shadows >= 2 and self.shadows % 2 == 0),
                f"membership: shadows must be 0 (loss attack only) or an even number >= 2 (each image IN for half of "
                f"them), got {self.shadows}")
        require(self.epochs >= 1, f"membership: epochs must be at least 1, got {self.epochs}")
        require(self.bootstrap >= 10, f"membership: bootstrap must be at least 10 resamples, got {self.bootstrap}")
        require(isinstance(self.model, str) and self.model != "", "membership: model must be a model spec")

    # ---- the game ----

    def check_inputs(self, inputs: AuditInputs) -> None:
        splits, synset = inputs.splits, inputs.synset
        fprs = sorted({float(f) for f in inputs.fpr})
        require(len(fprs) >= 1 and all(0 < f < 1 for f in fprs),
                f"membership: false-positive rates must be between 0 and 1, got {inputs.fpr}")
        k = splits.num_classes
        require(len(synset.classes) == k and tuple(synset.input_shape) == tuple(splits.input_shape),
                f"membership: the set ({len(synset.classes)} classes of {tuple(synset.input_shape)}) is not of this "
                f"data ({k} classes of {tuple(splits.input_shape)}); give the data it was condensed from")
        held = len(splits.val) + len(splits.test)
        needed = needed_nonmembers(fprs[0])
        require(held >= needed,
                f"membership: reading TPR at FPR {fprs[0]:g} needs at least {needed} non-members (validation + test "
                f"images) and this data has {held}; raise the lowest --fpr or use larger data")
        smallest = int(torch.bincount(splits.train.y, minlength=k).min())
        require(1 <= synset.ipc <= smallest,
                f"membership: the set has {synset.ipc} images per class but the pool's smallest class has "
                f"{smallest}; give the data it was condensed from")

    def run(self, inputs: AuditInputs, generator: torch.Generator) -> dict:
        started = time.perf_counter()
        self.check_inputs(inputs)
        splits, synset, device = inputs.splits, inputs.synset, inputs.device
        fprs = sorted({float(f) for f in inputs.fpr})
        k = splits.num_classes
        nonmembers = ImageSet(torch.cat([splits.val.x, splits.test.x]), torch.cat([splits.val.y, splits.test.y]))
        pool = splits.train
        n_members = min(len(pool), len(nonmembers))
        member_index = torch.randperm(len(pool), generator=generator)[:n_members]
        cand = ImageSet(torch.cat([pool.x[member_index], nonmembers.x]), torch.cat([pool.y[member_index],
                                                                                   nonmembers.y]))
        ipc = synset.ipc
        pool_train = TrainSet(pool.x, pool.y, list(splits.classes), tuple(splits.mean), tuple(splits.std),
                              splits.describe())

        # the same game for both producers: the set, and a random real subset of equal size
        control = condense(pool_train, "random", ipc, seed=_seed(generator))
        made = {"synset": (synset.images, synset.targets() if synset.label_logits is not None else synset.labels),
                "random_subset": (control.images, control.labels)}
        inputs.reporter.info(f"membership: {n_members} members, {len(nonmembers)} non-members; training the targets")
        found, seconds = {}, {}
        for name in PRODUCERS:
            t0 = time.perf_counter()
            x, targets = made[name]
            target = self._train(x, targets, k, _child(generator), device)
            logits = predict_logits(target, cand.x, batch_size=512, device=device).double()
            found[name] = {"loss": -F.cross_entropy(logits, cand.y, reduction="none"),
                           "conf": logit_confidence(logits, cand.y),
                           "test_accuracy": accuracy(target, splits.test, device)[0]}
            seconds[name] = time.perf_counter() - t0

        # LiRA: shadows rerun each producer on random halves of pool + non-members
        recipe, note = self._recipe(synset, pool_train, inputs)
        shadows_used = 0
        if recipe is not None:
            universe = ImageSet(torch.cat([pool.x, nonmembers.x]), torch.cat([pool.y, nonmembers.y]))
            cand_in_universe = torch.cat([member_index, len(pool) + torch.arange(len(nonmembers))])
            inside = shadow_design(len(universe), self.shadows, generator)  # (shadows, universe)
            fewest = min(int(torch.bincount(universe.y[row], minlength=k).min()) for row in inside)
            if fewest < ipc:
                note = (f"a shadow's half of the data has only {fewest} images of some class, fewer than the set's "
                        f"{ipc} per class: loss attack only")
            else:
                confs = self._shadows(recipe, universe, inside, cand, ipc, inputs, generator, seconds)
                for name in PRODUCERS:
                    found[name]["lira"] = lira_scores(found[name]["conf"], confs[name], inside[:, cand_in_universe])
                shadows_used = self.shadows

        finding = {"fpr": fprs, "counts": {"members": n_members, "nonmembers": len(nonmembers),
                                           "shadows": shadows_used, "images_per_class": ipc}}
        for name in PRODUCERS:
            result = {"test_accuracy": found[name]["test_accuracy"]}
            for attack in ATTACKS:
                scores = found[name].get(attack)
                result[attack] = None if scores is None else \
                    self._measure(scores[:n_members], scores[n_members:], fprs, _child(generator))
            finding[name] = result
        attack = "lira" if finding["synset"]["lira"] is not None else "loss"
        low = _key(fprs[0])
        set_tpr = finding["synset"][attack]["tpr_at"][low]
        control_high = finding["random_subset"][attack]["tpr_ci"][low][1]
        finding["flagged"] = leaks_more(finding["synset"][attack], finding["random_subset"][attack], fprs[0])
        finding["attack"] = attack
        finding["note"] = note
        finding["summary"] = (
            f"{attack}: the set AUC {finding['synset'][attack]['auc']:.3f}, TPR {100 * set_tpr:.2f}% at "
            f"{100 * fprs[0]:g}% FPR; random real subset of equal size AUC "
            f"{finding['random_subset'][attack]['auc']:.3f}, TPR "
            f"{100 * finding['random_subset'][attack]['tpr_at'][low]:.2f}% (upper 95% bound "
            f"{100 * control_high:.2f}%)" + (f"; {note}" if note else ""))
        if inputs.folder is not None:
            self._draw(found, n_members, inputs.folder)
        # timings go to the log, not the finding: the same seed must give the same finding, bit for bit
        inputs.reporter.info(f"membership: {time.perf_counter() - started:.1f} s (the set's target and shadows "
                             f"{seconds['synset']:.1f} s, the control's {seconds['random_subset']:.1f} s)")
        return finding

    def _train(self, x: torch.Tensor, targets: torch.Tensor, num_classes: int, g: torch.Generator, device: str):
        """``model`` trained on (x, targets) as the evaluation protocol trains (one run, no augmentation)."""
        proto = Protocol(epochs=self.epochs, runs=1, models=(self.model,))
        model = build_model(self.model, tuple(x.shape[1:]), num_classes, g).to(device)
        # the protocol's loop sets no dropout stream; without one, dropout would draw from the global RNG
        set_dropout_generator(model, torch.Generator(device=device).manual_seed(_seed(g)))
        return train_sequential([model], x.detach().float().to(device), targets.to(device), proto, g)[0]

    def _shadows(self, recipe, universe: ImageSet, inside: torch.Tensor, cand: ImageSet, ipc: int,
                 inputs: AuditInputs, generator: torch.Generator, seconds: dict) -> dict:
        """{producer: (shadows, candidates) logit confidences}: shadow i condenses the images ``inside[i]`` as the
        producer does (the set's recipe, or ``random``) and trains ``model`` on the result."""
        method, labels = recipe
        splits, device = inputs.splits, inputs.device
        confs = {name: [] for name in PRODUCERS}
        for i in range(self.shadows):
            inputs.reporter.info(f"membership: shadow {i + 1}/{self.shadows}")
            idx = torch.nonzero(inside[i], as_tuple=True)[0]
            half = TrainSet(universe.x[idx], universe.y[idx], list(splits.classes), tuple(splits.mean),
                            tuple(splits.std), splits.describe()).to(device)
            for name in PRODUCERS:
                t0 = time.perf_counter()
                if name == "synset":
                    out = condense(half, method, ipc, seed=_seed(generator), labels=labels,
                                   trust_code=inputs.trust_code)
                else:
                    out = condense(half, "random", ipc, seed=_seed(generator))
                targets = out.targets() if out.label_logits is not None else out.labels
                shadow = self._train(out.images, targets, splits.num_classes, _child(generator), device)
                logits = predict_logits(shadow, cand.x, batch_size=512, device=device)
                confs[name].append(logit_confidence(logits, cand.y))
                seconds[name] += time.perf_counter() - t0
        return {name: torch.stack(c) for name, c in confs.items()}

    def _recipe(self, synset, pool_train: TrainSet, inputs: AuditInputs):
        """((method, labels), None) rebuilt from the set's recipe, or (None, why LiRA does not run)."""
        if self.shadows == 0:
            return None, "shadows=0: loss attack only"
        recipe = synset.meta.get("recipe") if isinstance(synset.meta, dict) else None
        if recipe is None:
            return None, "the set records no recipe to rerun for shadow models (an imported set?): loss attack only"
        if not isinstance(recipe, dict) or not isinstance(recipe.get("method"), str):
            return None, ("the set's recipe is not one distillab writes (a mapping naming its method), so it was "
                          "forged or damaged: no shadow models, loss attack only")
        where = "the set's recipe"
        options = {key: v for key, v in recipe.items() if key not in ("method", "ipc", "seed", "labels")}
        try:
            method = METHODS.from_description({"name": recipe["method"], **options}, trust_code=inputs.trust_code,
                                              source=where)
            labels = LABELS.from_description(recipe.get("labels") or {"name": "hard"},
                                             trust_code=inputs.trust_code, source=where)
            method.check_data(pool_train)
            labels.check_data(pool_train, inputs.trust_code)
        except DistillabError as e:
            return None, f"no shadow models: {e}; loss attack only"
        return (method, labels), None

    def _measure(self, members: torch.Tensor, nonmembers: torch.Tensor, fprs: list[float], g: torch.Generator):
        """AUC and TPR at each FPR with 95% bootstrap intervals, JSON-ready."""
        return _as_json(bootstrap(members, nonmembers, fprs, g, rounds=self.bootstrap))

    # ---- reports ----

    def markdown(self, finding: dict) -> list[str]:
        fprs = finding["fpr"]
        head = ["producer", "attack", "AUC [95% CI]", *[f"TPR at {100 * f:g}% FPR [95% CI]" for f in fprs]]
        lines = [finding["summary"], "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in PRODUCERS:
            for attack in ATTACKS:
                r = finding[name][attack]
                if r is None:
                    cells = ["not run"] * (1 + len(fprs))
                else:
                    cells = [_cell(r["auc"], r["auc_ci"], 3)]
                    cells += [_cell(100 * r["tpr_at"][_key(f)], [100 * v for v in r["tpr_ci"][_key(f)]], 2, "%")
                              for f in fprs]
                lines.append(f"| {NAMES[name]} | {attack} | " + " | ".join(cells) + " |")
        c = finding["counts"]
        lines += ["", f"{c['members']} members, {c['nonmembers']} non-members, {c['shadows']} shadow models per "
                      f"producer. Target test accuracy: the set "
                      f"{100 * finding['synset']['test_accuracy']:.2f}%, random real subset "
                      f"{100 * finding['random_subset']['test_accuracy']:.2f}%."]
        return lines

    def _draw(self, found: dict, n_members: int, folder) -> None:
        from ...figures import pyplot

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5, 5))
        n_non = len(found["synset"]["loss"]) - n_members
        floor = 1 / max(n_members, n_non)  # a log axis cannot show 0: rates below one example sit on the floor
        for name in PRODUCERS:
            for attack in ATTACKS:
                scores = found[name].get(attack)
                if scores is None:
                    continue
                fpr, tpr = roc_curve(scores[:n_members], scores[n_members:])
                ax.plot(fpr.clip(floor), tpr.clip(floor), label=f"{NAMES[name]}, {attack}")
        ax.plot([floor, 1], [floor, 1], color="grey", linestyle="--", label="chance")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(floor, 1)
        ax.set_ylim(floor, 1)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_title("membership inference")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(Path(folder) / "roc.png", dpi=120)
        plt.close(fig)


def _as_json(result: dict) -> dict:
    """bootstrap()'s result with string keys (JSON) and rounded numbers."""
    r = lambda v: round(float(v), 6)
    return {"auc": r(result["auc"]), "auc_ci": [r(v) for v in result["auc_ci"]],
            "tpr_at": {_key(f): r(v) for f, v in result["tpr_at"].items()},
            "tpr_ci": {_key(f): [r(v) for v in ci] for f, ci in result["tpr_ci"].items()}}


def _cell(value: float, ci, digits: int, unit: str = "") -> str:
    return f"{value:.{digits}f}{unit} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"

