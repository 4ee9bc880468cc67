"""Audits of synthetic sets: poisoning (labels a trusted model disputes, class statistics, the confusions a set
teaches) and privacy (memorisation, membership inference). One file each in ``checks/``, registered by name."""

from . import checks  # noqa: F401  (registers the built-in audits)
from .audit import AUDITS, Audit, AuditInputs, check_audits, default_audits, parse_audit, register_audit, report_markdown, run_audits

__all__ = ["AUDITS", "Audit", "AuditInputs", "check_audits", "default_audits", "parse_audit", "register_audit", "report_markdown",
           "run_audits"]
