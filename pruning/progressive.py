"""Progressive Block Drop: drop one block, align, repeat. Either following a given schedule or
greedily, choosing each block with the block-selection evaluator."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from rich.progress import Progress

from tadmodels.models import TADModel
from tadmodels.training import Experiment

from .alignment import AlignmentConfig, align
from .channels import prune_channels
from .schedule import Schedule
from .selection import select_block


@dataclass
class StepLog:
    """One step of a compression run, as `metrics.json` records it."""

    step: int
    action: str                 # "drop" or "channels"
    block: str | None
    map_before_alignment: float
    map_after_alignment: float
    macs: int
    latency_ms: float           # median, timed side by side with the base model in the same rounds
    speedup: dict               # over the base model: median of per-round ratios, quartiles, rounds
    params: int
    selection: dict | None = None  # greedy steps: every candidate's score and tie-break keys (`Selection.to_json`)


@dataclass
class CompressionResult:
    model: TADModel
    schedule: Schedule
    steps: list[StepLog]
    metrics: dict


def align_step(experiment: Experiment, base: TADModel, previous: TADModel, student: TADModel,
               alignment: AlignmentConfig) -> TADModel:
    """Align `student`, made from `previous` by one drop or by channel pruning, to the original
    model (`base`) or to `previous`, as `alignment.teacher` says."""
    return align(student, base if alignment.teacher == "original" else previous, experiment, alignment)


def drop_step(experiment: Experiment, base: TADModel, model: TADModel, block: str,
              alignment: AlignmentConfig) -> TADModel:
    """Drop `block` from `model`, then align."""
    return align_step(experiment, base, model, model.without_blocks([block]), alignment)


def channel_step(experiment: Experiment, base: TADModel, model: TADModel, ratios: dict[str, float],
                 alignment: AlignmentConfig) -> TADModel:
    """Prune channels of the remaining blocks, then align once more."""
    return align_step(experiment, base, model, prune_channels(model, ratios), alignment)


def compress(experiment: Experiment, base: TADModel, schedule: Schedule, greedy_blocks: int | None = None,
             show_progress: bool = True) -> CompressionResult:
    """Follow `schedule` on `base`; with `greedy_blocks`, choose that many drops greedily instead
    (the schedule then names no drops and supplies the settings). Checked before any work starts."""
    schedule.check_fits(base)
    alignment, selection = schedule.alignment, schedule.selection
    greedy = greedy_blocks is not None
    if greedy and schedule.drops:
        raise ValueError("a greedy run chooses its own drops; the schedule must name none")
    if greedy and not 0 < greedy_blocks < len(base.droppable_blocks()):
        raise ValueError(f"blocks: expected 1 to {len(base.droppable_blocks()) - 1} "
                         f"(the model has {len(base.droppable_blocks())} droppable blocks), got {greedy_blocks}")
    drops = greedy_blocks if greedy else len(schedule.drops)
    train_set = experiment.dataset(experiment.spec.data.train_subset)
    model, steps, chosen = base, [], []
    total = drops + (1 if schedule.channel_ratios else 0)
    with Progress(disable=not show_progress) as progress:
        task = progress.add_task("compress", total=total)
        for step in range(drops):
            picked = select_block(model, train_set, selection, experiment.spec.eval.tious) if greedy else None
            block = picked.chosen if greedy else schedule.drops[step]
            progress.update(task, description=f"drop {block}")
            student = model.without_blocks([block])
            before = experiment.evaluate(student, profile=False)["average_mAP"]
            model = align_step(experiment, base, model, student, alignment)
            chosen.append(block)
            metrics = experiment.evaluate(model, baseline=base)
            steps.append(_log(len(steps) + 1, "drop", block, before, metrics, picked.to_json() if greedy else None))
            progress.advance(task)
        if schedule.channel_ratios:
            progress.update(task, description="prune channels")
            student = prune_channels(model, schedule.channel_ratios)
            before = experiment.evaluate(student, profile=False)["average_mAP"]
            model = align_step(experiment, base, model, student, alignment)
            metrics = experiment.evaluate(model, baseline=base)
            steps.append(_log(len(steps) + 1, "channels", None, before, metrics))
            progress.advance(task)
    # The last step's figures are the result's: timing the same model again would only add a
    # second, different measurement of it.
    final = metrics if steps else experiment.evaluate(model, baseline=base)
    final["steps"] = [asdict(s) for s in steps]
    result_schedule = schedule.model_copy(update={"drops": chosen, "results": {
        k: final[k] for k in ("average_mAP", "per_tiou", "tious", "latency_ms", "speedup", "macs", "params")}})
    return CompressionResult(model, result_schedule, steps, final)


def _log(step: int, action: str, block: str | None, before: float, metrics: dict,
         selection: dict | None = None) -> StepLog:
    return StepLog(step, action, block, before, metrics["average_mAP"], metrics["macs"], metrics["latency_ms"],
                   metrics["speedup"], metrics["params"], selection)
