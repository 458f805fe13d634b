import json
import re

import numpy as np
import pytest

from tadmodels.evaluation import (
    ANET_TIOUS,
    THUMOS14_TIOUS,
    EvaluationInputError,
    MapResult,
    Segments,
    evaluate_files,
    interpolated_ap,
    load_ground_truth,
    load_predictions,
    mean_average_precision,
    without_duplicates,
)
from tadmodels.evaluation.reference import reference_average_precision


def reference_per_class(gt_rows, pred_rows, tious, ignored_videos=None) -> dict[str, list[float]]:
    return reference_average_precision(Segments.from_rows(gt_rows, ignored_videos), Segments.from_rows(pred_rows),
                                       tious)


def evaluate_rows(gt_rows, pred_rows, tious=THUMOS14_TIOUS, ignored_videos=None) -> MapResult:
    return mean_average_precision(Segments.from_rows(gt_rows, ignored_videos), Segments.from_rows(pred_rows), tious)


# --- Hand-computed answers ----------------------------------------------------------------------

def test_hand_computed_map_with_a_duplicate_detection():
    gt = [("v", "A", 0.0, 10.0), ("v", "A", 20.0, 30.0)]
    pred = [
        ("v", "A", 0.0, 10.0, 0.9),   # tIoU 1 with the first GT: TP
        ("v", "A", 1.0, 10.0, 0.8),   # tIoU 0.9 with the first GT, already taken: duplicate, FP
        ("v", "A", 20.0, 25.0, 0.7),  # tIoU 5/10 = 0.5 with the second GT: TP up to 0.5, FP above
        ("v", "A", 50.0, 60.0, 0.6),  # overlaps nothing: FP
    ]
    result = evaluate_rows(gt, pred)
    # tIoU 0.3-0.5: hits 1,0,1,0 -> precision 1, 1/2, 2/3, 1/2; recall 1/2, 1/2, 1, 1.
    #   envelope of [0, 1, .5, .667, .5, 0] = [1, 1, .667, .667, .5, 0]; recall steps 0->1/2 at
    #   rank 1 and 1/2->1 at rank 3: AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    # tIoU 0.6, 0.7: hits 1,0,0,0 -> recall steps only 0->1/2 at rank 1 (precision 1), then the
    #   appended recall 1 has precision 0: AP = 1/2.
    expected = (5 / 6, 5 / 6, 5 / 6, 1 / 2, 1 / 2)
    assert result.per_tiou == pytest.approx(expected, abs=1e-15)
    assert result.per_class["A"] == pytest.approx(expected, abs=1e-15)
    # Average over the five thresholds: (3 * 5/6 + 2 * 1/2) / 5 = 3.5 / 5.
    assert result.average_mAP == pytest.approx(0.7, abs=1e-15)
    assert result.to_json() == {"tious": list(THUMOS14_TIOUS), "per_tiou": list(result.per_tiou),
                                "average_mAP": result.average_mAP}


def test_score_ties_keep_row_order():
    gt = [("v", "A", 0.0, 10.0)]
    miss, hit = ("v", "A", 50.0, 60.0, 0.5), ("v", "A", 0.0, 10.0, 0.5)
    # Miss ranked first: hits 0,1 -> precision 0, 1/2; recall 0, 1 -> AP = 1 * 1/2.
    assert evaluate_rows(gt, [miss, hit], (0.5,)).per_tiou == (0.5,)
    # Hit ranked first: recall 1 at precision 1 -> AP = 1.
    assert evaluate_rows(gt, [hit, miss], (0.5,)).per_tiou == (1.0,)


def test_equal_tiou_ties_go_to_the_earlier_ground_truth_row():
    left, right = ("v", "A", 0.0, 10.0), ("v", "A", 10.0, 20.0)
    # The first prediction has tIoU 5/15 with both GTs; the second matches only the left one.
    pred = [("v", "A", 5.0, 15.0, 0.9), ("v", "A", 0.0, 10.0, 0.8)]
    # Left GT first: the first prediction takes it, the second is a FP: hits 1,0 -> AP = 1/2 * 1.
    assert evaluate_rows([left, right], pred, (0.3,)).per_tiou == (0.5,)
    # Right GT first: the first prediction takes the right one, the second the left: AP = 1.
    assert evaluate_rows([right, left], pred, (0.3,)).per_tiou == (1.0,)


