"""Decode throughput of the `kind: videos` pipeline against plain PyAV, and a first (decoding) epoch
against a cached one.

    .venv/bin/python benchmarks/decode_speed.py [--videos 4] [--seconds 30] [--repeats 9] [--threads 1]

Input: `--videos` synthetic THUMOS14-like videos written here with PyAV (320 x 180, 30 fps,
`--seconds` long, H.264 CRF 18 yuv420p as `write_video` writes): a gradient background, coloured
squares that move, mild noise. Deterministic (seeded).

1. Frames/s, interleaved rounds in one process, each variant decoding every file once per round:
   - pipeline: `decode_video(path, fps, short_side=160, crop=160)`: PyAV decode, RGB conversion of
     the sampled frames, bilinear resize (torch, as cv2 INTER_LINEAR) to 284 x 160, centre crop.
   - plain PyAV: the same container decode, `frame.to_ndarray(width=284, height=160,
     format="rgb24")` (swscale converts and resizes in one pass) of the same frames, then the same
     crop; no timestamps, no sampling logic.
   At fps 30 both take every frame; at fps 7.5 (the paper's THUMOS14 rate) the pipeline takes the
   frame nearest each k / 7.5 and plain PyAV every 4th decoded frame (the same frames at 30 fps).
   Both decode with FFmpeg's automatic threading; torch uses `--threads` threads.
2. Epochs over a `TADDataset` (kind videos, fps 7.5, 160 px) with a frame cache: the first epoch
   in a fresh cache directory decodes and writes every video, the second reads the cache; median
   over `--repeats` fresh caches.
Reported: medians and IQRs of frames out per second, the per-round ratios' median and quartiles,
and the epochs' ratio.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch

from common import markdown_table
from tadmodels.data import DataConfig, VideoDecoding, VideoRecord, decode_video, load_annotations, write_annotations, write_video
from tadmodels.data.dataset import GridGeometry, TADDataset
from tadmodels.data.video import resized_size

WIDTH, HEIGHT, NATIVE_FPS, SIZE = 320, 180, 30.0, 160


def thumos_like_frames(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 [T, 180, 320, 3]: a fixed gradient, three squares moving at constant speed, noise."""
    count = round(seconds * NATIVE_FPS)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack([x * 200 / WIDTH, y * 200 / HEIGHT, np.full_like(x, 60.0)], axis=-1)
    frames = np.broadcast_to(background, (count, HEIGHT, WIDTH, 3)).copy()
    for colour in rng.integers(0, 256, size=(3, 3)):
        start = rng.uniform((0, 0), (WIDTH - 40, HEIGHT - 40))
        velocity = rng.uniform(-2, 2, size=2)
        for t in range(count):
            left, top = (np.abs((start + velocity * t) % (2 * np.array([WIDTH - 40, HEIGHT - 40])))).astype(int)
            left, top = min(left, 2 * (WIDTH - 40) - left), min(top, 2 * (HEIGHT - 40) - top)  # bounce
            frames[t, top:top + 40, left:left + 40] = colour
    frames += rng.normal(0, 4, size=frames.shape)
    return frames.clip(0, 255).astype(np.uint8)


def plain_pyav(path: Path, every: int) -> np.ndarray:
    """Decode, convert and resize every `every`-th frame with PyAV alone, then centre-crop."""
    width, height = resized_size(WIDTH, HEIGHT, SIZE)
    top, left = (height - SIZE) // 2, (width - SIZE) // 2
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index % every == 0:
                frames.append(frame.to_ndarray(width=width, height=height, format="rgb24")[top:top + SIZE, left:left + SIZE])
    return np.stack(frames)


def interleaved(variants: dict[str, Callable[[], int]], repeats: int) -> dict[str, list[float]]:
    """Frames/s of each variant, one call of each per round, rounds interleaved; one untimed round first."""
    for run in variants.values():
        run()
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            frames = run()
            rates[name].append(frames / (time.perf_counter() - start))
    return rates


def median_iqr(values: list[float]) -> str:
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"{statistics.median(values):.0f} ({quartiles[2] - quartiles[0]:.0f})"


def epoch_seconds(root: Path, cache: Path) -> float:
    config = DataConfig(root=root, kind="videos", fps=7.5, video=VideoDecoding(short_side=SIZE, crop=SIZE, cache_dir=cache))
    annotations = load_annotations(config.annotations_path)
    dataset = TADDataset(config, annotations, "test", GridGeometry(2, 2, 16))
    start = time.perf_counter()
    for index in range(len(dataset)):
        dataset[index]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the pipeline's resize)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        paths, records = [], []
        for index in range(args.videos):
            path = root / "videos" / f"video_{index}.mp4"
            write_video(path, thumos_like_frames(args.seconds, rng), NATIVE_FPS)
            paths.append(path)
            records.append(VideoRecord(path.stem, "test", args.seconds, NATIVE_FPS, np.zeros((0, 2)), np.zeros(0)))
        write_annotations(root / "annotations.json", records, ["action"])

        rows = []
        for fps in (NATIVE_FPS, 7.5):
            every = round(NATIVE_FPS / fps)
            # The two must return the same frames' worth of work: check once, then time.
            assert len(decode_video(paths[0], fps, SIZE, SIZE)) == len(plain_pyav(paths[0], every))
            rates = interleaved({
                "pipeline": lambda: sum(len(decode_video(p, fps, SIZE, SIZE)) for p in paths),
                "plain": lambda: sum(len(plain_pyav(p, every)) for p in paths),
            }, args.repeats)
            ratios = [a / b for a, b in zip(rates["pipeline"], rates["plain"])]
            low, _, high = statistics.quantiles(ratios, n=4)
            rows.append([f"{fps:g}", median_iqr(rates["pipeline"]), median_iqr(rates["plain"]),
                         f"{statistics.median(ratios):.2f} ({low:.2f}-{high:.2f})"])
        print(f"{args.videos} videos of {args.seconds:g} s, {WIDTH}x{HEIGHT} at {NATIVE_FPS:g} fps -> "
              f"{SIZE}x{SIZE}; torch threads {args.threads}; {args.repeats} interleaved rounds")
        print(markdown_table(["fps", "pipeline frames out/s median (IQR)", "plain PyAV frames out/s median (IQR)",
                              "pipeline / plain, per round: median (quartiles)"], rows))

        first, cached = [], []
        for round_index in range(args.repeats):
            cache = root / f"cache_{round_index}"
            first.append(epoch_seconds(root, cache))
            cached.append(epoch_seconds(root, cache))
        frames = args.videos * round(args.seconds * 7.5)
        print()
        print(markdown_table(["epoch (fps 7.5)", "s median (IQR)", "frames/s"], [
            ["first: decode + write cache", f"{statistics.median(first):.3f} ({np.subtract(*np.percentile(first, [75, 25])):.3f})",
             f"{frames / statistics.median(first):.0f}"],
            ["cached", f"{statistics.median(cached):.3f} ({np.subtract(*np.percentile(cached, [75, 25])):.3f})",
             f"{frames / statistics.median(cached):.0f}"],
        ]))
        print(f"first / cached: {statistics.median(first) / statistics.median(cached):.1f}x")


if __name__ == "__main__":
    main()
