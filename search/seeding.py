"""The seeded start: a study's first proposals drawn around the greedy chain, from the selection
scores the chain already computed and the MACs each block runs, instead of at random.

Each seeded schedule's drop order is drawn step by step as the greedy chain chose its blocks, but
softly: at step j every block not yet dropped is picked with probability proportional to
exp(z / temperature) x (m / m_max) ** cost_weight. z is how far the block's score at step j is from
the best score there, in units of the spread (standard deviation) of that step's scores: blocks of
nearly equal score are swapped often, a block far worse than the best almost never goes first, and
at a low temperature the draws are the chain itself (which then cost nothing: they repeat the
baseline). m is the MACs the block runs in the base model, m_max the most any block runs: PBD's
chain ranks blocks by accuracy alone, which suits a backbone of equal blocks (VideoMAE: the factor
is 1 for all), but a study trades accuracy against cost, and where blocks differ in cost
(ActionFormer's stem runs at full temporal resolution, each branch level at half the one before;
bLVNet-TAM's stages) a block that costs as little accuracy and saves more compute is the better
drop. MACs stand for the saving because they are known before anything is timed. The chain scored
step j's blocks after its own first j drops; a draw that left the chain takes those scores as they
are, and a block the chain dropped earlier keeps the score of the last step that scored it.

The number of drops and the channel ratio cycle through the search space, so the first generation
covers every depth and ratio. Every block gets a priority key (the drawn order, then the others by
their last score), so that NSGA-II's crossover mixes meaningful keys.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .encoding import ScheduleEncoding
from .spec import SeededStart


def _last_scores(selections: list[dict], step: int) -> dict[str, float]:
    """Each block's score at `step`, or at the last earlier step that scored it, made so that
    higher is better."""
    scores: dict[str, float] = {}
    for selection in selections[:step + 1]:
        sign = 1.0 if selection["higher_is_better"] else -1.0
        scores.update({block: sign * score for block, score in selection["scores"].items()})
    return scores


def cost_factors(block_macs: Mapping[str, int], blocks: list[str], cost_weight: float) -> dict[str, float]:
    """Each block's (m / m_max) ** cost_weight (module docstring); 1 for all when no block runs MACs."""
    largest = max(block_macs[b] for b in blocks)
    return {b: (block_macs[b] / largest) ** cost_weight if largest > 0 else 1.0 for b in blocks}


def draw_order(selections: list[dict], blocks: list[str], temperature: float, rng: np.random.Generator,
               factors: Mapping[str, float] | None = None) -> list[str]:
    """One drop order over `blocks`, as long as the chain, drawn as the module docstring says
    (`factors`: each block's cost factor; None: 1 for all), followed by the remaining blocks by
    their last score."""
    order: list[str] = []
    for step in range(len(selections)):
        scores = _last_scores(selections, step)
        candidates = [b for b in blocks if b not in order and b in scores]
        values = np.array([scores[b] for b in candidates])
        spread = values.std()
        z = (values - values.max()) / spread if spread > 0 else np.zeros_like(values)
        weights = np.exp(z / temperature)
        if factors is not None:
            weights = weights * np.array([factors[b] for b in candidates])
        order.append(candidates[rng.choice(len(candidates), p=weights / weights.sum())])
    last = _last_scores(selections, len(selections) - 1)
    return order + sorted((b for b in blocks if b not in order), key=lambda b: -last.get(b, -np.inf))


def seeded_params(selections: list[dict], encoding: ScheduleEncoding, settings: SeededStart,
                  block_macs: Mapping[str, int], seed: int) -> list[dict]:
    """`settings.trials` parameter vectors around the greedy chain whose step-by-step selections
    (each a `Selection.to_json()`) are `selections`, in a model whose blocks run `block_macs`."""
    rng = np.random.default_rng(seed)
    factors = cost_factors(block_macs, encoding.blocks, settings.cost_weight)
    ratios, max_drops = encoding.space.channel_ratios, encoding.space.max_drops
    params = []
    for index in range(settings.trials):
        order = draw_order(selections, encoding.blocks, settings.temperature, rng, factors)
        drops = 1 + index % max_drops
        ratio = ratios[(index // max_drops) % len(ratios)]
        params.append(encoding.encode(order, drops, ratio))
    return params
