"""What padding every test video to a minimum length (the release's and OpenTAD's rule) changes on the demo.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/eval_padding.py --workdir /tmp/padding [--rounds 5] [--threads 2]

Trains the demo's base model (the `data`, `model` and `train` sections of `studies/demo.yaml`, its
synthetic dataset generated under `--workdir`) unless `--workdir/base` holds it, then evaluates it on
the demo's test videos with the detector's input padded: to the largest stride only (tadprune's
default), to at least the training window (`data.max_seq_len`, what the release does with its
`max_seq_len`), and to twice that. The backbone runs on the video either way (the padding is at the
feature level). Reports mAP per variant, how many detections differ from the unpadded run, the
largest difference of the class logits at valid positions, and the evaluation time of the test
subset, the variants interleaved over `--rounds` rounds (median, with the ratio to the first).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml

from common import markdown_table
from tadmodels.inference import predict, score_results, single_batch
from tadmodels.spec import ExperimentSpec
from tadmodels.training import Experiment, load_model, train_and_save


def variants(window: int) -> dict[str, dict]:
    return {"largest stride (default)": {}, f"min {window} (training window)": {"pad_min_length": window},
            f"min {2 * window}": {"pad_min_length": 2 * window}}


def logits(model, dataset) -> list[torch.Tensor]:
    """The class logits at the valid positions of every test video."""
    found = []
    with torch.inference_mode():
        for index in range(len(dataset)):
            batch = single_batch(model, dataset, dataset[index])
            output = model(batch.inputs, batch.mask)
            found.append(output.cls_logits[output.valid])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--spec", type=Path, default=Path("studies/demo.yaml"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sections = yaml.safe_load(args.spec.read_text())
    sections = {key: sections[key] for key in ("name", "data", "model", "train", "eval")}
    sections["data"]["root"] = str(args.workdir / "data")
    base = args.workdir / "base"
    if not (base / "model.safetensors").exists():
        train_and_save(ExperimentSpec.model_validate(sections), base, show_progress=False)
    model, spec = load_model(base)
    experiment = Experiment.from_spec(spec, model)
    dataset = experiment.dataset(spec.data.test_subset)
    plain = model.detector.config
    runs = {}
    for name, update in variants(spec.data.max_seq_len).items():
        padded = load_model(base)[0]
        padded.detector.config = plain.model_copy(update=update)
        runs[name] = padded
    reference_logits = logits(runs["largest stride (default)"], dataset)
    rows, times = {}, {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, padded in runs.items():
            start = time.perf_counter()
            results = predict(padded, dataset)
            times[name].append(time.perf_counter() - start)
            rows[name] = results
    base_results = rows["largest stride (default)"]
    table = []
    first = statistics.median(times["largest stride (default)"])
    for name, padded in runs.items():
        result = score_results(dataset, rows[name], spec.eval.tious)
        changed = sum(rows[name][video] != base_results[video] for video in base_results)
        worst = max((a - b).abs().max().item() for a, b in zip(logits(padded, dataset), reference_logits))
        median = statistics.median(times[name])
        table.append([name, f"{100 * result.average_mAP:.2f}", " / ".join(f"{100 * v:.2f}" for v in result.per_tiou),
                      f"{changed} / {len(base_results)}", f"{worst:.3f}", f"{median:.2f}", f"{median / first:.2f}"])
    lengths = [dataset[i].length for i in range(len(dataset))]
    print(f"{len(dataset)} test videos of {min(lengths)}-{max(lengths)} grid positions, training window "
          f"{spec.data.max_seq_len}, largest stride {plain.max_stride}, {args.rounds} interleaved rounds, "
          f"{args.threads} threads\n")
    print(markdown_table(["detector input padded to", "average mAP", "mAP @ " + "/".join(f"{t:g}" for t in spec.eval.tious),
                          "videos whose detections change", "max logit difference", "test-set time s", "time ratio"], table))


if __name__ == "__main__":
    main()
