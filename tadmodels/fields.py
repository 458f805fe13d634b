"""Field helpers shared by the validated configs of every layer."""
from __future__ import annotations

from typing import Any

from pydantic import Field


def added_field(default: Any, **kwargs: Any) -> Any:
    """A setting added after files holding its section were written (schedules, study identities,
    model configs, cache keys): left out of dumps while at its default, so what was written before
    it existed keeps its meaning and its hash."""
    return Field(default=default, exclude_if=lambda value: value == default, **kwargs)
