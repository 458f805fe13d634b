"""The order of a study's two objectives, higher mAP and lower cost (latency or MACs): one rule
for the front (`search.pareto`) and for stopping a schedule early (`search.fidelity`)."""
from __future__ import annotations


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(mAP, cost) `a` is at least as good as `b` in both and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])
