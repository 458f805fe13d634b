"""Named presets for validated configs: a `preset` field whose values fill the fields not given."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def fill_from_preset(data: Any, presets: Mapping[str, Mapping[str, Any]]) -> Any:
    """For a `mode="before"` model validator: a mapping that names a `preset` gets that preset's
    values under the ones it gives itself (given fields override the preset)."""
    if not isinstance(data, dict) or data.get("preset") is None:
        return data
    name = data["preset"]
    if name not in presets:
        raise ValueError(f"preset: unknown {name!r}, expected one of {sorted(presets)}")
    return {**presets[name], **data}
