"""The Pareto front of mAP against latency, the hypervolume of the search's front against each
baseline family's (the greedy chain, the chain followed by channel pruning) and their union, and
plots.

Every latency this module and the export read comes from `latency_ms(trial)`, so that a better
figure for a trial (a re-timing) changes them all in one place.

The reference point bounds the region users care about: no slower than the base model and no
more than `map_tolerance` below its mAP (`search.spec.ParetoSettings`, both configurable). A trial
outside that region adds nothing to a hypervolume, so the figure measures the trade-offs a user
would pick from rather than the latency axis down to mAP 0.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

# Optuna's exact hypervolume; a private module, hence the pinned range.
from optuna._hypervolume import compute_hypervolume

from .spec import ParetoSettings
from .study import BASELINE_ATTR, FAMILIES

SEARCH = "search"
Cost = Callable[[FrozenTrial], float]


def latency_ms(trial: FrozenTrial) -> float:
    """The latency a trial is judged by: its second objective (the median of its timing)."""
    return trial.values[1]


def average_map(trial: FrozenTrial) -> float:
    return trial.values[0]


def macs(trial: FrozenTrial) -> float:
    """Multiply-accumulates of a trial's model: a cost no timing noise moves."""
    return float(trial.user_attrs["macs"])


def family(trial: FrozenTrial) -> str:
    """The baseline family a trial belongs to, or `search`."""
    return trial.user_attrs.get(BASELINE_ATTR) or SEARCH


@dataclass(frozen=True)
class TrialPoint:
    trial: int
    drops: list[str]
    channel_ratios: dict[str, float]
    average_mAP: float
    latency_ms: float
    macs: int
    kind: str  # a baseline family or "search"


def _point(trial: FrozenTrial) -> TrialPoint:
    return TrialPoint(trial.number, trial.user_attrs.get("drops", []), trial.user_attrs.get("channel_ratios", {}),
                      average_map(trial), latency_ms(trial), trial.user_attrs.get("macs", 0), family(trial))


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(mAP, cost) `a` is at least as good as `b` in both and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def front(trials: Sequence[FrozenTrial], cost: Cost = latency_ms) -> list[FrozenTrial]:
    """Non-dominated trials (higher mAP, lower cost), by cost."""
    points = [(average_map(t), cost(t)) for t in trials]
    kept = [t for t, p in zip(trials, points) if not any(dominates(q, p) for q in points)]
    return sorted(kept, key=cost)


@dataclass(frozen=True)
class ReferencePoint:
    """The corner of the hypervolume: (mAP, cost); `how` says where it came from, for reports."""

    average_mAP: float
    cost: float
    how: str

    def to_json(self) -> dict:
        return asdict(self)


def reference_point(study: optuna.Study, settings: ParetoSettings | None = None) -> ReferencePoint:
    """The base model's latency (or `settings.latency_ms`) and its mAP minus `settings.map_tolerance`;
    `settings` default to what the study's launch stored."""
    settings = settings or ParetoSettings.model_validate(study.user_attrs.get("pareto", {}))
    attrs = study.user_attrs
    if "base_map" not in attrs:
        raise ValueError(f"study {study.study_name!r} has no base model figures yet (its groundwork did not finish)")
    latency = settings.latency_ms if settings.latency_ms is not None else attrs["base_latency_ms"]
    where = f"{latency:.3f} ms" + ("" if settings.latency_ms is not None else " (the base model's latency)")
    return ReferencePoint(attrs["base_map"] - settings.map_tolerance, latency,
                          f"mAP {attrs['base_map']:.4f} - {settings.map_tolerance:g} (the base model's minus the "
                          f"tolerance) = {attrs['base_map'] - settings.map_tolerance:.4f}, latency {where}")


def hypervolume(trials: Sequence[FrozenTrial], reference: ReferencePoint, cost: Cost = latency_ms) -> float:
    """Area (mAP x cost) dominated by the trials and bounded by `reference`: larger is better."""
    if not trials:
        return 0.0
    corner = np.array([-reference.average_mAP, reference.cost])
    losses = np.array([[-average_map(t), cost(t)] for t in trials])
    inside = np.all(losses < corner, axis=1)
    if not inside.any():
        return 0.0
    return float(compute_hypervolume(losses[inside], corner))


