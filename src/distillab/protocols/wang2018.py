"""``wang2018``: Wang et al. 2018's evaluation: a set is used the way it was made -- the networks train with its own
learned schedule (bptt: ``steps * epochs`` plain gradient steps at the learned rates, no momentum, no augmentation)
from the set's stored initialisation when it was distilled for a fixed one (one network: the paper's "fixed known
initialisation"), else from ``runs`` fresh initialisations (the paper's "random initialisation" figures average 200
networks; the reference repository's ``--test_n_nets`` defaults to 1). Only sets that carry a schedule can be
evaluated this way; the others are refused in one line."""

from __future__ import annotations

from dataclasses import dataclass

from ..condense import METHODS
from ..errors import require
from ..evaluation import EvalProtocol, register_protocol


@register_protocol("wang2018")
@dataclass
class Wang2018(EvalProtocol):
    runs: int = 200

    reference = "SsnL/dataset-distillation (commit 24e6958): evaluate_steps, the learned steps and rates"
    quick = {"runs": 1}

    def check(self) -> None:
        super().check()
        unused = [f for f in ("models", "epochs", "lr", "momentum", "weight_decay", "batch_size")
                  if getattr(self, f) != getattr(EvalProtocol, f)]
        require(not unused, f"the wang2018 protocol trains with the set's learned schedule and its model: "
                            f"{', '.join(unused)} do not apply")

    def describe(self) -> dict:
        return {"name": self.name, "runs": self.runs}

    def summary(self, spec: str | None = None) -> str:
        return "the set's learned schedule"

    def evaluate_set(self, synset, test, *, seed: int = 0, trust_code: bool = False):
        method = METHODS.get((synset.meta or {}).get("method", ""))  # a registered name only: nothing imported
        made = method.as_made(synset, test, runs=self.runs, seed=seed, trust_code=trust_code) if method else None
        require(made is not None, f"the wang2018 protocol trains networks with a set's learned schedule; this set "
                                  f"({(synset.meta or {}).get('method') or 'no method'}) has none: evaluate it with "
                                  "another protocol (vico-dc, vico-dsa, distillab)")
        return {made.pop("model"): made}
