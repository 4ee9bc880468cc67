"""Evaluation protocols, one module each: how a synthetic set is measured. Every module in this folder is imported
here and registers its protocol (``evaluation.register_protocol``): a new protocol is one new file.

- ``distillab``: distillab's own protocol, the default (docs/design.md says why);
- ``vico-dc``, ``vico-dsa``, ``vico-dm``: the evaluations of VICO-UoE/DatasetCondensation's main.py (DC and DSA
  methods) and main_DM.py, as those scripts set them per dataset;
- ``mtt``: GeorgeCazenavette/mtt-distillation's (distill.py), with the set's learned learning rate;
- ``wang2018``: training with the set's own learned schedule (Wang et al. 2018; bptt sets).
"""

from ..registry import Registry

from ..evaluation import PROTOCOLS, EvalProtocol, register_protocol

Registry.discover(__name__, __path__)

from .distillab import AUGMENTS, Protocol  # noqa: E402  (the default; imported with the others above)

DEFAULT = "distillab"


def parse_protocol(text: str | EvalProtocol | None = None, *, trust_code: bool = True) -> EvalProtocol:
    """``vico-dc``, ``vico-dsa:runs=5``, an EvalProtocol (returned as it is), or None (the default)."""
    if isinstance(text, EvalProtocol):
        return text
    return PROTOCOLS.parse(DEFAULT if text is None else text, trust_code=trust_code)


__all__ = ["PROTOCOLS", "EvalProtocol", "register_protocol", "parse_protocol", "Protocol", "AUGMENTS", "DEFAULT"]
