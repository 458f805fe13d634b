"""The Pareto front of mAP against latency, its hypervolume against the greedy chain's, and plots.

Every latency read here and in `search.export` goes through `latency_ms(trial)`: the figure of the
study's latest re-timing (`search.retime`: the base model, the greedy chain and the front timed
together) when the trial's architecture was re-timed, else the trial's first measurement (its
objective value). Optuna keeps a finished trial as it is, so re-timed figures live in the study's
attributes, and `complete_trials` hands them to each trial in memory: read trials through it.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

# Optuna's exact hypervolume; a private module, hence the pinned range.
from optuna._hypervolume import compute_hypervolume

from .study import BASELINE_ATTR, GREEDY

RETIMED = "latency_retimed"                  # study attribute: the latest re-timing (see search.retime)
BASE_RETIMED = "base_latency_retimed_ms"     # study attribute: the base model's figure in it
# What `complete_trials` adds to a re-timed trial's user attributes (in memory).
RETIMED_MS, RETIMED_IQR_MS = "latency_retimed_ms", "latency_retimed_iqr_ms"
RETIMED_ROUND, RETIMED_DEVICE = "latency_retimed_round", "latency_retimed_device"


def latency_ms(trial: FrozenTrial) -> float:
    """The latency a trial is judged by: re-timed when its architecture was (see the module docstring)."""
    return trial.user_attrs.get(RETIMED_MS, trial.values[1])


def base_latency_ms(study: optuna.Study) -> float | None:
    """The base model's latency: re-timed when the study was, else measured in the groundwork."""
    attrs = study.user_attrs
    return attrs.get(BASE_RETIMED, attrs.get("base_latency_ms"))


