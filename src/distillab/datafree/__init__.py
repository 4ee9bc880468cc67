"""Teaching without the data: teacher metadata (records), data-free methods (one file each in ``methods/``) and the
transfer sets they make."""

from . import methods  # noqa: F401  (registers the built-in methods)
from .method import DATAFREE, DataFreeMethod, FrozenTeacher, parse_datafree, register_datafree, synthesize
from .records import KINDS, TeacherRecords, model_digest, record
from .transfer import transfer_set, transfer_splits

__all__ = ["DATAFREE", "DataFreeMethod", "FrozenTeacher", "parse_datafree", "register_datafree", "synthesize",
           "KINDS", "TeacherRecords", "model_digest", "record", "transfer_set", "transfer_splits"]
