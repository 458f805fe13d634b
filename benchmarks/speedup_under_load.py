"""Speed-up of the 3-block PBD model over the demo base model, idle and beside a competing process.

The demo base model (`studies/demo.yaml`: VideoMAE-tiny, 8 blocks, one `max_seq_len` window) and
the same model with 3 blocks dropped are timed side by side (`tadmodels.profile.model_latencies`:
adaptive interleaved rounds, the speed-up as the median of per-round ratios) in alternating phases:
"idle" (nothing started by this script; the machine is shared, so its load average is reported)
and "loaded" (one CPU-bound busy-loop process pinned to the same core as the timing). The claim to
check: the loaded speed-up within 10% of the idle one.

For contrast, the old way: each model timed alone (fixed 10 rounds, as `latency_repeats` did),
the base model in an idle phase and the compressed model in the next loaded phase, their ratio
taken as the speed-up: two absolute times measured at different moments.

Weights do not change what a forward pass computes, so by default the models are untrained and
the 3 blocks are dropped without alignment (`--model` and `--compressed` take trained model
directories instead, e.g. `runs/demo/base` and the output of `tadprune compress --greedy --blocks 3`).
Any 3 of the 8 identical ViT blocks time the same; the default drops the last three.

    nice python benchmarks/speedup_under_load.py [--pairs 3] [--core 0] [--threads 1]
        [--model runs/demo/base --compressed runs/demo/greedy3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from common import markdown_table
from search.spec import load_study_spec
from tadmodels.models import TADModel
from tadmodels.profile import TimingConfig, model_latencies, model_latency
from tadmodels.training import load_model

OLD_WAY = TimingConfig(warmup=5, min_repeats=10, max_repeats=10)  # what `eval.latency_repeats: 10` meant


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("studies/demo.yaml"), help="spec of the base model")
    parser.add_argument("--model", type=Path, default=None, help="trained base model directory (default: untrained)")
    parser.add_argument("--compressed", type=Path, default=None, help="compressed model directory (with --model)")
    parser.add_argument("--drop", default="backbone.blocks.5,backbone.blocks.6,backbone.blocks.7",
                        help="blocks dropped from the base model when --compressed is not given")
    parser.add_argument("--pairs", type=int, default=3, help="idle/loaded phase pairs, alternating")
    parser.add_argument("--core", type=int, default=0, help="the core the timing and the competing process share")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while timing (the demo study's)")
    return parser.parse_args()


def load_models(args: argparse.Namespace) -> tuple[TADModel, TADModel, int]:
    """The base and the compressed model, and the timed window's grid positions."""
    spec = load_study_spec(args.study)
    if args.model is None:
        torch.manual_seed(0)
        base = TADModel(spec.model).eval()
        return base, base.without_blocks(args.drop.split(",")), spec.data.max_seq_len
    base, base_spec = load_model(args.model)
    compressed = load_model(args.compressed)[0] if args.compressed else base.without_blocks(args.drop.split(","))
    return base, compressed, base_spec.data.max_seq_len


@contextmanager
def competing_process(core: int | None):
    """One busy loop pinned to `core` (None: no competing process)."""
    if core is None:
        yield
        return
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(busy.pid, {core})
        time.sleep(1.0)  # let it take its share of the core before timing starts
        yield
    finally:
        busy.kill()
        busy.wait()


def phase(name: str, models: dict[str, TADModel], positions: int, threads: int, core: int | None) -> dict:
    """The two models side by side, then (old way) each alone, under the phase's conditions."""
    with competing_process(core):
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        timings = model_latencies(models, positions, "cpu", TimingConfig(), threads)
        wall_s = time.perf_counter() - start
        alone = {label: model_latency(model, positions, "cpu", OLD_WAY, threads) for label, model in models.items()}
    speedup = timings.speedup("compressed", over="base")
    return {"phase": name, "load_before": load_before, "load_after": timings["base"].load_avg_1m, "wall_s": wall_s,
            "rounds": speedup.rounds, "stopped_by": timings["base"].stopped_by,
            "base_ms": timings["base"].median_ms, "base_iqr_ms": timings["base"].iqr_ms,
            "compressed_ms": timings["compressed"].median_ms, "compressed_iqr_ms": timings["compressed"].iqr_ms,
            "unstable_times": timings["base"].unstable or timings["compressed"].unstable,
            "speedup": speedup.to_json(), "alone_ms": {label: record.median_ms for label, record in alone.items()},
            "alone_iqr_ms": {label: record.iqr_ms for label, record in alone.items()}}


def main() -> None:
    args = parse_args()
    os.sched_setaffinity(0, {args.core})
    base, compressed, positions = load_models(args)
    models = {"base": base, "compressed": compressed}
    phases = []
    for pair in range(args.pairs):
        phases.append(phase("idle", models, positions, args.threads, None))
        phases.append(phase("loaded", models, positions, args.threads, args.core))
    idle = [p["speedup"]["median"] for p in phases if p["phase"] == "idle"]
    loaded = [p["speedup"]["median"] for p in phases if p["phase"] == "loaded"]
    # The old way: base alone in an idle phase, the compressed model alone in the loaded phase after it.
    old_way = [idle_p["alone_ms"]["base"] / loaded_p["alone_ms"]["compressed"]
               for idle_p, loaded_p in zip(phases[0::2], phases[1::2])]
    ratio = statistics.median(loaded) / statistics.median(idle)
    print(f"{len(base.droppable_blocks())} -> {len(compressed.droppable_blocks())} blocks, {positions} grid positions, "
          f"{args.threads} thread(s) pinned to core {args.core} of {os.cpu_count()}; torch {torch.__version__}; "
          f"{TimingConfig().stop_rule()}")
    print(markdown_table(
        ["phase", "load avg (before/after)", "rounds (stopped by)", "base ms (IQR)", "3 dropped ms (IQR)",
         "speed-up median (quartiles)", "old way: each alone, ms base / 3 dropped"],
        [[p["phase"], f"{p['load_before']:.2f} / {p['load_after']:.2f}", f"{p['rounds']} ({p['stopped_by']})",
          f"{p['base_ms']:.1f} ({p['base_iqr_ms']:.1f})", f"{p['compressed_ms']:.1f} ({p['compressed_iqr_ms']:.1f})",
          f"{p['speedup']['median']:.3f} ({p['speedup']['q1']:.3f}-{p['speedup']['q3']:.3f})",
          f"{p['alone_ms']['base']:.1f} / {p['alone_ms']['compressed']:.1f}"] for p in phases]))
    print(f"\nside by side: median speed-up idle {statistics.median(idle):.3f}, loaded {statistics.median(loaded):.3f}: "
          f"loaded / idle = {ratio:.3f} ({'within' if abs(ratio - 1) <= 0.10 else 'NOT within'} 10%)")
    print(f"old way (base alone idle, compressed alone loaded): {', '.join(f'{r:.3f}' for r in old_way)}")
    print(json.dumps({"phases": phases, "idle": idle, "loaded": loaded, "loaded_over_idle": ratio, "old_way": old_way,
                      "threads": args.threads, "core": args.core, "positions": positions}))


if __name__ == "__main__":
    main()
