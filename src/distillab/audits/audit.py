"""An audit: an options dataclass whose ``run`` inspects a synthetic set and returns its findings; the registry
of audits and ``run_audits()``.

A new audit is one file in ``audits/checks/`` (or your own module, registered with ``distillab.register_audit``)::

    @register_audit("size")
    @dataclass
    class Size(Audit):
        max_bytes: int = 10_000_000
        def run(self, inputs, generator):
            n = inputs.synset.nbytes()
            return {"flagged": n > self.max_bytes, "summary": f"{n:,} bytes", "bytes": n}

``run`` gets the set and what the user gave beside it (``AuditInputs``: a trusted reference model, the real data)
and returns a JSON-able dict with at least ``flagged`` (does the set need a human's look?) and ``summary`` (one
line). ``needs`` names the inputs an audit cannot run without; every random draw comes from ``generator``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from ..condense.synset import SyntheticSet
from ..data import Splits, denormalise, normalise
from ..errors import require
from ..registry import Registry
from ..reporting import SILENT, Reporter
from ..specs import Plugin

INPUTS = ("reference", "data")


@dataclass
class AuditInputs:
    """What an audit may look at: the set, and what the user gave beside it."""

    synset: SyntheticSet
    reference: object | None = None     # a trusted model (datafree.FrozenTeacher: frozen, eval, its normalisation)
    splits: Splits | None = None        # the set's dataset normalised as the set: train is the pool it was made from
    folder: Path | None = None          # where an audit may draw its figures (None: no figures)
    fpr: tuple[float, ...] = (0.001, 0.01)  # the false-positive rates membership attacks are read at
    device: str = "cpu"
    reporter: Reporter = field(default=SILENT, repr=False)
    trust_code: bool = False

    def for_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Images normalised as the set is, re-normalised as the reference model takes them."""
        ref = self.reference
        return normalise(denormalise(x, self.synset.mean, self.synset.std), ref.mean, ref.std)

    @torch.no_grad()
    def reference_outputs(self, x: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features: the input of its last linear layer) of the reference on set-normalised images."""
        parts = [self.reference.with_features(self.for_reference(x[i:i + batch_size]).to(self.reference.device))
                 for i in range(0, len(x), batch_size)]
        return torch.cat([p[0] for p in parts]).float().cpu(), torch.cat([p[1] for p in parts]).float().cpu()

    def stated_labels(self) -> torch.Tensor:
        """The class each synthetic image is taught as: its hard label, or the top class of its soft label."""
        s = self.synset
        return s.labels if s.label_logits is None else s.label_logits.argmax(1)


@dataclass
class Audit(Plugin):
    """Base class of audits. Subclasses are dataclasses whose fields are their options."""

    needs: ClassVar[tuple[str, ...]] = ()  # of INPUTS
    privacy: ClassVar[bool] = False        # run by --privacy
    quick: ClassVar[dict] = {}             # options for a seconds-long run on digits (contract test, bench --quick)

    @classmethod
    def help_note(cls) -> str:
        """What --help says before the options: the privacy audits are run by --privacy."""
        return "privacy" if cls.privacy else ""

    def check_inputs(self, inputs: AuditInputs) -> None:
        """Refuse inputs this audit cannot use (one line that says what would do), before any audit runs."""

    def run(self, inputs: AuditInputs, generator: torch.Generator) -> dict:
        raise NotImplementedError

    def markdown(self, finding: dict) -> list[str]:
        """audit.md's lines for this audit's finding (default: its summary)."""
        return [finding["summary"]]


AUDITS = Registry("audit", Audit, "--audits")


def register_audit(name: str, *, replace: bool = False):
    """Class decorator: make an Audit dataclass available as ``distillab audit --audits NAME``."""
    return AUDITS.register(name, replace=replace)


def parse_audit(text: str, *, trust_code: bool = True) -> Audit:
    return AUDITS.parse(text, trust_code=trust_code)


def default_audits(inputs: AuditInputs, privacy: bool) -> list[Audit]:
    """Every built-in audit whose inputs were given: the privacy ones only with ``privacy``."""
    chosen = []
    for name in AUDITS.names(builtin_only=True):
        cls = AUDITS.get(name)
        if cls.privacy == privacy and all(given(inputs, need) for need in cls.needs):
            chosen.append(cls())
    return chosen


def given(inputs: AuditInputs, need: str) -> bool:
    return {"reference": inputs.reference, "data": inputs.splits}[need] is not None


def check_inputs(audit: Audit, inputs: AuditInputs) -> None:
    flags = {"reference": "--reference MODEL", "data": "--data D (the dataset the set was condensed from)"}
    for need in audit.needs:
        require(given(inputs, need), f"audit '{audit.name}' needs {flags[need]}")


def check_audits(audits: list[Audit], inputs: AuditInputs) -> None:
    """Every audit has what it needs and can use it; each is named once. Called before any output is written."""
    names = [a.name for a in audits]
    require(len(set(names)) == len(names), f"an audit is named twice ({', '.join(names)}); give each once")
    for audit in audits:
        check_inputs(audit, inputs)
        audit.check_inputs(inputs)


def run_audits(audits: list[Audit], inputs: AuditInputs, seed: int = 0) -> dict:
    """{name: finding} of each audit, in order; each draws from its own stream (``seeds`` 'audit', i)."""
    from .. import seeds

    check_audits(audits, inputs)
    findings = {}
    for i, audit in enumerate(audits):
        inputs.reporter.info(f"audit {audit.name} ({i + 1}/{len(audits)})")
        finding = audit.run(inputs, seeds.generator(seed, "audit", i))
        require(isinstance(finding, dict) and isinstance(finding.get("flagged"), bool)
                and isinstance(finding.get("summary"), str),
                f"audit '{audit.name}' returned {type(finding).__name__}; an audit returns a dict with 'flagged' "
                "(bool) and 'summary' (str)")
        findings[audit.name] = {"options": audit.describe(), **finding}
        inputs.reporter.info(f"audit {audit.name}: {'FLAGGED: ' if finding['flagged'] else ''}{finding['summary']}")
    return findings


def report_markdown(title: str, findings: dict, audits: list[Audit]) -> str:
    lines = [f"# {title}", ""]
    flagged = [n for n, f in findings.items() if f["flagged"]]
    lines += [f"**Flagged by {', '.join(flagged)}.**" if flagged else "Nothing flagged.", ""]
    for audit in audits:
        finding = findings[audit.name]
        lines += [f"## {audit.name}{' -- FLAGGED' if finding['flagged'] else ''}", "", *audit.markdown(finding), ""]
    return "\n".join(lines)
