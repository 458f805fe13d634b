"""A live one-line view of a running study, read from its storage (so it counts every driver's
trials): done / running / pruned / failed / queued, front size, best mAP; and the lines a launch prints
above it (groundwork progress, failed trials)."""
from __future__ import annotations

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.live import Live
from rich.markup import escape


class StudyProgress:
    def __init__(self, study: optuna.Study, enabled: bool = True) -> None:
        self.study = study
        self.console = Console(stderr=True)
        self.enabled = enabled
        self.live: Live | None = None
        self._last = ""

    def __enter__(self) -> "StudyProgress":
        if self.enabled:
            # Live re-renders `self` (its __rich__) on every refresh: the line follows the storage.
            self.live = Live(self, console=self.console, refresh_per_second=1, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.refresh()
            self.live.__exit__(*exc)
            if not self.console.is_terminal:
                self.console.line()  # a terminal gets its line break from the cursor handling
            self.live = None

    def __rich__(self) -> str:
        try:
            self._last = self._render()
        except Exception:  # a busy database: show the last line until the next refresh
            pass
        return self._last

    def _render(self) -> str:
        trials = self.study.get_trials(deepcopy=False)
        count = {state: sum(t.state == state for t in trials) for state in TrialState}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = max((t.values[0] for t in complete), default=float("nan"))
        front = len(self.study.best_trials) if complete else 0
        return (f"[bold]{escape(self.study.study_name)}[/bold]  done {count[TrialState.COMPLETE]}  "
                f"running {count[TrialState.RUNNING]}  pruned {count[TrialState.PRUNED]}  failed {count[TrialState.FAIL]}  "
                f"queued {count[TrialState.WAITING]}  front {front}  best mAP {100 * best:.2f}")

    def say(self, line: str) -> None:
        """A line above the live view (or alone, before it starts); nothing when disabled."""
        if self.enabled:
            self.console.print(escape(line), highlight=False)
