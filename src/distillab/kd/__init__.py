"""Knowledge distillation: loss terms (one registered class each, ``kd/losses/``), feature taps, teachers, the
objective, and the dark-knowledge meter. Conventions: docs/reference.md §1; see ``kd/functional.py``."""

from . import losses  # noqa: F401  (registers the built-in loss terms)
from .functional import (TINY, attention_loss, attention_map, bucket_kd_loss, kd_loss, logit_mse, noisy_logits,
                         rkd_angle_loss, rkd_angle_potential, rkd_distance_loss, rkd_distance_potential)
from .loss import LOSSES, FeatureTerm, LossInputs, LossTerm, MultiFeatureTerm, parse_loss, register_loss
from .objective import Distillation, Hinton, hinton_losses, label_smoothing_warnings
from .taps import FeatureTaps, make_connector
from .teachers import (CallableTeacher, EnsembleTeacher, ModelTeacher, TableTeacher, TeacherBatch, cache_teacher,
                       load_teacher_model, load_teacher_outputs, resolve_teacher)

__all__ = ["TINY", "attention_loss", "attention_map", "bucket_kd_loss", "kd_loss", "logit_mse", "noisy_logits",
           "rkd_angle_loss",
           "rkd_angle_potential", "rkd_distance_loss", "rkd_distance_potential", "LOSSES", "FeatureTerm", "MultiFeatureTerm",
           "LossInputs", "LossTerm", "parse_loss", "register_loss", "Distillation", "Hinton", "hinton_losses",
           "label_smoothing_warnings", "FeatureTaps", "make_connector", "CallableTeacher", "EnsembleTeacher",
           "ModelTeacher", "TableTeacher", "TeacherBatch", "cache_teacher", "load_teacher_model",
           "load_teacher_outputs", "resolve_teacher"]
