"""A live one-line view of a running study: trials done / running / failed, front size, best mAP."""
from __future__ import annotations

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.live import Live


class StudyProgress:
    def __init__(self, study: optuna.Study, enabled: bool = True) -> None:
        self.study = study
        self.running = 0
        self.live = Live(self._render(), console=Console(stderr=True), refresh_per_second=2, transient=False) if enabled else None

    def __enter__(self) -> "StudyProgress":
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.refresh()
            self.live.__exit__(*exc)
            if not self.live.console.is_terminal:
                self.live.console.line()  # a terminal gets its line break from the cursor handling

    def _render(self) -> str:
        trials = self.study.get_trials(deepcopy=False)
        done = sum(t.state == TrialState.COMPLETE for t in trials)
        failed = sum(t.state == TrialState.FAIL for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = max((t.values[0] for t in complete), default=float("nan"))
        front = len(self.study.best_trials) if complete else 0
        return (f"[bold]{self.study.study_name}[/bold]  done {done}  running {self.running}  failed {failed}  "
                f"queued {waiting}  front {front}  best mAP {100 * best:.2f}")

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._render())

    def optuna_callback(self, _study: optuna.Study, _trial) -> None:
        self.refresh()