def test_a_prediction_takes_the_best_unmatched_ground_truth():
    gt = [("v", "A", 0.0, 10.0), ("v", "A", 4.0, 14.0)]
    pred = [("v", "A", 0.0, 10.0, 0.9),  # tIoU 1 with the first, 6/14 with the second: takes the first
            ("v", "A", 1.0, 11.0, 0.8)]  # tIoU 9/11 with the (taken) first, 7/13 with the second
    # At 0.5 the second prediction falls back to the second GT (7/13 >= 0.5): AP = 1.
    # At 0.6 it has no unmatched GT left above the threshold: hits 1,0 -> AP = 1/2.
    assert evaluate_rows(gt, pred, (0.5, 0.6)).per_tiou == (1.0, 0.5)


def test_a_class_without_predictions_scores_zero():
    gt = [("v", "A", 0.0, 10.0), ("v", "B", 20.0, 30.0)]
    result = evaluate_rows(gt, [("v", "A", 0.0, 10.0, 0.9)], (0.5,))
    assert result.per_class == {"A": (1.0,), "B": (0.0,)}
    assert result.per_tiou == (0.5,)


def test_predictions_for_labels_outside_the_ground_truth_are_ignored():
    gt = [("v", "A", 0.0, 10.0)]
    pred = [("v", "not a class", 0.0, 10.0, 0.9), ("v", "A", 0.0, 10.0, 0.5)]
    assert evaluate_rows(gt, pred).per_class == {"A": (1.0,) * 5}


def test_predictions_for_videos_without_ground_truth_are_false_positives():
    gt = [("v", "A", 0.0, 10.0), ("w", "B", 0.0, 10.0)]
    # "elsewhere" is not in the ground truth at all; "w" has no A: both false positives.
    pred = [("elsewhere", "A", 0.0, 10.0, 0.9), ("w", "A", 0.0, 10.0, 0.8), ("v", "A", 0.0, 10.0, 0.5)]
    # A: hits 0,0,1 -> precision 1/3 at recall 1 -> AP 1/3; B has no predictions: 0.
    assert evaluate_rows(gt, pred, (0.5,)).per_class == {"A": (1 / 3,), "B": (0.0,)}


def test_predictions_for_ignored_videos_are_ignored():
    gt = [("v", "A", 0.0, 10.0)]
    pred = [("other subset", "A", 0.0, 10.0, 0.9), ("v", "A", 0.0, 10.0, 0.5)]
    assert evaluate_rows(gt, pred, (0.5,), ignored_videos=["other subset"]).per_tiou == (1.0,)
    assert evaluate_rows(gt, pred, (0.5,)).per_tiou == (0.5,)  # not ignored: a FP ranked first
    with pytest.raises(ValueError, match="'v' has segments but is in ignored_videos"):
        Segments.from_rows(gt, ignored_videos=["v"])


def test_repeated_ground_truth_segments_count_once():
    pred = [("v", "A", 0.0, 10.0, 0.9)]
    # Counted twice, the one hit would be recall 1/2 (AP 1/2); removed, it is recall 1.
    assert evaluate_rows([("v", "A", 0.0, 10.0)] * 2, pred, (0.5,)).per_tiou == (1.0,)
    # Within 1 ms at both ends is a repeat too; 2 ms away at one end is not (AP 1/2).
    assert evaluate_rows([("v", "A", 0.0, 10.0), ("v", "A", 0.0009, 9.9991)], pred, (0.5,)).per_tiou == (1.0,)
    assert evaluate_rows([("v", "A", 0.0, 10.0), ("v", "A", 0.0, 10.002)], pred, (0.5,)).per_tiou == (0.5,)
    # The same times under another label or in another video are not repeats: A keeps its one
    # segment (AP 1), B's has no prediction (AP 0).
    assert evaluate_rows([("v", "A", 0.0, 10.0), ("v", "B", 0.0, 10.0)], pred, (0.5,)).per_tiou == (0.5,)
    two_videos = [("v", "A", 0.0, 10.0), ("w", "A", 0.0, 10.0)]
    assert evaluate_rows(two_videos, pred, (0.5,)).per_tiou == (0.5,)


