"""The Pareto front of mAP against latency, its hypervolume against the greedy chain's, and plots."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

# Optuna's own non-domination filter and exact hypervolume; private modules, hence the pinned range.
from optuna._hypervolume import compute_hypervolume
from optuna.study._multi_objective import _get_pareto_front_trials_by_trials

from .study import BASELINE_ATTR, GREEDY


@dataclass(frozen=True)
class TrialPoint:
    trial: int
    drops: list[str]
    channel_ratios: dict[str, float]
    average_mAP: float
    latency_ms: float
    macs: int
    kind: str  # "baseline" (greedy chain) or "search"


def _point(trial: FrozenTrial) -> TrialPoint:
    kind = "baseline" if trial.user_attrs.get(BASELINE_ATTR) == GREEDY else "search"
    return TrialPoint(trial.number, trial.user_attrs.get("drops", []), trial.user_attrs.get("channel_ratios", {}),
                      trial.values[0], trial.values[1], trial.user_attrs.get("macs", 0), kind)


def front(trials: list[FrozenTrial], study: optuna.Study) -> list[FrozenTrial]:
    """Non-dominated trials (higher mAP, lower latency), by latency."""
    return sorted(_get_pareto_front_trials_by_trials(trials, study.directions), key=lambda t: t.values[1])


def hypervolume(trials: list[FrozenTrial], reference: tuple[float, float]) -> float:
    """Area dominated by the trials and bounded by `reference` = (mAP, latency ms): larger is better."""
    if not trials:
        return 0.0
    losses = np.array([[-t.values[0], t.values[1]] for t in trials])
    inside = np.all(losses < np.array([-reference[0], reference[1]]), axis=1)
    if not inside.any():
        return 0.0
    return float(compute_hypervolume(losses[inside], np.array([-reference[0], reference[1]])))


@dataclass
class ParetoReport:
    front: list[TrialPoint]
    greedy_chain: list[TrialPoint]
    reference: tuple[float, float]
    hypervolume_search: float
    hypervolume_greedy: float
    hypervolume_all: float
    undominated_by_greedy: list[int]  # search trials that no greedy trial dominates

    def to_json(self) -> dict:
        return {"front": [asdict(p) for p in self.front], "greedy_chain": [asdict(p) for p in self.greedy_chain],
                "reference_point": {"average_mAP": self.reference[0], "latency_ms": self.reference[1]},
                "hypervolume": {"search": self.hypervolume_search, "greedy": self.hypervolume_greedy,
                                "all": self.hypervolume_all},
                "search_trials_not_dominated_by_greedy": self.undominated_by_greedy}


def reference_point(study: optuna.Study, complete: list[FrozenTrial]) -> tuple[float, float]:
    """mAP 0 and 10% above the slowest of the base model and every trial: every trial counts."""
    slowest = max([t.values[1] for t in complete] + [study.user_attrs.get("base_latency_ms", 0.0)])
    return 0.0, 1.1 * slowest


def _dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
    return (a.values[0] >= b.values[0] and a.values[1] <= b.values[1]) and (
        a.values[0] > b.values[0] or a.values[1] < b.values[1])


def pareto_report(study: optuna.Study) -> ParetoReport:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"study {study.study_name!r} has no complete trials yet")
    greedy = [t for t in complete if t.user_attrs.get(BASELINE_ATTR) == GREEDY]
    search = [t for t in complete if t.user_attrs.get(BASELINE_ATTR) != GREEDY]
    reference = reference_point(study, complete)
    undominated = [t.number for t in search if not any(_dominates(g, t) for g in greedy)]
    return ParetoReport(
        front=[_point(t) for t in front(complete, study)],
        greedy_chain=[_point(t) for t in sorted(greedy, key=lambda t: len(t.user_attrs.get("drops", [])))],
        reference=reference,
        hypervolume_search=hypervolume(search, reference), hypervolume_greedy=hypervolume(greedy, reference),
        hypervolume_all=hypervolume(complete, reference), undominated_by_greedy=undominated)


def plot_png(study: optuna.Study, report: ParetoReport, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([t.values[1] for t in complete], [100 * t.values[0] for t in complete], s=18, color="0.6", label="trials")
    ax.step([p.latency_ms for p in report.front], [100 * p.average_mAP for p in report.front], where="post",
            color="tab:blue", marker="o", label="Pareto front")
    ax.plot([p.latency_ms for p in report.greedy_chain], [100 * p.average_mAP for p in report.greedy_chain],
            color="tab:red", marker="s", linestyle="--", label="greedy PBD chain")
    if "base_latency_ms" in study.user_attrs:
        ax.scatter([study.user_attrs["base_latency_ms"]], [100 * study.user_attrs["base_map"]], marker="*", s=150,
                   color="black", label="base model")
    ax.set_xlabel("latency (ms, median)")
    ax.set_ylabel("average mAP (%)")
    ax.set_title(f"{study.study_name}: HV search {report.hypervolume_search:.3g} vs greedy {report.hypervolume_greedy:.3g}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_html(study: optuna.Study, report: ParetoReport, path: Path) -> None:
    """Optuna's interactive Pareto-front plot with the greedy chain drawn over it."""
    import plotly.graph_objects as go

    figure = optuna.visualization.plot_pareto_front(study, target_names=["average mAP", "latency (ms)"])
    figure.add_trace(go.Scatter(x=[p.average_mAP for p in report.greedy_chain],
                                y=[p.latency_ms for p in report.greedy_chain],
                                mode="lines+markers", name="greedy PBD chain", line={"dash": "dash", "color": "red"}))
    figure.write_html(str(path), include_plotlyjs=True)
