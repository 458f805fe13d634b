"""What writing the demo as H.264 costs: pixel error of the decoded test videos against the `.npy`
frames (and against the noise-free render), file size, and a trained model's mAP on both.

    .venv/bin/python benchmarks/video_fidelity.py --model runs/demo/base [--frames data/demo] [--videos data/demo-videos]

The `demo` and `demo-videos` presets draw the same frames (same seed); `demo-videos` writes them
with `write_video` (libx264, CRF 18, yuv420p) and the loaders decode them with PyAV. Datasets
missing at `--frames` / `--videos` are generated. Over every test video:
- per pixel: mean absolute error (grey levels) decoded vs `.npy` frames;
- 4 x 4 block means: the same on the mean of each 4 x 4 block (what survives 4:2:0 chroma);
- colours: on the pixels the squares cover, the mean RGB of decoded and of `.npy` frames against
  the noise-free render of the same frames (the class is the order of these colours);
- bytes per frame of the `.mp4` files and of the `.npy` arrays;
- with `--model`, the model's mAP per tIoU on the test subset of each (`tadmodels.inference.predict`,
  as `tadprune predict` runs it).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from common import markdown_table
from tadmodels.data import PRESETS, generate, load_annotations, load_video_array
from tadmodels.data.synthetic import render_video
from tadmodels.inference import predict, score_results
from tadmodels.training import Experiment, load_model


def block_means(frames: np.ndarray) -> np.ndarray:
    count, height, width, _ = frames.shape
    return frames.astype(np.float64).reshape(count, height // 4, 4, width // 4, 4, 3).mean(axis=(2, 4))


def clean_frames(video_index: int, seed: int) -> np.ndarray:
    """The demo's test video `video_index` rendered without noise: the same squares."""
    preset = dataclasses.replace(PRESETS["demo"], frame_noise=0.0)
    subset_index = [name for name, _ in preset.subsets].index("test")
    return render_video(preset, seed, subset_index, video_index)[1]


def pixel_errors(frames_root: Path, videos_root: Path, seed: int) -> tuple[list[list], list[list]]:
    frames_config, videos_config = (PRESETS[name].data_config(root, seed) for name, root in
                                    (("demo", frames_root), ("demo-videos", videos_root)))
    annotations = load_annotations(frames_config.annotations_path, frames_config.labels)
    pixel, block, count = 0.0, 0.0, 0
    colour = {"npy": [], "decoded": []}
    for index, video in enumerate(annotations.subset("test")):
        original = np.asarray(load_video_array(frames_config, video)).astype(np.float64)
        decoded = load_video_array(videos_config, video).astype(np.float64)
        clean = clean_frames(index, seed).astype(np.float64)
        pixel += np.abs(decoded - original).sum() / 3
        block += np.abs(block_means(decoded) - block_means(original)).sum() * 16 / 3
        count += original[..., 0].size
        squares = (clean != PRESETS["demo"].background).any(axis=-1)
        for name, frames in (("npy", original), ("decoded", decoded)):
            colour[name].append(np.abs(frames[squares].mean(axis=0) - clean[squares].mean(axis=0)))
    mp4 = sum(p.stat().st_size for p in (videos_root / "videos").glob("video_test_*.mp4"))
    npy = sum(p.stat().st_size for p in (frames_root / "frames").glob("video_test_*.npy"))
    frames_total = sum(round(v.duration * v.fps) for v in annotations.subset("test"))
    errors = [["per pixel", f"{pixel / count:.2f}"], ["4x4 block means", f"{block / count:.2f}"],
              *[[f"square colour |mean - clean| ({name}), R G B", " ".join(f"{c:.2f}" for c in np.mean(colour[name], axis=0))]
                for name in ("npy", "decoded")]]
    sizes = [["mp4", f"{mp4 / frames_total:.0f}"], ["npy", f"{npy / frames_total:.0f}"]]
    return errors, sizes


def test_map(model_dir: Path, root: Path) -> tuple[list[float], float]:
    model, spec = load_model(model_dir)
    experiment = Experiment.from_spec(spec.with_data(spec.data_at(root)), model=model)
    dataset = experiment.dataset("test")
    result = score_results(dataset, predict(model, dataset), spec.eval.tious)
    return list(result.per_tiou), result.average_mAP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=Path, default=Path("data/demo"))
    parser.add_argument("--videos", type=Path, default=Path("data/demo-videos"))
    parser.add_argument("--model", type=Path, help="a model directory trained on the demo (e.g. runs/demo/base)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for preset, root in (("demo", args.frames), ("demo-videos", args.videos)):
        if not (root / "annotations.json").exists():
            generate(preset, root, seed=args.seed)
    errors, sizes = pixel_errors(args.frames, args.videos, args.seed)
    print(markdown_table(["decoded vs .npy (test subset)", "grey levels"], errors))
    print()
    print(markdown_table(["file", "bytes per frame"], sizes))
    if args.model is not None:
        rows = []
        for name, root in (("demo (.npy frames)", args.frames), ("demo-videos (decoded H.264)", args.videos)):
            per_tiou, average = test_map(args.model, root)
            rows.append([name, f"{100 * average:.2f}", *[f"{100 * v:.2f}" for v in per_tiou]])
        tious = load_model(args.model)[1].eval.tious
        print()
        print(markdown_table(["test data", "mAP avg", *[f"@{t:g}" for t in tious]], rows))


if __name__ == "__main__":
    main()