def test_duplicates_are_judged_against_the_segments_kept():
    # Starts 0, 0.0008, 0.0016 (ends alike): the second repeats the first and goes; the third is
    # 0.0008 from the dropped second but 0.0016 from the kept first, so it stays.
    chain = Segments.from_rows([("v", "A", 0.0, 10.0), ("v", "A", 0.0008, 10.0008), ("v", "A", 0.0016, 10.0016)])
    assert without_duplicates(chain).starts.tolist() == [0.0, 0.0016]
    # Row order decides which of two repeats stays, and rows keep their order.
    rows = [("v", "B", 5.0, 6.0), ("v", "A", 0.0005, 10.0), ("w", "A", 0.0, 10.0), ("v", "A", 0.0, 10.0)]
    kept = without_duplicates(Segments.from_rows(rows))
    assert list(zip(kept.video_ids.tolist(), kept.starts.tolist())) == [("v", 5.0), ("v", 0.0005), ("w", 0.0)]


def test_segments_shorter_than_a_millisecond_are_removed():
    # The point GT and the 0.5 ms GT go: one positive left, which the second prediction hits.
    gt = [("v", "A", 5.0, 5.0), ("v", "A", 7.0, 7.0005), ("v", "A", 0.0, 10.0)]
    pred = [("v", "A", 5.0, 5.0, 0.9), ("v", "A", 0.0, 10.0, 0.8)]
    # The point prediction has tIoU 0 with the interval: FP; then a TP. hits 0,1 -> AP = 1 * 1/2.
    assert evaluate_rows(gt, pred, (0.5,)).per_tiou == (0.5,)
    # A removed short segment does not make a later one a repeat: [0, 0.0009] goes for its
    # length, [0, 0.0015] (within 1 ms of it at both ends) stays.
    short_first = Segments.from_rows([("v", "A", 0.0, 0.0009), ("v", "A", 0.0, 0.0015)])
    assert without_duplicates(short_first).ends.tolist() == [0.0015]
    # A class whose segments are all too short is no class.
    assert evaluate_rows([("v", "A", 0.0, 10.0), ("v", "B", 1.0, 1.0)], pred, (0.5,)).per_class == {"A": (0.5,)}
    with pytest.raises(ValueError, match="none at least 1 ms long"):
        evaluate_rows([("v", "A", 1.0, 1.0)], pred)


def test_interpolated_ap_follows_activitynet():
    # envelope of [0, 1, 0.5, 2/3, 0] is [1, 1, 2/3, 2/3, 0]: 0.5 * 1 + 0.5 * 2/3
    assert interpolated_ap(np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])) == pytest.approx(5 / 6)
    assert interpolated_ap(np.ones((2, 3)), np.full((2, 3), 0.25)).tolist() == [0.25, 0.25]


def test_threshold_constants():
    assert THUMOS14_TIOUS == (0.3, 0.4, 0.5, 0.6, 0.7)
    assert ANET_TIOUS == tuple(np.linspace(0.5, 0.95, 10))


def test_bad_in_memory_input():
    gt = Segments.from_rows([("v", "A", 0.0, 10.0)])
    with pytest.raises(ValueError, match="no scores"):
        mean_average_precision(gt, gt)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        mean_average_precision(gt, Segments.from_rows([]), (0.5, 1.5))
    with pytest.raises(ValueError, match="ends before it starts"):
        Segments.from_rows([("v", "A", 10.0, 0.0)])
    with pytest.raises(ValueError, match=r"scores\[0\] is nan"):
        Segments.from_rows([("v", "A", 0.0, 1.0, float("nan"))])


# --- Files --------------------------------------------------------------------------------------

def write(path, content) -> str:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def annotation(label, start, end):
    return {"label": label, "label_id": 0, "segment": [start, end]}


