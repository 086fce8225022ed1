"""Benchmark evaluation: PerSeg (mIoU, mAcc, Boundary IoU) and DAVIS 2017 semi-supervised (J, F, J&F).

The numbers agree with the benchmarks' reference evaluation code on valid input; invalid input gets a
clear error instead of a crash, a silent exit or a silently different pairing (see each module).
"""

from persam.evaluation.boundary import boundary_iou, boundary_iou_stats, mask_to_boundary
from persam.evaluation.davis import (
    DavisEvaluationError,
    DavisObjectResult,
    DavisResult,
    DavisSequenceResult,
    evaluate_davis,
    save_full_precision_csvs,
    save_official_csvs,
)
from persam.evaluation.metrics import boundary_f, boundary_map, jaccard, sequence_statistics
from persam.evaluation.perseg import (
    PersegConceptResult,
    PersegEvaluationError,
    PersegImageRecord,
    PersegResult,
    evaluate_perseg,
    format_official,
)

__all__ = [
    "DavisEvaluationError",
    "DavisObjectResult",
    "DavisResult",
    "DavisSequenceResult",
    "PersegConceptResult",
    "PersegEvaluationError",
    "PersegImageRecord",
    "PersegResult",
    "boundary_f",
    "boundary_iou",
    "boundary_iou_stats",
    "boundary_map",
    "evaluate_davis",
    "evaluate_perseg",
    "format_official",
    "jaccard",
    "mask_to_boundary",
    "save_full_precision_csvs",
    "save_official_csvs",
    "sequence_statistics",
]
