"""The benchmarks print their results as Markdown tables, ready for RESULTS.md."""
from __future__ import annotations


def markdown_table(header: list[str], rows: list[list]) -> str:
    return "\n".join("| " + " | ".join(map(str, cells)) + " |" for cells in [header, ["---"] * len(header), *rows])
