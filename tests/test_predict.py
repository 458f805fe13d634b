"""Detections out: `tadprune predict` writes the results JSON that `tadprune eval` and OpenTAD's
evaluator read, with the mAP `Experiment.evaluate` gives; sliding windows as OpenTAD lays them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from search.cli import app
from search.spec import load_study_spec
from tadmodels.data import generate
from tadmodels.inference import predict, score_results, window_starts
from tadmodels.training import Experiment, load_model


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def opentad_windows(length: int, window: int, overlap: float) -> list[int]:
    """Window starts of OpenTAD's `SlidingWindowDataset.split_video_to_windows` (snippet units)."""
    stride = int(window * (1 - overlap))
    starts = []
    for index in range(max(1, length // stride)):
        start, end = index * stride, index * stride + window
        if end > length:
            starts.append(max(0, length - window))
            break
        starts.append(start)
    return starts


@pytest.mark.parametrize("window, overlap", [(384, 0.5), (16, 0.5), (10, 0.5), (256, 0.25), (10, 0.3)])
def test_windows_are_laid_as_opentad_lays_them(window: int, overlap: float) -> None:
    for length in range(1, 5 * window):
        ours = window_starts(length, window, overlap)
        # OpenTAD repeats a window when the video fits one, or when the last regular window ends
        # exactly at the video's end; those repeats aside, its windows begin ours ...
        theirs = sorted(set(opentad_windows(length, window, overlap)))
        assert ours[:len(theirs)] == theirs, length
        # ... and are all of them where they reach the video's end, which they always do at its test
        # overlap of 0.5; below 0.5 its loop can stop before the end, ours go on.
        if theirs[-1] + min(window, length) == length:
            assert ours == theirs, length
        else:
            assert overlap < 0.5
        assert ours[0] == 0 and ours[-1] + min(window, length) == length
    assert window_starts(10_000, None, 0.5) == [0]


def tiny_model_dir(tiny_setting: Path) -> Path:
    return Path(yaml.safe_load(tiny_setting.read_text())["base_model"])


def test_predict_then_eval_gives_the_experiments_map(tiny_setting: Path, tmp_path: Path) -> None:
    spec = load_study_spec(tiny_setting)
    model, _ = load_model(spec.base_model)
    experiment = Experiment.from_spec(spec, model=model)
    expected = experiment.evaluate(profile=False)

    out = tmp_path / "pred.json"
    result = run("predict", "--model", spec.base_model, "--data", tiny_setting, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    scored = run("eval", "--gt", spec.data.annotations_path, "--pred", out, "--subset", "test", "--json")
    assert scored.exit_code == 0, scored.output
    measured = json.loads(scored.output.strip().splitlines()[-1])
    assert measured["average_mAP"] == pytest.approx(expected["average_mAP"], abs=1e-6)
    assert measured["per_tiou"] == pytest.approx(expected["per_tiou"], abs=1e-6)

    # What OpenTAD's evaluator (`_import_prediction`) reads: results -> video -> label, score, segment.
    content = json.loads(out.read_text())
    assert set(content) == {"results"}
    assert set(content["results"]) == {v.video_id for v in experiment.dataset("test").videos}
    for detections in content["results"].values():
        assert detections
        for detection in detections:
            assert set(detection) == {"label", "score", "segment"}
            assert detection["label"] in experiment.annotations.label_names and isinstance(detection["score"], float)
            start, end = detection["segment"]
            assert 0 <= start <= end

    # A ROOT instead of a spec, in batches of 3: the same detections up to float noise.
    batched = tmp_path / "batched.json"
    result = run("predict", "--model", spec.base_model, "--data", spec.data.root, "--out", batched, "--batch", 3, "--quiet")
    assert result.exit_code == 0, result.output
    again = json.loads(batched.read_text())["results"]
    for video_id, detections in content["results"].items():
        assert len(again[video_id]) == len(detections)
        np.testing.assert_allclose([d["score"] for d in again[video_id]], [d["score"] for d in detections], atol=1e-4)


def test_long_videos_run_in_windows_merged_over_the_video(tiny_setting: Path) -> None:
    spec = load_study_spec(tiny_setting)
    model, _ = load_model(spec.base_model)
    experiment = Experiment.from_spec(spec, model=model)
    dataset = experiment.dataset("test")
    whole = predict(model, dataset)
    lengths = [dataset[i].length for i in range(len(dataset))]
    # A window as long as the longest video is one window per video: nothing changes.
    dataset.config = spec.data.model_copy(update={"inference_window": max(lengths)})
    assert predict(model, dataset) == whole
    window = 16
    dataset.config = spec.data.model_copy(update={"inference_window": window, "inference_overlap": 0.5})
    windowed = predict(model, dataset, batch_size=4)
    assert list(windowed) == list(whole)
    for video, length in zip(dataset.videos, lengths):
        assert len(window_starts(length, window, 0.5)) > 2
        ends = [d["segment"][1] for d in windowed[video.video_id]]
        # Detections come from every part of the video, not only the first window's 16 positions.
        assert max(ends) > video.duration * 0.75
        assert len(ends) <= 200
    assert 0 <= score_results(dataset, windowed, spec.eval.tious).average_mAP <= 1


def test_predict_reads_videos_with_a_frames_model(tiny_setting: Path, tmp_path: Path) -> None:
    spec = load_study_spec(tiny_setting)
    root = generate("demo-videos", tmp_path / "videos", max_videos=2)
    out = tmp_path / "pred.json"
    result = run("predict", "--model", spec.base_model, "--data", root, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert set(json.loads(out.read_text())["results"]) == {"video_test_0000001", "video_test_0000002"}


def test_predict_refuses_data_the_model_cannot_read(tiny_setting: Path, tmp_path: Path) -> None:
    spec = load_study_spec(tiny_setting)
    features = generate("demo-features", tmp_path / "features", max_videos=1)
    out = tmp_path / "pred.json"
    for data, extra, message in [
        (features, [], "the model reads frames/ or videos/ but the root has features/"),
        (tmp_path, [], "no annotations.json; expected a dataset root"),
        (tiny_setting, ["--subset", "nope"], "no videos in subset 'nope'"),
    ]:
        result = run("predict", "--model", spec.base_model, "--data", data, "--out", out, *extra)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())  # rich wraps long lines
    assert not out.exists()