DATABASE = {
    "t1": {"subset": "test", "duration": 60.0, "fps": 30.0,
           "annotations": [annotation("A", 0.0, 10.0), annotation("B", 20.0, 30.0)]},
    "t2": {"subset": "test", "duration": 60.0, "fps": 30.0, "annotations": []},
    "v1": {"subset": "validation", "duration": 60.0, "fps": 30.0,
           "annotations": [annotation("A", 0.0, 10.0), annotation("C", 40.0, 50.0)]},
}


def test_files_and_subset_filter(tmp_path):
    gt = write(tmp_path / "gt.json", {"database": DATABASE})
    pred = write(tmp_path / "pred.json", {"results": {
        "v1": [{"label": "A", "score": 0.99, "segment": [30.0, 40.0]}],  # validation video: ignored with subset
        "t2": [{"label": "A", "score": 0.95, "segment": [0.0, 10.0]}],   # test video without GT: a FP
        "t1": [{"label": "A", "score": 0.9, "segment": [0.0, 10.0]},
               {"label": "B", "score": 0.8, "segment": [20.0, 30.0]}],
    }})
    result = evaluate_files(gt, pred, subset="test", tious=(0.5,))
    # A: hits 0 (t2), 1 (t1) -> AP = 1/2; B: AP = 1; C is not a test class. mAP = 3/4.
    assert result.per_class == {"A": (0.5,), "B": (1.0,)}
    assert result.per_tiou == (0.75,)
    # Subset names are compared as ActionFormer compares them, case-insensitively ("Test" in its THUMOS14 file).
    assert evaluate_files(gt, pred, subset="Test", tious=(0.5,)) == result
    # Without the filter the validation FP ranks first for A, and class C has no predictions:
    # A: hits 0,0,1 -> recall 1/2 at precision 1/3 -> AP 1/6; B: 1; C: 0.
    assert evaluate_files(gt, pred, tious=(0.5,)).per_class == {"A": (1 / 6,), "B": (1.0,), "C": (0.0,)}

    segments = load_ground_truth(gt, subset="test")
    assert segments.video_ids.tolist() == ["t1", "t1"] and segments.ignored_videos.tolist() == ["v1"]
    assert segments.scores is None
    predictions = load_predictions(pred)
    assert predictions.video_ids.tolist() == ["v1", "t2", "t1", "t1"]  # file order
    assert predictions.scores.tolist() == [0.99, 0.95, 0.9, 0.8]


def test_files_read_column_by_column_give_the_rows_in_file_order(tmp_path):
    results = {"b": [{"label": "A", "score": 1, "segment": [0, 2.5]}, {"label": "B", "score": 0.5, "segment": [1.0, 3]}],
               "a": [], "c": [{"label": "A", "score": 0.25, "segment": [4, 4], "extra": "ignored"}]}
    loaded = load_predictions(write(tmp_path / "pred.json", {"results": results}))
    assert loaded.video_ids.tolist() == ["b", "b", "c"] and loaded.labels.tolist() == ["A", "B", "A"]
    assert loaded.starts.tolist() == [0.0, 1.0, 4.0] and loaded.ends.tolist() == [2.5, 3.0, 4.0]
    assert loaded.scores.tolist() == [1.0, 0.5, 0.25] and loaded.starts.dtype == np.float64
    empty = load_predictions(write(tmp_path / "empty.json", {"results": {"a": []}}))
    assert len(empty) == 0


def prediction(**fields):
    """A results file whose third prediction for vid_3 has exactly `fields`."""
    return {"results": {"vid_3": [{"label": "A", "score": 0.5, "segment": [0, 1]}] * 2 + [fields]}}


