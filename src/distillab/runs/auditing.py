"""Auditing a synthetic set for poisoning and privacy leaks (``audit``)."""

from __future__ import annotations

import json
from pathlib import Path

from .. import data as data_mod
from ..condense import SyntheticSet
from ..errors import require
from ..files import file_sha256, final_path, to_jsonable
from ..models import check_compatible, load_model
from ..training import resolve_device
from .run import Result, Run, run_function


@run_function("audit", resumable=False)
def audit(synset, *, reference=None, data: str | None = None, audits: list | None = None, privacy: bool = False,
          fpr=(0.001, 0.01), seed: int = 0, out=None, overwrite: bool = False, device: str = "cpu",
          quiet: bool = False, trust_code: bool = False) -> Result:
    """Audit a synthetic set file. ``audits``: spec strings (``labels``, ``class-stats``, ``confusion``,
    ``memorisation``, ``membership:shadows=8``, ...; see ``AUDITS.help()``); default: every audit the inputs allow --
    ``reference`` (a trusted model file) and ``data`` (default: the dataset the set records) -- with the privacy
    audits only when ``privacy``. ``fpr``: the false-positive rates membership attacks are read at. Writes
    audit.json (every finding), audit.md and the audits' figures to ``out``; metrics: what was flagged."""
    from ..audits import AUDITS, AuditInputs, check_audits, default_audits, parse_audit, report_markdown, run_audits
    from ..data import dataset_hash
    from ..datafree import FrozenTeacher

    job = Run("audit", locals(), record=False)
    reporter = job.reporter
    device = resolve_device(device)
    fpr = tuple(float(f) for f in (fpr if isinstance(fpr, (list, tuple)) else [fpr]))
    require(fpr and all(0 < f < 1 for f in fpr), f"--fpr takes rates between 0 and 1, got {', '.join(map(str, fpr))}")
    chosen = [parse_audit(a) if isinstance(a, str) else a for a in (audits or [])]
    if privacy:
        chosen += [AUDITS.get(n)() for n in AUDITS.names(builtin_only=True)
                   if AUDITS.get(n).privacy and n not in {a.name for a in chosen}]
    s = SyntheticSet.load(synset)
    source = s.meta.get("source") or {}
    recorded = source.get("data") if isinstance(source.get("data"), str) else None
    ref = None
    if reference is not None:
        model, meta = load_model(reference, trust_code=trust_code)
        check_compatible(meta, s.classes, s.input_shape, "reference model", reference)
        norm = meta["normalisation"]
        ref = FrozenTeacher(model, meta["input_shape"], meta["classes"], norm["mean"], norm["std"], device=device)
    splits = None
    wants_data = not audits or any("data" in a.needs for a in chosen)
    if (data or recorded) and wants_data:
        ds = data_mod.load(data or recorded)
        require(not (data and recorded) or ds.spec == recorded or data == recorded,
                f"{synset} was condensed from {recorded}, not {ds.spec}; audit it against the data it was made from")
        require(tuple(ds.input_shape) == s.input_shape and ds.num_classes == len(s.classes),
                f"{synset} holds {len(s.classes)} classes of shape {s.input_shape}, but {ds.spec} has "
                f"{ds.num_classes} of shape {tuple(ds.input_shape)}; audit it against the data it was made from")
        same = recorded is not None
        whole = lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None  # a file may be forged
        recorded_val = whole(source.get("val_size")) if same else None
        require(recorded_val is None or 0 < recorded_val < len(ds.train),
                f"{synset} records a validation split of {recorded_val} images, impossible for {ds.spec}; the file "
                "is corrupt or was made from other data")
        splits = data_mod.split(ds, val_size=whole(source.get("val_size")) if same else None,
                                seed=(whole(source.get("split_seed")) or 0) if same else 0, mean=s.mean, std=s.std)
        if same and isinstance(source.get("hash"), str):
            require(dataset_hash(splits.train_set()) == source["hash"],
                    f"{synset} was not condensed from the training split of {ds.spec} (its data hash differs); "
                    "audit it against the data it was made from")
    inputs = AuditInputs(synset=s, reference=ref, splits=splits, fpr=fpr, device=device, reporter=reporter,
                         trust_code=trust_code)
    if not audits:
        chosen = default_audits(inputs, privacy=False) + [a for a in chosen if a.privacy]
    require(chosen, "nothing to audit: pass --reference MODEL (a trusted model), --data D, or --privacy")
    check_audits(chosen, inputs)  # missing or unusable inputs end here, before any output
    job.record(locals(), omit=("privacy",), audits=[str(a) for a in chosen], fpr=list(fpr))
    config = {"command": "audit", "synset": final_path(synset), "reference": final_path(reference)
              if reference is not None else None, "data": splits.spec if splits else None,
              "audits": [a.describe() for a in chosen], "fpr": list(fpr), "seed": seed}
    with job.output(config) as run:
        inputs.folder = run.dir
        findings = run_audits(chosen, inputs, seed=seed)
        flagged = [n for n, f in findings.items() if f["flagged"]]
        report = {"synset": final_path(synset), "synset_sha256": file_sha256(synset),
                  "method": s.meta.get("method"), "ipc": s.ipc, "data": splits.spec if splits else None,
                  "reference": final_path(reference) if reference is not None else None,
                  "flagged": bool(flagged), "flagged_by": flagged, "audits": findings,
                  "wall_seconds": job.seconds()}
        run.path("audit.json").write_text(json.dumps(to_jsonable(report), indent=1) + "\n")
        title = f"Audit of {Path(final_path(synset)).name} ({s.meta.get('method') or 'set'}, IPC {s.ipc})"
        run.path("audit.md").write_text(report_markdown(title, findings, chosen) + "\n")
        metrics = {"synset": report["synset"], "flagged": bool(flagged), "flagged_by": ", ".join(flagged) or "none",
                   **{name: ("FLAGGED: " if f["flagged"] else "") + f["summary"] for name, f in findings.items()},
                   "wall_seconds": report["wall_seconds"]}
        job.finish(metrics)
    return job.result(f"audit: {'flagged by ' + ', '.join(flagged) if flagged else 'nothing flagged'}")
