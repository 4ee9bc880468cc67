"""The set's classes against the real data's, in the reference model's feature space: a class whose synthetic
images sit nearer another real class than their own teaches that class's look under the wrong name."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import require
from ..audit import Audit, register_audit


@register_audit("class-stats")
@dataclass
class ClassStatistics(Audit):
    """Centroids of each synthetic class and each real class (``real_per_class`` training images) in the reference's
    penultimate features, centred on the real data's mean; a synthetic class whose centroid is most cosine-similar
    to another real class is flagged. Pixel mean and spread per class are reported beside the real ones."""

    needs = ("reference", "data")
    real_per_class: int = 500

    def check(self) -> None:
        require(self.real_per_class >= 1, f"class-stats: real_per_class must be at least 1, got {self.real_per_class}")

    def run(self, inputs, generator):
        synset, train = inputs.synset, inputs.splits.train
        classes = synset.classes
        stated = inputs.stated_labels()
        picks = []
        for c in range(len(classes)):
            idx = (train.y == c).nonzero().flatten()
            picks.append(idx[torch.randperm(len(idx), generator=generator)[:self.real_per_class]])
        real_x, real_y = train.x[torch.cat(picks)], train.y[torch.cat(picks)]
        _, f_syn = inputs.reference_outputs(synset.images)
        _, f_real = inputs.reference_outputs(real_x)
        centre = f_real.double().mean(0)
        real_c = torch.stack([f_real[real_y == c].double().mean(0) for c in range(len(classes))]) - centre
        present = [c for c in range(len(classes)) if bool((stated == c).any())]
        rows, flagged = [], []
        for c in present:
            syn_c = f_syn[stated == c].double().mean(0) - centre
            sim = torch.nn.functional.cosine_similarity(syn_c[None], real_c, dim=1)
            nearest = int(sim.argmax())
            px_syn, px_real = synset.images[stated == c], real_x[real_y == c]
            rows.append({"class": classes[c], "images": int((stated == c).sum()), "nearest_real_class": classes[nearest],
                         "similarity_own": round(float(sim[c]), 4), "similarity_nearest": round(float(sim[nearest]), 4),
                         "pixel_mean": round(float(px_syn.mean()), 4), "real_pixel_mean": round(float(px_real.mean()), 4),
                         "pixel_std": round(float(px_syn.std()) if px_syn.numel() > 1 else 0.0, 4),
                         "real_pixel_std": round(float(px_real.std()), 4)})
            if nearest != c:
                flagged.append(f"{classes[c]} looks like {classes[nearest]}")
        missing = [classes[c] for c in range(len(classes)) if c not in present]
        summary = (f"synthetic classes nearer another real class: {', '.join(flagged)}" if flagged else
                   f"each of the {len(present)} synthetic classes is nearest its own real class")
        if missing:
            summary += f"; classes without images: {', '.join(missing)}"
        return {"flagged": bool(flagged or missing), "summary": summary, "classes": rows, "missing": missing,
                "real_images": len(real_y)}

    def markdown(self, finding):
        lines = [finding["summary"] + ".", "",
                 "| class | images | nearest real class | cosine to own | to nearest | pixel mean (real) | pixel std (real) |",
                 "|---|---:|---|---:|---:|---|---|"]
        lines += [f"| {r['class']} | {r['images']} | {r['nearest_real_class']} | {r['similarity_own']:.3f} | "
                  f"{r['similarity_nearest']:.3f} | {r['pixel_mean']:.3f} ({r['real_pixel_mean']:.3f}) | "
                  f"{r['pixel_std']:.3f} ({r['real_pixel_std']:.3f}) |" for r in finding["classes"]]
        return lines
