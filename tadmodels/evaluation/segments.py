"""Columnar segment tables: the ground truth and the predictions that `mean_average_precision` compares."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)  # eq=False: field-wise == on arrays is ambiguous
class Segments:
    """Temporal segments, one row per segment, as parallel arrays.

    Rows keep the order they are given in; for predictions that order breaks score ties (the
    earlier row ranks first). On construction video ids and labels become numpy string arrays
    and times float64, and the rows are checked: finite times, `end >= start`, finite scores.

    `scores` is None for ground truth. `ignored_videos` is for ground truth only: videos whose
    predictions do not count at all, those of the annotation file outside the evaluated subset.
    A prediction for any other video without ground truth of its class is a false positive.
    """

    video_ids: np.ndarray
    labels: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    scores: np.ndarray | None = None
    ignored_videos: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Fixed-width numpy strings rather than object arrays: sorting and searching them runs in C.
        self.video_ids = _strings(self.video_ids)
        self.labels = _strings(self.labels)
        self.starts = np.asarray(self.starts, dtype=np.float64).reshape(-1)
        self.ends = np.asarray(self.ends, dtype=np.float64).reshape(-1)
        numbers = {"starts": self.starts, "ends": self.ends}
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
            numbers["scores"] = self.scores
        lengths = {"video_ids": len(self.video_ids), "labels": len(self.labels),
                   **{name: len(column) for name, column in numbers.items()}}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"Segments columns differ in length: {lengths}")
        for name, column in numbers.items():
            if not np.isfinite(column).all():
                row = int(np.flatnonzero(~np.isfinite(column))[0])
                raise ValueError(f"Segments.{name}[{row}] is {column[row]}; expected a finite number")
        backwards = np.flatnonzero(self.ends < self.starts)
        if backwards.size:
            row = int(backwards[0])
            raise ValueError(f"Segments row {row} (video {str(self.video_ids[row])!r}): segment "
                             f"[{self.starts[row]}, {self.ends[row]}] ends before it starts")
        if self.ignored_videos is not None:
            self.ignored_videos = _strings(self.ignored_videos)
            both = set(self.ignored_videos.tolist()).intersection(self.video_ids.tolist())
            if both:
                raise ValueError(f"Segments: video {min(both)!r} has segments but is in ignored_videos")

    def __len__(self) -> int:
        return len(self.starts)

    def take(self, rows: np.ndarray) -> Segments:
        """The given rows (indices or a boolean mask), in that order; `ignored_videos` kept."""
        return Segments(self.video_ids[rows], self.labels[rows], self.starts[rows], self.ends[rows],
                        None if self.scores is None else self.scores[rows], self.ignored_videos)

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence], ignored_videos: Iterable[str] | None = None) -> Segments:
        """Build from rows `(video_id, label, start, end)` (ground truth) or
        `(video_id, label, start, end, score)` (predictions); an empty list gives an empty table
        without scores, which `mean_average_precision` takes as no predictions."""
        widths = {len(row) for row in rows}
        if not widths <= {4, 5} or len(widths) > 1:
            raise ValueError(f"Segments.from_rows: rows must all be (video_id, label, start, end) or all "
                             f"(video_id, label, start, end, score); got rows of lengths {sorted(widths)}")
        ignored = None if ignored_videos is None else list(ignored_videos)
        if not rows:
            return cls([], [], [], [], ignored_videos=ignored)
        columns = list(zip(*rows))
        return cls(*columns[:4], scores=columns[4] if len(columns) == 5 else None, ignored_videos=ignored)


def _strings(values: Iterable[str] | np.ndarray) -> np.ndarray:
    array = np.asarray(values if isinstance(values, np.ndarray) else list(values))
    if array.size == 0:
        return np.array([], dtype=str)
    if array.dtype.kind != "U":
        array = array.astype(str)
    return array.reshape(-1)