THIRD = r"results\['vid_3'\]\[2\]"


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"results": {"a": [], "a": []}}', "not valid JSON: duplicate key 'a'"),
    ('{"results": {}} {}', "not valid JSON: Extra data: line 1 column 17"),
    ('{"results" {}}', "not valid JSON: Expecting ':' delimiter: line 1 column 12"),
    ('{"results": {"a": [] "b": []}}', "not valid JSON: Expecting ',' delimiter: line 1 column 22"),
    ('{"results": {"a": [{"label": "A",}]}}', "not valid JSON: Expecting property name enclosed in double quotes"),
    ('', "not valid JSON: Expecting value: line 1 column 1"),
    ({"database": {}}, "no 'results' key at the top level"),
    ({"results": []}, "'results' must be an object"),
    ({"results": {"vid_3": {}}}, r"results\['vid_3'\]: expected a list of predictions"),
    (prediction(label="A", segment=[0, 1]), THIRD + ": 'score' missing"),
    (prediction(label="A", score="high", segment=[0, 1]), THIRD + r"\['score'\]: expected a finite"),
    (prediction(label="A", score=True, segment=[0, 1]), THIRD + r"\['score'\]: expected a finite"),
    (prediction(label="A", score=0.5, segment=[0, "1"]), THIRD + r"\['segment'\]: expected \[start_s, end_s\]"),
    ({"results": {"vid_3": [{"label": "A", "score": 0.5, "segment": [0, 1]}, 7]}},
     r"results\['vid_3'\]\[1\]: expected an object"),
    (prediction(score=0.5, segment=[0, 1]), THIRD + ": 'label' missing"),
    (prediction(label=3, score=0.5, segment=[0, 1]), THIRD + r"\['label'\]: expected a string"),
    (prediction(label="A", score=0.5, segment=[0]), THIRD + r"\['segment'\]: expected \[start_s, end_s\]"),
    (prediction(label="A", score=0.5, segment=[5, 3]), THIRD + r"\['segment'\]: \[5.0, 3.0\] ends before it starts"),
])
def test_bad_prediction_files_name_the_file_and_the_place(tmp_path, content, message):
    path = write(tmp_path / "preds.json", content)
    with pytest.raises(EvaluationInputError, match=re.escape(path) + ": " + message):
        load_predictions(path)


@pytest.mark.parametrize("content, subset, message", [
    ({"results": {}}, None, "no 'database' key at the top level"),
    ('{"database": {"v": {"subset": "test", "annotations": [], "subset": "val"}}}', None,
     "not valid JSON: duplicate key 'subset'"),
    ({"database": {"v": {"subset": "test"}}}, None, r"database\['v'\]: 'annotations' missing"),
    ({"database": {"v": {"annotations": [{"label": "A", "segment": [2, 1]}]}}}, None,
     r"database\['v'\]\['annotations'\]\[0\]\['segment'\]: \[2.0, 1.0\] ends before it starts"),
    ({"database": DATABASE}, "tst", r"no videos in subset 'tst'; the subsets are \['test', 'validation'\]"),
    ({"database": {"v": {"annotations": []}}}, "test", r"database\['v'\]: 'subset' missing"),
    ({"database": {"t2": DATABASE["t2"]}}, "test", "no annotations in subset 'test'"),
])
def test_bad_ground_truth_files_name_the_file_and_the_place(tmp_path, content, subset, message):
    path = write(tmp_path / "gt.json", content)
    with pytest.raises(EvaluationInputError, match=re.escape(path) + ": " + message):
        load_ground_truth(path, subset)