@dataclass
class ParetoReport:
    front: list[TrialPoint]
    families: dict[str, list[TrialPoint]]  # each baseline family's trials, by number of drops
    reference: ReferencePoint
    hypervolume: dict[str, float]          # search, each family, "baselines" (their union), all
    undominated_by_baselines: list[int]    # search trials no baseline trial dominates

    def ratios(self) -> dict[str, float | None]:
        """The search's hypervolume over each family's and over their union's (None where that is 0)."""
        search = self.hypervolume[SEARCH]
        return {name: (search / self.hypervolume[name] if self.hypervolume[name] else None)
                for name in [*self.families, "baselines"]}

    def to_json(self) -> dict:
        return {"front": [asdict(p) for p in self.front],
                "families": {name: [asdict(p) for p in points] for name, points in self.families.items()},
                "reference_point": self.reference.to_json(), "hypervolume": self.hypervolume,
                "search_over_baseline": self.ratios(),
                "search_trials_not_dominated_by_baselines": self.undominated_by_baselines}


def pareto_report(study: optuna.Study, settings: ParetoSettings | None = None) -> ParetoReport:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"study {study.study_name!r} has no complete trials yet")
    reference = reference_point(study, settings)
    by_family = {name: [t for t in complete if family(t) == name] for name in (SEARCH, *FAMILIES)}
    baselines = [t for t in complete if family(t) != SEARCH]
    volumes = {name: hypervolume(trials, reference) for name, trials in by_family.items()}
    volumes.update(baselines=hypervolume(baselines, reference), all=hypervolume(complete, reference))
    points = {t.number: (average_map(t), latency_ms(t)) for t in complete}
    undominated = [t.number for t in by_family[SEARCH]
                   if not any(dominates(points[b.number], points[t.number]) for b in baselines)]
    return ParetoReport(
        front=[_point(t) for t in front(complete)],
        families={name: [_point(t) for t in sorted(by_family[name], key=lambda t: len(t.user_attrs.get("drops", [])))]
                  for name in FAMILIES},
        reference=reference, hypervolume=volumes, undominated_by_baselines=undominated)


_FAMILY_STYLE = {FAMILIES[0]: ("red", "s", "greedy PBD chain"),  # colours both matplotlib and plotly know
                 FAMILIES[1]: ("darkorange", "^", "greedy chain + channel pruning")}


def plot_png(study: optuna.Study, report: ParetoReport, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([latency_ms(t) for t in complete], [100 * average_map(t) for t in complete], s=18, color="0.6",
               label="trials")
    ax.step([p.latency_ms for p in report.front], [100 * p.average_mAP for p in report.front], where="post",
            color="tab:blue", marker="o", label="Pareto front")
    for name, points in report.families.items():
        color, marker, label = _FAMILY_STYLE[name]
        ax.scatter([p.latency_ms for p in points], [100 * p.average_mAP for p in points], color=color, marker=marker,
                   label=label)
    ax.scatter([study.user_attrs["base_latency_ms"]], [100 * study.user_attrs["base_map"]], marker="*", s=150,
               color="black", label="base model")
    ax.axhline(100 * report.reference.average_mAP, color="0.4", linewidth=0.8, linestyle=":")
    ax.axvline(report.reference.cost, color="0.4", linewidth=0.8, linestyle=":", label="reference point")
    ax.set_xlabel("latency (ms, median)")
    ax.set_ylabel("average mAP (%)")
    ratio = report.ratios()["baselines"]
    ax.set_title(f"{study.study_name}: HV search / baselines " + (f"{ratio:.3f}" if ratio is not None else "n/a"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_html(study: optuna.Study, report: ParetoReport, path) -> None:
    """Optuna's interactive Pareto-front plot with the baseline families drawn over it."""
    import plotly.graph_objects as go

    figure = optuna.visualization.plot_pareto_front(study, target_names=["average mAP", "latency (ms)"])
    for name, points in report.families.items():
        color, _, label = _FAMILY_STYLE[name]
        figure.add_trace(go.Scatter(x=[p.average_mAP for p in points], y=[p.latency_ms for p in points],
                                    mode="markers", name=label, marker={"color": color}))
    figure.write_html(str(path), include_plotlyjs=True)
