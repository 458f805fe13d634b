"""What an import did: which source key went where, how, and which keys it left out and why."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPORT_FILE = "import_report.json"


@dataclass(frozen=True)
class KeyRecord:
    """One source key: the target key it became (None: not imported) and how, or why not."""

    source: str
    target: str | None
    how: str


@dataclass
class ImportReport:
    importer: str
    source: str
    sha256: str
    layout: str = ""
    keys: list[KeyRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def map(self, source: str, target: str | None, how: str) -> None:
        self.keys.append(KeyRecord(source, target, how))

    def targets(self) -> set[str]:
        return {record.target for record in self.keys if record.target is not None}

    def summary(self) -> list[str]:
        """One line per kind of mapping, with its count, then the notes."""
        counts = Counter(record.how for record in self.keys)
        return [f"{count:5d}  {how}" for how, count in counts.most_common()] + self.notes

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))