def test_the_eval_command(tmp_path):
    from typer.testing import CliRunner

    from search.cli import app

    gt = write(tmp_path / "gt.json", {"database": DATABASE})
    pred = write(tmp_path / "pred.json", {"results": {"t1": [{"label": "A", "score": 0.9, "segment": [0.0, 10.0]}]}})
    result = CliRunner().invoke(app, ["eval", "--gt", gt, "--pred", pred, "--subset", "test", "--tiou", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    # A: AP 1; B: no predictions, 0.
    assert json.loads(result.output.splitlines()[-1]) == {"per_tiou": [0.5], "average_mAP": 0.5}
    table = CliRunner().invoke(app, ["eval", "--gt", gt, "--pred", pred, "--subset", "test"])
    assert table.exit_code == 0 and "average" in table.output and "50.00" in table.output
    bad = CliRunner().invoke(app, ["eval", "--gt", gt, "--pred", str(tmp_path / "nowhere.json")])
    assert bad.exit_code == 2 and "nowhere.json: file does not exist" in " ".join(bad.output.split())


def test_a_missing_file(tmp_path):
    with pytest.raises(EvaluationInputError, match="does not exist"):
        load_predictions(tmp_path / "nowhere.json")


# --- Agreement with the reference on random inputs ------------------------------------------------

def random_case(rng: np.random.Generator):
    """Few videos and classes, times on a coarse grid and scores from a few values, so that ground
    truths overlap each other and tIoU and score ties are common; some ground truth repeated
    (exactly, or within 1 ms at both ends, or 1-2 ms off) or shorter than 1 ms; predictions for
    videos the ground truth does not know ("unknown") and for an ignored one ("ignored")."""
    videos = [f"v{i}" for i in range(rng.integers(1, 4))]
    classes = [f"c{i}" for i in range(rng.integers(1, 4))]

    def segment():
        start = float(rng.integers(0, 40)) / 2
        return start, start + float(rng.integers(0, 16)) / 2

    gt = [(str(rng.choice(videos)), str(rng.choice(classes)), *segment()) for _ in range(rng.integers(1, 12))]
    for _ in range(rng.integers(0, 4)):  # near repeats: about half within the 1 ms tolerance
        video, label, start, end = gt[rng.integers(len(gt))]
        start, end = start + rng.integers(-2, 3) * 6e-4, end + rng.integers(-2, 3) * 6e-4
        gt.insert(int(rng.integers(len(gt) + 1)), (video, label, start, max(start, end)))
    pred = []
    for _ in range(rng.integers(0, 40)):
        video, label = str(rng.choice(videos + ["unknown", "ignored"])), str(rng.choice(classes + ["other"]))
        if gt and rng.random() < 0.6:  # a jittered copy of a ground truth
            video, label, start, end = gt[rng.integers(len(gt))]
            start, end = start + rng.integers(-2, 3) / 2, end + rng.integers(-2, 3) / 2
            start, end = min(start, end), max(start, end)
        else:
            start, end = segment()
        pred.append((video, label, start, end, float(rng.integers(1, 6)) / 5))
    return gt, pred


@pytest.mark.parametrize("tious", [THUMOS14_TIOUS, ANET_TIOUS, (0.0, 0.5, 1.0)])
def test_agrees_with_the_reference_loop(tious):
    rng = np.random.default_rng(0)
    compared = 0
    for _ in range(150):
        gt, pred = random_case(rng)
        if not any(end - start >= 1e-3 for _, _, start, end in gt):
            continue  # nothing left to evaluate (tested on its own)
        compared += 1
        result = evaluate_rows(gt, pred, tious, ignored_videos=["ignored"])
        expected = reference_per_class(gt, pred, tious, ignored_videos=["ignored"])
        assert result.per_class.keys() == expected.keys()
        for name, aps in expected.items():
            np.testing.assert_allclose(result.per_class[name], aps, rtol=0, atol=1e-12)
        np.testing.assert_allclose(result.per_tiou, np.mean(list(expected.values()), axis=0), rtol=0, atol=1e-12)
    assert compared > 120


def test_agrees_with_the_reference_on_crowded_videos():
    # Dozens of predictions competing for heavily overlapping ground truths: long chains of
    # "the best one is taken, fall back to the next", which the vectorized matching resolves in rounds.
    rng = np.random.default_rng(1)
    for _ in range(10):
        starts = np.sort(rng.uniform(0, 30, 25))
        gt = [("v", "A", float(s), float(s + rng.uniform(1, 6))) for s in starts]
        centres = rng.uniform(0, 33, 120)
        widths = rng.uniform(0.5, 6, 120)
        pred = [("v", "A", float(c - w / 2), float(c + w / 2), float(rng.integers(0, 30)) / 30)
                for c, w in zip(centres, widths)]
        expected = reference_per_class(gt, pred, ANET_TIOUS)["A"]
        np.testing.assert_allclose(evaluate_rows(gt, pred, ANET_TIOUS).per_class["A"], expected, rtol=0, atol=1e-12)