def with_retimed(trial: FrozenTrial, retimed: dict | None) -> FrozenTrial:
    """`trial` (a copy) with its architecture's re-timed figure among its user attributes, when the
    re-timing `retimed` has it; `trial` itself otherwise."""
    figure = (retimed or {}).get("by_signature", {}).get(trial.user_attrs.get("compute_signature"))
    if figure is None:
        return trial
    carrying = copy.copy(trial)
    carrying.user_attrs = {**trial.user_attrs, RETIMED_MS: figure["median_ms"], RETIMED_IQR_MS: figure["iqr_ms"],
                           RETIMED_ROUND: retimed["round"], RETIMED_DEVICE: retimed.get("device")}
    return carrying


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's complete trials, each with its re-timed figure when there is one."""
    retimed = study.user_attrs.get(RETIMED)
    return [with_retimed(t, retimed) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


@dataclass(frozen=True)
class TrialPoint:
    trial: int
    drops: list[str]
    channel_ratios: dict[str, float]
    average_mAP: float
    latency_ms: float
    latency_first_ms: float   # the trial's first measurement, its Optuna objective value
    retimed: bool             # latency_ms is the study's latest re-timed figure
    macs: int
    kind: str  # "baseline" (greedy chain) or "search"


def _point(trial: FrozenTrial) -> TrialPoint:
    kind = "baseline" if trial.user_attrs.get(BASELINE_ATTR) == GREEDY else "search"
    return TrialPoint(trial.number, trial.user_attrs.get("drops", []), trial.user_attrs.get("channel_ratios", {}),
                      trial.values[0], latency_ms(trial), trial.values[1], RETIMED_MS in trial.user_attrs,
                      trial.user_attrs.get("macs", 0), kind)


def _dominance(first: list[FrozenTrial], second: list[FrozenTrial]) -> np.ndarray:
    """[i, j]: `first[i]` dominates `second[j]` (mAP at least as high and latency at least as low, one strictly)."""
    a = np.array([[t.values[0], latency_ms(t)] for t in first]).reshape(-1, 1, 2)
    b = np.array([[t.values[0], latency_ms(t)] for t in second]).reshape(1, -1, 2)
    no_worse = (a[..., 0] >= b[..., 0]) & (a[..., 1] <= b[..., 1])
    better = (a[..., 0] > b[..., 0]) | (a[..., 1] < b[..., 1])
    return no_worse & better


def front(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Non-dominated trials (higher mAP, lower `latency_ms`), by latency."""
    if not trials:
        return []
    dominated = _dominance(trials, trials).any(axis=0)
    return sorted((t for t, d in zip(trials, dominated) if not d), key=latency_ms)


def not_dominated_by(trials: list[FrozenTrial], others: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that none of `others` dominates."""
    if not trials or not others:
        return list(trials)
    dominated = _dominance(others, trials).any(axis=0)
    return [t for t, d in zip(trials, dominated) if not d]


def hypervolume(trials: list[FrozenTrial], reference: tuple[float, float]) -> float:
    """Area dominated by the trials and bounded by `reference` = (mAP, latency ms): larger is better."""
    if not trials:
        return 0.0
    losses = np.array([[-t.values[0], latency_ms(t)] for t in trials])
    inside = np.all(losses < np.array([-reference[0], reference[1]]), axis=1)
    if not inside.any():
        return 0.0
    return float(compute_hypervolume(losses[inside], np.array([-reference[0], reference[1]])))


def latency_source(study: optuna.Study, trials: list[FrozenTrial]) -> dict:
    """Which figures the latency axis holds: the re-timing they come from, which trials carry a
    re-timed figure and which their first measurement."""
    retimed = study.user_attrs.get(RETIMED)
    source = {"retimed": [t.number for t in trials if RETIMED_MS in t.user_attrs],
              "first_measurement": [t.number for t in trials if RETIMED_MS not in t.user_attrs]}
    if retimed:
        source["retiming"] = {k: v for k, v in retimed.items() if k != "by_signature"}
    return source


@dataclass
class ParetoReport:
    front: list[TrialPoint]
    greedy_chain: list[TrialPoint]
    reference: tuple[float, float]
    hypervolume_search: float
    hypervolume_greedy: float
    hypervolume_all: float
    undominated_by_greedy: list[int]  # search trials that no greedy trial dominates
    latency: dict                     # `latency_source`: re-timed or first figures

    def to_json(self) -> dict:
        return {"front": [asdict(p) for p in self.front], "greedy_chain": [asdict(p) for p in self.greedy_chain],
                "reference_point": {"average_mAP": self.reference[0], "latency_ms": self.reference[1]},
                "hypervolume": {"search": self.hypervolume_search, "greedy": self.hypervolume_greedy,
                                "all": self.hypervolume_all},
                "search_trials_not_dominated_by_greedy": self.undominated_by_greedy, "latency": self.latency}


def reference_point(study: optuna.Study, complete: list[FrozenTrial]) -> tuple[float, float]:
    """mAP 0 and 10% above the slowest of the base model and every trial: every trial counts."""
    slowest = max([latency_ms(t) for t in complete] + [base_latency_ms(study) or 0.0])
    return 0.0, 1.1 * slowest


def pareto_report(study: optuna.Study) -> ParetoReport:
    complete = complete_trials(study)
    if not complete:
        raise ValueError(f"study {study.study_name!r} has no complete trials yet")
    greedy = [t for t in complete if t.user_attrs.get(BASELINE_ATTR) == GREEDY]
    search = [t for t in complete if t.user_attrs.get(BASELINE_ATTR) != GREEDY]
    reference = reference_point(study, complete)
    return ParetoReport(
        front=[_point(t) for t in front(complete)],
        greedy_chain=[_point(t) for t in sorted(greedy, key=lambda t: len(t.user_attrs.get("drops", [])))],
        reference=reference,
        hypervolume_search=hypervolume(search, reference), hypervolume_greedy=hypervolume(greedy, reference),
        hypervolume_all=hypervolume(complete, reference),
        undominated_by_greedy=[t.number for t in not_dominated_by(search, greedy)],
        latency=latency_source(study, complete))


def latency_axis_label(report: ParetoReport) -> str:
    retiming = report.latency.get("retiming")
    if retiming is None:
        return "latency (ms, median, first measurement)"
    return f"latency (ms, median, re-timed together: round {retiming['round']})"


def plot_png(study: optuna.Study, report: ParetoReport, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = complete_trials(study)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for retimed, style in ((True, {"color": "0.6"}), (False, {"facecolors": "none", "edgecolors": "0.6"})):
        trials = [t for t in complete if (RETIMED_MS in t.user_attrs) == retimed]
        if trials:
            label = "trials" if not report.latency.get("retiming") else (
                "trials, re-timed" if retimed else "trials, first measurement")
            ax.scatter([latency_ms(t) for t in trials], [100 * t.values[0] for t in trials], s=18, label=label, **style)
    ax.step([p.latency_ms for p in report.front], [100 * p.average_mAP for p in report.front], where="post",
            color="tab:blue", marker="o", label="Pareto front")
    ax.plot([p.latency_ms for p in report.greedy_chain], [100 * p.average_mAP for p in report.greedy_chain],
            color="tab:red", marker="s", linestyle="--", label="greedy PBD chain")
    if "base_map" in study.user_attrs:
        ax.scatter([base_latency_ms(study)], [100 * study.user_attrs["base_map"]], marker="*", s=150,
                   color="black", label="base model")
    ax.set_xlabel(latency_axis_label(report))
    ax.set_ylabel("average mAP (%)")
    ax.set_title(f"{study.study_name}: HV search {report.hypervolume_search:.3g} vs greedy {report.hypervolume_greedy:.3g}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_html(study: optuna.Study, report: ParetoReport, path: Path) -> None:
    """The same as `plot_png`, interactive (plotly): each trial's number, schedule and both
    latency figures on hover."""
    import plotly.graph_objects as go

    complete = complete_trials(study)
    hover = [f"trial {t.number}<br>drops {t.user_attrs.get('drops', [])}<br>channels {t.user_attrs.get('channel_ratios', {})}"
             f"<br>{'re-timed' if RETIMED_MS in t.user_attrs else 'first measurement'} {latency_ms(t):.2f} ms"
             f"<br>first measurement {t.values[1]:.2f} ms" for t in complete]
    figure = go.Figure([
        go.Scatter(x=[latency_ms(t) for t in complete], y=[t.values[0] for t in complete], mode="markers",
                   name="trials", marker={"color": "grey"}, hovertext=hover),
        go.Scatter(x=[p.latency_ms for p in report.front], y=[p.average_mAP for p in report.front],
                   mode="lines+markers", line={"shape": "hv", "color": "blue"}, name="Pareto front"),
        go.Scatter(x=[p.latency_ms for p in report.greedy_chain], y=[p.average_mAP for p in report.greedy_chain],
                   mode="lines+markers", name="greedy PBD chain", line={"dash": "dash", "color": "red"}),
    ])
    if "base_map" in study.user_attrs:
        figure.add_trace(go.Scatter(x=[base_latency_ms(study)], y=[study.user_attrs["base_map"]], mode="markers",
                                    name="base model", marker={"symbol": "star", "size": 14, "color": "black"}))
    figure.update_layout(title=study.study_name, xaxis_title=latency_axis_label(report), yaxis_title="average mAP")
    figure.write_html(str(path), include_plotlyjs=True)
