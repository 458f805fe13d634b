"""Reading the ground truth (annotation JSON) and the predictions (ActivityNet results JSON) into `Segments`.

Every problem is an `EvaluationInputError` naming the file and the place in it, e.g.
`preds.json: results['vid_3'][2]: 'score' missing`: evaluation files come from other tools and
other people, and a message that points into the file is what makes them fixable.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..collector import gc_paused
from .segments import Segments


class EvaluationInputError(ValueError):
    """An evaluation file that cannot be read as promised; the message names the file and what is wrong."""


# A results file decodes into a few hundred thousand dicts and lists, none in a cycle; their count
# would trigger the cyclic collector again and again while they are made and read (a fifth of the
# decoding time), each time walking all of them: the loaders run with it paused.


@gc_paused()
def load_ground_truth(path: str | Path, subset: str | None = None) -> Segments:
    """Ground-truth segments of an annotation file `{"database": {video_id: {"subset",
    "annotations": [{"label", "segment": [start_s, end_s]}]}}}`, optionally only the videos of
    one subset; the file's other videos become `Segments.ignored_videos`, so that predictions for
    them are ignored rather than counted as false positives. Rows are in file order. Other keys
    ("duration", "fps", "label_id") are not needed here and not read."""
    database = _read_json(path, "database", 'expected {"database": {video_id: {"subset", "annotations"}}}')
    selected = database if subset is None else _select_subset(path, database, subset)
    annotations = {}
    for video_id, entry in selected.items():
        if not isinstance(entry, dict):
            raise EvaluationInputError(f"{path}: database[{video_id!r}]: expected an object with \"annotations\", "
                                       f"got {type(entry).__name__}")
        annotations[video_id] = _field(path, f"database[{video_id!r}]", entry, "annotations")
    segments = _labelled_segments(path, annotations, "database[{!r}]['annotations']", "a list", scored=False)
    if not len(segments):
        within = "" if subset is None else f" in subset {subset!r}"
        raise EvaluationInputError(f"{path}: no annotations{within}, so no classes to evaluate")
    return dataclasses.replace(segments, ignored_videos=[v for v in database if v not in selected])


@gc_paused()
def load_predictions(path: str | Path) -> Segments:
    """Predictions of an ActivityNet results file `{"results": {video_id: [{"label", "score",
    "segment": [start_s, end_s]}]}}`. Rows are in file order (videos in file order, then each
    video's list in order), which is the order that breaks score ties."""
    results = _read_json(path, "results", 'expected {"results": {video_id: [{"label", "score", "segment"}]}}')
    return _labelled_segments(path, results, "results[{!r}]", "a list of predictions", scored=True)


def _labelled_segments(path: str | Path, lists: dict[str, Any], where: str, expected: str, scored: bool) -> Segments:
    """The objects `{"label", "segment", ["score"]}` of each video's list, as `Segments` in file
    order. `where` (formatted with the video id) and `expected` say in messages where a list is
    and what it should be. Files hold tens of thousands of objects: they are checked column by
    column, and only when a check fails walked one by one to say where."""
    segments = _well_formed_segments(lists, scored)
    return segments if segments is not None else Segments.from_rows(_checked_rows(path, lists, where, expected, scored))


def _well_formed_segments(lists: dict[str, Any], scored: bool) -> Segments | None:
    """The segments if every list and every object in them is well formed, else None."""
    if not all(type(entries) is list for entries in lists.values()):
        return None
    flat = [entry for entries in lists.values() for entry in entries]
    try:
        labels = [entry["label"] for entry in flat]
        segments = [entry["segment"] for entry in flat]
        scores = [entry["score"] for entry in flat] if scored else None
    except (KeyError, TypeError):  # an object without a key, or not an object
        return None
    if not (_types(labels) <= {str} and _types(segments) <= {list} and set(map(len, segments)) <= {2}
            and (scores is None or _types(scores) <= _NUMBERS)):
        return None
    starts, ends = [segment[0] for segment in segments], [segment[1] for segment in segments]
    if not (_types(starts) <= _NUMBERS and _types(ends) <= _NUMBERS):
        return None
    video_ids = np.repeat(np.array(list(lists), dtype=str), [len(entries) for entries in lists.values()])
    try:
        return Segments(video_ids, np.array(labels, dtype=str), starts, ends, scores)
    except (ValueError, OverflowError):  # not finite, or a segment that ends before it starts
        return None


_NUMBERS = {int, float}  # what JSON numbers load as; bool, a subclass of int, is not one


def _types(values: list[Any]) -> set[type]:
    return set(map(type, values))


def _checked_rows(path: str | Path, lists: dict[str, Any], where: str, expected: str, scored: bool) -> list[tuple]:
    """The segments as rows, checked one by one: the first bad one raises, naming its place."""
    rows = []
    for video_id, entries in lists.items():
        place = where.format(video_id)
        if not isinstance(entries, list):
            raise EvaluationInputError(f"{path}: {place}: expected {expected}, got {type(entries).__name__}")
        for index, entry in enumerate(entries):
            label, start, end = _labelled_segment(path, f"{place}[{index}]", entry)
            if not scored:
                rows.append((video_id, label, start, end))
                continue
            score = _field(path, f"{place}[{index}]", entry, "score")
            if not _is_finite_number(score):
                raise EvaluationInputError(f"{path}: {place}[{index}]['score']: expected a finite number, got {score!r}")
            rows.append((video_id, label, start, end, float(score)))
    return rows


def _read_json(path: str | Path, key: str, expected: str) -> dict[str, Any]:
    """The object under `key` of a JSON file."""
    try:
        with open(path, encoding="utf-8") as file:
            content = _parse_json(file.read())
    except FileNotFoundError:
        raise EvaluationInputError(f"{path}: file does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise EvaluationInputError(f"{path}: cannot be read: {error}") from None
    except ValueError as error:  # json.JSONDecodeError, or a duplicate key
        raise EvaluationInputError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(content, dict) or key not in content:
        raise EvaluationInputError(f"{path}: no {key!r} key at the top level; {expected}")
    if not isinstance(content[key], dict):
        raise EvaluationInputError(f"{path}: {key!r} must be an object mapping video ids to videos, "
                                   f"got {type(content[key]).__name__}")
    return content[key]


def _parse_json(text: str) -> Any:
    """`json.loads`, refusing a key repeated in an object outside any list: the file's sections,
    the video-id mappings and each video's entry, where json would silently keep the last value
    and lose a video. Lists (of annotations, of predictions) go to the C decoder whole: a check on
    each of their tens of thousands of objects would cost a fifth of the decoding time."""
    value, end = _json_value(text, _skip_space(text, 0))
    end = _skip_space(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, index: int) -> int:
    return _SPACE.match(text, index).end()


def _json_value(text: str, index: int) -> tuple[Any, int]:
    """The JSON value at `index` and where it ends; objects member by member, anything else by `json`."""
    if not text.startswith("{", index):
        return _DECODER.raw_decode(text, index)
    result: dict[str, Any] = {}
    index = _skip_space(text, index + 1)
    if text.startswith("}", index):
        return result, index + 1
    while True:
        if not text.startswith('"', index):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, index)
        key, index = json.decoder.scanstring(text, index + 1)
        index = _skip_space(text, index)
        if not text.startswith(":", index):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key], index = _json_value(text, _skip_space(text, index + 1))
        index = _skip_space(text, index)
        if text.startswith("}", index):
            return result, index + 1
        if not text.startswith(",", index):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
        index = _skip_space(text, index + 1)


