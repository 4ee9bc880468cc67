"""What a set teaches, measured: networks trained on it, then their confusions on real held-out images. A
poisoned set (``bptt:attack=source:K,target:T``) shows as one real class taught as another."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...condense import METHODS
from ...errors import require
from ...evaluation import train_sequential
from ...protocols import Protocol
from ...models import build_model
from ...training import predict_logits
from ..audit import Audit, register_audit


@register_audit("confusion")
@dataclass
class TaughtConfusion(Audit):
    """``models`` networks trained on the set the way it was made to be used (a bptt set: its learned schedule;
    else ``model`` by the evaluation protocol for ``epochs``), then the confusion matrix on the validation split
    (real images the set was not made from). Flags a real class that the networks put in one other class at a rate
    of ``max_confusion`` or more."""

    needs = ("data",)
    quick = {"models": 1, "model": "convnet:width=4,depth=2", "epochs": 5}
    models: int = 3
    model: str = "convnet:width=32,depth=3"
    epochs: int = 300
    max_confusion: float = 0.5

    def check(self) -> None:
        require(self.models >= 1, f"confusion: models must be at least 1, got {self.models}")
        require(self.epochs >= 1, f"confusion: epochs must be at least 1, got {self.epochs}")
        require(0 < self.max_confusion <= 1, f"confusion: max_confusion must lie in (0, 1], got {self.max_confusion}")

    def run(self, inputs, generator):
        synset, held = inputs.synset, inputs.splits.val
        k = len(synset.classes)
        seed = int(torch.randint(2 ** 31, (1,), generator=generator))
        method = METHODS.get(synset.meta.get("method", ""))  # a registered name only: nothing is imported
        made = method.models_as_made(synset, runs=self.models, seed=seed, trust_code=inputs.trust_code) if method else None
        if made is not None:
            nets, how = made["models"], f"as made ({made['model']}, {made['init_net']} init)"
        else:
            targets = synset.labels if synset.label_logits is None else synset.targets()
            nets = [build_model(self.model, synset.input_shape, k, generator).to(inputs.device)
                    for _ in range(self.models)]
            train_sequential(nets, synset.images.to(inputs.device), targets.to(inputs.device),
                             Protocol(epochs=self.epochs, runs=self.models, models=(self.model,)), generator)
            how = f"{self.model}, {self.epochs} epochs by the protocol"
        counts = torch.zeros(k, k, dtype=torch.float64)
        for net in nets:
            pred = predict_logits(net, held.x, device=inputs.device).argmax(1).cpu()
            counts.index_put_((held.y, pred), torch.ones(len(pred), dtype=torch.float64), accumulate=True)
        rates = counts / counts.sum(1, keepdim=True).clamp_min(1)
        off = rates.clone().fill_diagonal_(0)
        worst = int(off.argmax())
        src, dst = divmod(worst, k)
        names = synset.classes
        pairs = [{"real": names[i], "taught_as": names[j], "rate": round(float(off[i, j]), 4)}
                 for i, j in (off >= self.max_confusion).nonzero().tolist()]
        accuracy = float(counts.diagonal().sum() / counts.sum())
        taught = [f"real {p['real']} taught as {p['taught_as']} ({100 * p['rate']:.1f}%)" for p in pairs]
        summary = (", ".join(taught) if pairs else f"no real class taught as another at >= {100 * self.max_confusion:.0f}% (largest: "
                                 f"{names[src]} as {names[dst]}, {100 * float(off[src, dst]):.1f}%)")
        summary += f"; {len(nets)} network(s) {how}, held-out accuracy {100 * accuracy:.2f}%"
        return {"flagged": bool(pairs), "summary": summary, "pairs": pairs, "networks": len(nets), "trained": how,
                "held_out_images": len(held), "held_out_accuracy": round(accuracy, 4),
                "recall": {names[c]: round(float(rates[c, c]), 4) for c in range(k)},
                "largest": {"real": names[src], "taught_as": names[dst], "rate": round(float(off[src, dst]), 4)},
                "confusion": [[round(float(v), 4) for v in row] for row in rates]}

    def markdown(self, finding):
        recall = ", ".join(f"{c} {100 * r:.1f}%" for c, r in finding["recall"].items())
        return [finding["summary"] + ".", "", f"Recall per real class: {recall}."]
