"""Labels a trusted model disputes: a poisoned or careless set teaches images as classes they do not show."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..audit import Audit, register_audit


@register_audit("labels")
@dataclass
class DisputedLabels(Audit):
    """Each synthetic image shown to the reference model: disputed when the reference puts at least ``confidence``
    of its probability on one class other than the image's label (the top class of a soft label). Flags the set
    when any image is disputed, and lists them."""

    needs = ("reference",)
    confidence: float = 0.9

    def check(self) -> None:
        from ...errors import require

        require(0 < self.confidence <= 1, f"labels: confidence must lie in (0, 1], got {self.confidence}")

    def run(self, inputs, generator):
        logits, _ = inputs.reference_outputs(inputs.synset.images)
        probs = torch.softmax(logits.double(), 1)
        stated = inputs.stated_labels()
        top_p, top = probs.max(1)
        disputed = ((top != stated) & (top_p >= self.confidence)).nonzero().flatten().tolist()
        classes = inputs.synset.classes
        agree = (top == stated).float()
        per_class = {classes[c]: round(float(agree[stated == c].mean()), 4) for c in range(len(classes))
                     if bool((stated == c).any())}
        rows = [{"index": i, "label": classes[int(stated[i])], "reference": classes[int(top[i])],
                 "reference_probability": round(float(top_p[i]), 4),
                 "label_probability": round(float(probs[i, stated[i]]), 4)} for i in disputed]
        n = len(stated)
        summary = (f"{len(rows)} of {n} images disputed by the reference (another class at >= {self.confidence:g}); "
                   f"the reference agrees with {int(agree.sum())} of {n} labels")
        return {"flagged": bool(rows), "summary": summary, "disputed": rows, "images": n,
                "agreement": round(float(agree.mean()), 4), "agreement_per_class": per_class}

    def markdown(self, finding):
        lines = [finding["summary"] + ".", ""]
        if finding["disputed"]:
            lines += ["| image | label | reference says | its probability | label's probability |", "|---|---|---|---:|---:|"]
            lines += [f"| {r['index']} | {r['label']} | {r['reference']} | {r['reference_probability']:.3f} | "
                      f"{r['label_probability']:.3f} |" for r in finding["disputed"][:50]]
            if len(finding["disputed"]) > 50:
                lines.append(f"| ... {len(finding['disputed']) - 50} more in audit.json | | | | |")
        return lines