def _select_subset(path: str | Path, database: dict[str, Any], subset: str) -> dict[str, Any]:
    subsets = {}
    for video_id, entry in database.items():
        if not isinstance(entry, dict) or "subset" not in entry:
            raise EvaluationInputError(f"{path}: database[{video_id!r}]: 'subset' missing "
                                       f"(needed to select subset {subset!r})")
        subsets[video_id] = entry["subset"]
    # Case-insensitive, as ActionFormer compares (`subset.lower()`): its THUMOS14 file says "Validation".
    selected = {video_id: entry for video_id, entry in database.items()
                if str(subsets[video_id]).lower() == subset.lower()}
    if not selected:
        known = sorted({str(name) for name in subsets.values()})
        raise EvaluationInputError(f"{path}: no videos in subset {subset!r}; the subsets are {known}")
    return selected


def _field(path: str | Path, where: str, entry: dict[str, Any], key: str) -> Any:
    if key not in entry:
        raise EvaluationInputError(f"{path}: {where}: {key!r} missing")
    return entry[key]


def _labelled_segment(path: str | Path, where: str, entry: Any) -> tuple[str, float, float]:
    """The label and the `[start, end]` of an annotation or prediction object, checked."""
    if not isinstance(entry, dict):
        raise EvaluationInputError(f"{path}: {where}: expected an object, got {type(entry).__name__}")
    label = _field(path, where, entry, "label")
    if not isinstance(label, str):
        raise EvaluationInputError(f"{path}: {where}['label']: expected a string (labels match by name), "
                                   f"got {label!r}")
    segment = _field(path, where, entry, "segment")
    if not (isinstance(segment, list) and len(segment) == 2 and all(map(_is_finite_number, segment))):
        raise EvaluationInputError(f"{path}: {where}['segment']: expected [start_s, end_s] with finite numbers, "
                                   f"got {segment!r}")
    start, end = float(segment[0]), float(segment[1])
    if end < start:
        raise EvaluationInputError(f"{path}: {where}['segment']: [{start}, {end}] ends before it starts")
    return label, start, end


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
