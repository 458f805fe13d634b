"""Which block to drop next: score every remaining block by what removing it costs.

Criteria: `map` (the paper's: drop each block in turn, no fine-tuning, run the training videos,
keep the drop with the best mAP), `loss` (the same with the task loss), `mse` and `cosine` (how
little a block changes its input: cheap proxies that need a single forward pass).

For a VideoMAE backbone the `map` and `loss` criteria share work: the tokens entering block k are
the same for every candidate after k, so one pass through the blocks yields each candidate's
input, and each candidate only runs the blocks after it.

Ties: on a saturated model several candidates score the same mAP@0.5, and list order must not
decide. Under `map` the same pass also gives each candidate's average mAP over `eval.tious` and its
task loss: candidates equal in score rank by average mAP (higher first), then by loss (lower
first). The continuous criteria (`loss`, `mse`, `cosine`) do not tie in practice and carry no
second key. Only candidates equal in every key fall back to list order.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from tadmodels.data.dataset import TADDataset
from tadmodels.inference import Results, score_results, single_batch, to_results
from tadmodels.models import DetectorOutput, TADModel, VideoMAEBackbone

Criterion = Literal["map", "loss", "mse", "cosine"]


class SelectionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    criterion: Criterion = "map"
    tiou: float | None = Field(default=0.5, gt=0, le=1,
                               description="mAP at this tIoU (THUMOS14: 0.5); None: average mAP over eval.tious")
    max_videos: int | None = Field(default=None, ge=1, description="score on the first N training videos only")


# Tie-break keys, in the order they are used, and whether higher is better for each.
TIE_BREAK_KEYS = {"average_mAP": True, "loss": False}


@dataclass(frozen=True)
class Selection:
    """Every candidate's score and the chosen block; `higher_is_better` says how scores rank.
    `tie_break` holds each candidate's second (and third) key by key name, in `TIE_BREAK_KEYS` order."""

    criterion: str
    scores: dict[str, float]
    higher_is_better: bool
    tie_break: dict[str, dict[str, float]] = field(default_factory=dict)

    def restricted(self, names: set[str]) -> "Selection":
        """The same scores over `names` only (blocks a search space allows to drop)."""
        keep = [name for name in self.scores if name in names]
        return Selection(self.criterion, {k: self.scores[k] for k in keep}, self.higher_is_better,
                         {key: {k: values[k] for k in keep} for key, values in self.tie_break.items()})

    def ranking(self) -> list[str]:
        """Candidates best first: by score, then by each tie-break key, then in list order."""
        def rank(item: tuple[int, str]) -> tuple:
            index, name = item
            keys = [(self.scores[name], self.higher_is_better)]
            keys += [(self.tie_break[key][name], higher) for key, higher in TIE_BREAK_KEYS.items() if key in self.tie_break]
            return (*[-value if higher else value for value, higher in keys], index)
        return [name for _, name in sorted(enumerate(self.scores), key=rank)]

    @property
    def chosen(self) -> str:
        return self.ranking()[0]

    def to_json(self) -> dict:
        """What a step log stores: the criterion, every candidate's keys and the choice."""
        return {"criterion": self.criterion, "higher_is_better": self.higher_is_better, "scores": self.scores,
                "tie_break": self.tie_break, "chosen": self.chosen}


def shares_prefix(model: TADModel) -> bool:
    return isinstance(model.backbone, VideoMAEBackbone)


def candidate_outputs(model: TADModel, inputs: Tensor, mask: Tensor, shared: bool = True) -> Iterator[tuple[str, DetectorOutput]]:
    """Detector outputs of the model with each droppable block removed in turn (no fine-tuning)."""
    names = model.droppable_blocks()
    if not (shared and shares_prefix(model)):
        for name in names:
            yield name, model.without_blocks([name])(inputs, mask)
        return
    backbone = model.backbone
    blocks = list(backbone.blocks.values())
    tokens = backbone.embed(model.chunks(inputs))
    for index, name in enumerate(names):
        suffix = tokens
        for block in blocks[index + 1:]:
            suffix = block(suffix)
        features = backbone.pool(suffix).reshape(inputs.shape[0], -1, backbone.out_dim)
        yield name, model.detect_from_features(features, mask)
        if index + 1 < len(blocks):
            tokens = blocks[index](tokens)


@torch.inference_mode()
def score_by_detection(model: TADModel, dataset: TADDataset, config: SelectionConfig, tious: list[float],
                       shared: bool = True) -> Selection:
    """`map`: mAP of each candidate on `dataset` (tie-break keys: average mAP over `tious`, task
    loss); `loss`: its mean task loss there."""
    model.eval()
    names = model.droppable_blocks()
    results: dict[str, Results] = {name: {} for name in names}
    losses = {name: 0.0 for name in names}
    count = min(len(dataset), config.max_videos or len(dataset))
    for index in range(count):
        sample = dataset[index]
        batch = single_batch(model, dataset, sample).to(model.device)
        for name, output in candidate_outputs(model, batch.inputs, batch.mask, shared):
            losses[name] += model.detector.loss(output, batch.segments, batch.labels)["total"].item() / count
            if config.criterion == "map":
                results[name][sample.video.video_id] = to_results(model.detector.detect(output)[0], sample, dataset)
    if config.criterion == "loss":
        return Selection("loss", losses, higher_is_better=False)
    subset = dataset.head(count)
    average = {name: score_results(subset, results[name], tious).average_mAP for name in names}
    if config.tiou is None:
        return Selection("map", average, higher_is_better=True, tie_break={"loss": losses})
    scores = {name: score_results(subset, results[name], [config.tiou]).average_mAP for name in names}
    return Selection("map", scores, higher_is_better=True, tie_break={"average_mAP": average, "loss": losses})


@torch.inference_mode()
def score_by_block_change(model: TADModel, dataset: TADDataset, config: SelectionConfig) -> Selection:
    """`mse` / `cosine`: how much each block changes its input, averaged over videos (lower: drop first)."""
    model.eval()
    names = model.droppable_blocks()
    totals = {name: 0.0 for name in names}
    channel_dim = -1 if isinstance(model.backbone, VideoMAEBackbone) else 1  # tokens are channels-last
    count = min(len(dataset), config.max_videos or len(dataset))
    for index in range(count):
        batch = single_batch(model, dataset, dataset[index]).to(model.device)
        pairs: dict[str, tuple[Tensor, Tensor]] = {}
        handles = [model.get_submodule(name).register_forward_hook(
            lambda _m, args, out, name=name: pairs.__setitem__(name, (args[0], out))) for name in names]
        try:
            model(batch.inputs, batch.mask)
        finally:
            for handle in handles:
                handle.remove()
        for name, (block_in, block_out) in pairs.items():
            totals[name] += block_change(block_in, block_out, config.criterion, channel_dim) / count
    return Selection(config.criterion, totals, higher_is_better=False)


def block_change(block_in: Tensor, block_out: Tensor, criterion: str, channel_dim: int) -> float:
    """MSE between a block's input and output, or 1 - their cosine per position along the channels."""
    if criterion == "mse":
        return F.mse_loss(block_out, block_in).item()
    return (1 - F.cosine_similarity(block_in, block_out, dim=channel_dim)).mean().item()


def select_block(model: TADModel, dataset: TADDataset, config: SelectionConfig, tious: list[float]) -> Selection:
    if config.criterion in ("map", "loss"):
        return score_by_detection(model, dataset, config, tious)
    return score_by_block_change(model, dataset, config)
