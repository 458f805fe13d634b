"""The seeded start: a study's first proposals drawn around the greedy chain, from the selection
scores the chain already computed, instead of at random.

Each seeded schedule's drop order is drawn step by step as the greedy chain chose its blocks, but
softly: at step j every block not yet dropped is picked with probability proportional to
exp(z / temperature), z being how far its score at step j is from the best score there, in units
of the spread (standard deviation) of that step's scores. Blocks of nearly equal score are swapped
often, a block far worse than the best almost never goes first; at a low temperature the draws are
the chain itself (which then cost nothing: they repeat the baseline). The chain scored step j's
blocks after its own first j drops; a draw that left the chain takes those scores as they are, and
a block the chain dropped earlier keeps the score of the last step that scored it.

The number of drops and the channel ratio cycle through the search space, so the first generation
covers every depth and ratio. Every block gets a priority key (the drawn order, then the others by
their last score), so that NSGA-II's crossover mixes meaningful keys.
"""
from __future__ import annotations

import numpy as np

from .encoding import ScheduleEncoding


def _last_scores(selections: list[dict], step: int) -> dict[str, float]:
    """Each block's score at `step`, or at the last earlier step that scored it, made so that
    higher is better."""
    scores: dict[str, float] = {}
    for selection in selections[:step + 1]:
        sign = 1.0 if selection["higher_is_better"] else -1.0
        scores.update({block: sign * score for block, score in selection["scores"].items()})
    return scores


def draw_order(selections: list[dict], blocks: list[str], temperature: float, rng: np.random.Generator) -> list[str]:
    """One drop order over `blocks`, as long as the chain, drawn as the module docstring says,
    followed by the remaining blocks by their last score."""
    order: list[str] = []
    for step in range(len(selections)):
        scores = _last_scores(selections, step)
        candidates = [b for b in blocks if b not in order and b in scores]
        values = np.array([scores[b] for b in candidates])
        spread = values.std()
        z = (values - values.max()) / spread if spread > 0 else np.zeros_like(values)
        weights = np.exp(z / temperature)
        order.append(candidates[rng.choice(len(candidates), p=weights / weights.sum())])
    last = _last_scores(selections, len(selections) - 1)
    return order + sorted((b for b in blocks if b not in order), key=lambda b: -last.get(b, -np.inf))


def seeded_params(selections: list[dict], encoding: ScheduleEncoding, count: int, temperature: float,
                  seed: int) -> list[dict]:
    """`count` parameter vectors around the greedy chain whose step-by-step selections (each a
    `Selection.to_json()`) are `selections`."""
    rng = np.random.default_rng(seed)
    ratios, max_drops = encoding.space.channel_ratios, encoding.space.max_drops
    params = []
    for index in range(count):
        order = draw_order(selections, encoding.blocks, temperature, rng)
        drops = 1 + index % max_drops
        ratio = ratios[(index // max_drops) % len(ratios)]
        params.append(encoding.encode(order, drops, ratio))
    return params
