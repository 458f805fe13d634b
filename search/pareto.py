"""The Pareto front of mAP against latency, the hypervolume of the search's front against each
baseline family's (the greedy chain, the chain followed by channel pruning) and their union, and
plots.

Every latency read here and in `search.export` goes through `latency_ms(trial)`: the figure of the
study's latest re-timing (`search.retime`: the base model, the greedy chain and the front timed
together) when the trial's architecture was re-timed, else the trial's first measurement (its
objective value). Both are on the study's one scale (`search.timing`): the base model's latency
from the groundwork over a speed-up measured side by side with the base model. Optuna keeps a finished trial as it is, so re-timed figures live in the study's
attributes, and `complete_trials` hands them to each trial in memory: read trials through it.

The reference point bounds the region users care about: no slower than the base model and no
more than `map_tolerance` below its mAP (`search.spec.ParetoSettings`, both configurable). A trial
outside that region adds nothing to a hypervolume, so the figure measures the trade-offs a user
would pick from rather than the latency axis down to mAP 0.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

# Optuna's exact hypervolume; a private module, hence the pinned range.
from optuna._hypervolume import compute_hypervolume

from .dominance import dominates
from .spec import ParetoSettings
from .study import BASELINE_ATTR, FAMILIES

SEARCH = "search"
Cost = Callable[[FrozenTrial], float]
RETIMED = "latency_retimed"                  # study attribute: the latest re-timing (see search.retime)
# What `complete_trials` adds to a re-timed trial's user attributes (in memory).
RETIMED_MS, RETIMED_IQR_MS, RETIMED_SPEEDUP = "latency_retimed_ms", "latency_retimed_iqr_ms", "latency_retimed_speedup"
RETIMED_ROUND, RETIMED_DEVICE = "latency_retimed_round", "latency_retimed_device"


def latency_ms(trial: FrozenTrial) -> float:
    """The latency a trial is judged by: re-timed when its architecture was (see the module docstring)."""
    return trial.user_attrs.get(RETIMED_MS, trial.values[1])


def base_latency_ms(study: optuna.Study) -> float | None:
    """The base model's latency, measured in the groundwork: the scale of the study's latency axis."""
    return study.user_attrs.get("base_latency_ms")


def with_retimed(trial: FrozenTrial, retimed: dict | None) -> FrozenTrial:
    """`trial` (a copy) with its architecture's re-timed figure among its user attributes, when the
    re-timing `retimed` has it; `trial` itself otherwise."""
    figure = (retimed or {}).get("by_signature", {}).get(trial.user_attrs.get("compute_signature"))
    if figure is None:
        return trial
    carrying = copy.copy(trial)
    # Studies re-timed before figures were put on the base model's scale stored the median alone.
    latency = figure.get("latency_ms", figure["median_ms"])
    carrying.user_attrs = {**trial.user_attrs, RETIMED_MS: latency, RETIMED_IQR_MS: figure["iqr_ms"],
                           RETIMED_SPEEDUP: figure.get("speedup_over_base"),
                           RETIMED_ROUND: retimed["round"], RETIMED_DEVICE: retimed.get("device")}
    return carrying


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's complete trials, each with its re-timed figure when there is one."""
    retimed = study.user_attrs.get(RETIMED)
    return [with_retimed(t, retimed) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


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
    latency_first_ms: float   # the trial's first measurement, its Optuna objective value
    retimed: bool             # latency_ms is the study's latest re-timed figure
    macs: int
    kind: str  # a baseline family or "search"


def _point(trial: FrozenTrial) -> TrialPoint:
    return TrialPoint(trial.number, trial.user_attrs.get("drops", []), trial.user_attrs.get("channel_ratios", {}),
                      average_map(trial), latency_ms(trial), trial.values[1], RETIMED_MS in trial.user_attrs,
                      trial.user_attrs.get("macs", 0), family(trial))


def front(trials: Sequence[FrozenTrial], cost: Cost = latency_ms) -> list[FrozenTrial]:
    """Non-dominated trials (higher mAP, lower cost), by cost."""
    points = [(average_map(t), cost(t)) for t in trials]
    kept = [t for t, p in zip(trials, points) if not any(dominates(q, p) for q in points)]
    return sorted(kept, key=cost)


def not_dominated_by(trials: Sequence[FrozenTrial], others: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that none of `others` dominates in (mAP, `latency_ms`)."""
    points = [(average_map(o), latency_ms(o)) for o in others]
    return [t for t in trials if not any(dominates(p, (average_map(t), latency_ms(t))) for p in points)]


def latency_source(study: optuna.Study, trials: Sequence[FrozenTrial]) -> dict:
    """Which figures the latency axis holds: the re-timing they come from, which trials carry a
    re-timed figure and which their first measurement."""
    retimed = study.user_attrs.get(RETIMED)
    source = {"retimed": [t.number for t in trials if RETIMED_MS in t.user_attrs],
              "first_measurement": [t.number for t in trials if RETIMED_MS not in t.user_attrs]}
    if retimed:
        source["retiming"] = {k: v for k, v in retimed.items() if k != "by_signature"}
    return source


@dataclass(frozen=True)
class ReferencePoint:
    """The corner of the hypervolume: (mAP, cost); `how` says where it came from, for reports."""

    average_mAP: float
    cost: float
    how: str

    def to_json(self) -> dict:
        return asdict(self)


def reference_point(study: optuna.Study, settings: ParetoSettings | None = None) -> ReferencePoint:
    """The base model's latency (`base_latency_ms`, or `settings.latency_ms`) and its mAP minus
    `settings.map_tolerance`; `settings` default to what the study's launch stored."""
    settings = settings or ParetoSettings.model_validate(study.user_attrs.get("pareto", {}))
    attrs = study.user_attrs
    if "base_map" not in attrs:
        raise ValueError(f"study {study.study_name!r} has no base model figures yet (its groundwork did not finish)")
    latency = settings.latency_ms if settings.latency_ms is not None else base_latency_ms(study)
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
    latency: dict                          # `latency_source`: re-timed or first figures

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
                "search_trials_not_dominated_by_baselines": self.undominated_by_baselines, "latency": self.latency}


def pareto_report(study: optuna.Study, settings: ParetoSettings | None = None) -> ParetoReport:
    complete = complete_trials(study)
    if not complete:
        raise ValueError(f"study {study.study_name!r} has no complete trials yet")
    reference = reference_point(study, settings)
    by_family = {name: [t for t in complete if family(t) == name] for name in (SEARCH, *FAMILIES)}
    baselines = [t for t in complete if family(t) != SEARCH]
    volumes = {name: hypervolume(trials, reference) for name, trials in by_family.items()}
    volumes.update(baselines=hypervolume(baselines, reference), all=hypervolume(complete, reference))
    undominated = [t.number for t in not_dominated_by(by_family[SEARCH], baselines)]
    return ParetoReport(
        front=[_point(t) for t in front(complete)],
        families={name: [_point(t) for t in sorted(by_family[name], key=lambda t: len(t.user_attrs.get("drops", [])))]
                  for name in FAMILIES},
        reference=reference, hypervolume=volumes, undominated_by_baselines=undominated,
        latency=latency_source(study, complete))


def latency_axis_label(report: ParetoReport) -> str:
    retiming = report.latency.get("retiming")
    if retiming is None:
        return "latency (ms: base model's / paired speed-up, first measurement)"
    return f"latency (ms: base model's / paired speed-up, re-timed together: round {retiming['round']})"


_FAMILY_STYLE = {FAMILIES[0]: ("red", "s", "greedy PBD chain"),  # colours both matplotlib and plotly know
                 FAMILIES[1]: ("darkorange", "^", "greedy chain + channel pruning")}


def plot_png(study: optuna.Study, report: ParetoReport, path) -> None:
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
            ax.scatter([latency_ms(t) for t in trials], [100 * average_map(t) for t in trials], s=18, label=label,
                       **style)
    ax.step([p.latency_ms for p in report.front], [100 * p.average_mAP for p in report.front], where="post",
            color="tab:blue", marker="o", label="Pareto front")
    for name, points in report.families.items():
        color, marker, label = _FAMILY_STYLE[name]
        ax.scatter([p.latency_ms for p in points], [100 * p.average_mAP for p in points], color=color, marker=marker,
                   label=label)
    ax.scatter([base_latency_ms(study)], [100 * study.user_attrs["base_map"]], marker="*", s=150,
               color="black", label="base model")
    ax.axhline(100 * report.reference.average_mAP, color="0.4", linewidth=0.8, linestyle=":")
    ax.axvline(report.reference.cost, color="0.4", linewidth=0.8, linestyle=":", label="reference point")
    ax.set_xlabel(latency_axis_label(report))
    ax.set_ylabel("average mAP (%)")
    ratio = report.ratios()["baselines"]
    ax.set_title(f"{study.study_name}: HV search / baselines " + (f"{ratio:.3f}" if ratio is not None else "n/a"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_html(study: optuna.Study, report: ParetoReport, path) -> None:
    """The same as `plot_png`, interactive (plotly): each trial's number, schedule and both
    latency figures on hover."""
    import plotly.graph_objects as go

    complete = complete_trials(study)
    hover = [f"trial {t.number}<br>drops {t.user_attrs.get('drops', [])}<br>channels {t.user_attrs.get('channel_ratios', {})}"
             f"<br>{'re-timed' if RETIMED_MS in t.user_attrs else 'first measurement'} {latency_ms(t):.2f} ms"
             f"<br>first measurement {t.values[1]:.2f} ms" for t in complete]
    figure = go.Figure([
        go.Scatter(x=[latency_ms(t) for t in complete], y=[average_map(t) for t in complete], mode="markers",
                   name="trials", marker={"color": "grey"}, hovertext=hover),
        go.Scatter(x=[p.latency_ms for p in report.front], y=[p.average_mAP for p in report.front],
                   mode="lines+markers", line={"shape": "hv", "color": "blue"}, name="Pareto front"),
    ])
    for name, points in report.families.items():
        color, _, label = _FAMILY_STYLE[name]
        figure.add_trace(go.Scatter(x=[p.latency_ms for p in points], y=[p.average_mAP for p in points],
                                    mode="markers", name=label, marker={"color": color}))
    figure.add_trace(go.Scatter(x=[base_latency_ms(study)], y=[study.user_attrs["base_map"]], mode="markers",
                                name="base model", marker={"symbol": "star", "size": 14, "color": "black"}))
    figure.update_layout(title=study.study_name, xaxis_title=latency_axis_label(report), yaxis_title="average mAP")
    figure.write_html(str(path), include_plotlyjs=True)
