"""Mean average precision at tIoU thresholds, with the semantics of ActionFormer's `ANETdetection`, vectorized.

`segments` holds the columnar `Segments` tables, `files` reads the annotation and results JSON
files into them, `map` computes the mAP.
"""
from .files import EvaluationInputError, load_ground_truth, load_predictions
from .map import (
    ANET_TIOUS,
    THUMOS14_TIOUS,
    MapResult,
    evaluate_files,
    interpolated_ap,
    mean_average_precision,
    without_duplicates,
)
from .segments import Segments

__all__ = ["ANET_TIOUS", "THUMOS14_TIOUS", "EvaluationInputError", "MapResult", "Segments", "evaluate_files",
           "interpolated_ap", "load_ground_truth", "load_predictions", "mean_average_precision", "without_duplicates"]
