"""Compression schedules: a versioned JSON file saying which blocks to drop, in which order, which
channel ratios to prune, and how to align after each step; checked against a model before any work."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tadmodels.models import TADModel
from tadmodels.spec import validation_problems

from .alignment import AlignmentConfig
from .selection import SelectionConfig

SCHEDULE_VERSION = 1
GLOBAL_RATIO = "*"


class ScheduleError(ValueError):
    """A schedule that cannot be read or does not fit the model it is applied to."""


class Schedule(BaseModel):
    """What to do to a base model, step by step: drop `drops[0]`, align, drop `drops[1]`, align, ...,
    then prune channels by `channel_ratios` and align once more.

    `channel_ratios` maps block names (or `*` for every remaining block) to the fraction of inner
    channels to remove, in [0, 1).
    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["tadprune.schedule"] = "tadprune.schedule"
    version: Literal[1] = SCHEDULE_VERSION
    base_fingerprint: str
    drops: list[str] = Field(default_factory=list)
    channel_ratios: dict[str, float] = Field(default_factory=dict)
    alignment: AlignmentConfig = Field(default_factory=AlignmentConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    results: dict | None = None

    @field_validator("channel_ratios")
    @classmethod
    def _ratios_in_range(cls, ratios: dict[str, float]) -> dict[str, float]:
        for name, ratio in ratios.items():
            if not 0 <= ratio < 1:
                raise ValueError(f"channel_ratios[{name!r}] = {ratio}: expected a fraction in [0, 1)")
        return ratios

    @field_validator("drops")
    @classmethod
    def _no_repeats(cls, drops: list[str]) -> list[str]:
        repeated = sorted({d for d in drops if drops.count(d) > 1})
        if repeated:
            raise ValueError(f"blocks dropped more than once: {repeated}")
        return drops

    def check_fits(self, model: TADModel) -> None:
        """Refuse, before any work, a schedule made for another model or naming blocks it lacks."""
        if self.base_fingerprint != model.fingerprint():
            raise ScheduleError(f"schedule was made for model {self.base_fingerprint}, this model is {model.fingerprint()}")
        available = model.droppable_blocks()
        unknown = [name for name in self.drops if name not in available]
        if unknown:
            raise ScheduleError(f"drops: unknown blocks {unknown}; the model's droppable blocks are {available}")
        if len(self.drops) >= len(available):
            raise ScheduleError(f"drops: all {len(available)} droppable blocks would go; at least one must stay")
        remaining = set(available) - set(self.drops)
        stray = [name for name in self.channel_ratios if name != GLOBAL_RATIO and name not in remaining]
        if stray:
            raise ScheduleError(f"channel_ratios: {stray} are not blocks that remain after the drops")

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.model_dump(mode="json"), indent=2))
        tmp.replace(path)


def load_schedule(path: Path) -> Schedule:
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ScheduleError(f"{path}: no such schedule file") from None
    except json.JSONDecodeError as error:
        raise ScheduleError(f"{path}: not valid JSON: {error}") from None
    try:
        return Schedule.model_validate(raw)
    except ValidationError as error:
        raise ScheduleError(f"{path}: invalid schedule: {'; '.join(validation_problems(error))}") from None
