"""Several drivers on one study, for real: driver processes of `tadprune study launch` on one
storage (SQLite or PostgreSQL), started together, one joining a running study, one killed with
SIGKILL mid-run, one paused (SIGSTOP) past the grace period. Prints one Markdown row per scenario: what the drivers did to the study.

    PYTHONPATH=$PWD python benchmarks/fault_drill.py --storage postgresql+psycopg2://u:p@127.0.0.1:5432/db

The drivers are subprocesses (`python -m search.cli`), so the same drill runs against any checkout
(PYTHONPATH). Each scenario uses a fresh study name on the storage and a fresh artifacts directory,
with the tiny setting of the tests (4-block model, local runner, heartbeat 1 s, grace 4 s).

Columns: groundwork computations (greedy chains computed), baseline trials queued (the chain has
2), trials by state when all drivers are done, schedules run more than once at the same time,
architectures with more than one latency, driver exit codes, and results lost: trials that wrote
their checkpoint (their work finished) but are neither COMPLETE in the study nor kept in a new trial
(`recovered_from`, when another driver failed them while their own driver stalled).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import optuna
import yaml
from optuna.storages import RDBStorage
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import markdown_table  # noqa: E402
from pipeline_fixtures import build_setting  # noqa: E402  (the tests' tiny setting: data, base model, spec)
from search.spec import RunnerSettings  # noqa: E402


def start_driver(spec: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "search.cli", "study", "launch", str(spec)], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for(condition, driver: subprocess.Popen, log: Path, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if driver.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the first driver did not get there (exit code {driver.poll()}):\n{log.read_text()}")
        time.sleep(0.5)


def complete_trials(storage: RDBStorage, name: str) -> int:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return 0
    return sum(t.state == TrialState.COMPLETE for t in study.trials)


def scenario(kind: str, setting: Path, storage_url: str, work: Path, n_trials: int) -> dict:
    name = f"drill-{kind.replace(' ', '-')}-{uuid.uuid4().hex[:6]}"
    raw = yaml.safe_load(setting.read_text())
    runner = {"kind": "local"}
    if "heartbeat_s" in RunnerSettings.model_fields:  # a checkout from before heartbeats has none
        runner.update(heartbeat_s=1, grace_s=4)
    raw.update(name=name, storage=storage_url, artifacts=str(work / name), n_trials=n_trials, runner=runner)
    storage = RDBStorage(storage_url)  # one engine for all polling: PostgreSQL counts connections
    spec = work / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(raw))
    logs = [work / f"{name}.{i}.log" for i in range(2)]
    first = start_driver(spec, logs[0])
    if kind == "together":
        second = start_driver(spec, logs[1])
    else:  # the second joins once the first has trials done (and running)
        wait_for(lambda: complete_trials(storage, name) >= 2, first, logs[0])
        second = start_driver(spec, logs[1])
        if kind == "first killed":
            time.sleep(3)
            first.send_signal(signal.SIGKILL)
        elif kind == "first paused":  # a laptop that sleeps, a VM that stalls: longer than the grace period
            time.sleep(3)
            first.send_signal(signal.SIGSTOP)
            time.sleep(10)
            first.send_signal(signal.SIGCONT)
    codes = [first.wait(), second.wait()]
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.trials
    states = Counter(t.state.name for t in trials)
    ran_at_once = Counter(t.user_attrs.get("schedule_key") for t in trials if t.state == TrialState.COMPLETE
                          and not t.user_attrs.get("cache", {}).get("result_hit"))
    latencies = defaultdict(set)
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            attrs = trial.user_attrs  # before compute signatures were recorded: drops and ratios tell them
            signature = attrs.get("compute_signature") or (len(attrs["drops"]), str(attrs["channel_ratios"]))
            latencies[signature].add(attrs["latency_ms"])
    checkpoints = work / name / "checkpoints"
    finished_work = {int(p.name.split("-")[1]) for p in checkpoints.glob("trial-*")} if checkpoints.exists() else set()
    # A trial another driver failed while its own driver stalled keeps its result in a new trial.
    recovered = {t.user_attrs.get("recovered_from") for t in trials if t.state == TrialState.COMPLETE}
    lost = sorted(n for n in finished_work if trials[n].state != TrialState.COMPLETE and n not in recovered)
    logs_text = [log.read_text() for log in logs]
    storage.engine.dispose()
    return {
        "scenario": kind, "groundwork": sum("greedy step 1/" in text for text in logs_text),
        "baseline queued": sum(t.user_attrs.get("baseline") == "greedy" for t in trials),
        "trials": ", ".join(f"{states[s]} {s.lower()}" for s in ("COMPLETE", "FAIL", "RUNNING")),
        "schedules run twice": sum(count > 1 for key, count in ran_at_once.items() if key),
        "architectures with 2+ latencies": sum(len(v) > 1 for v in latencies.values()),
        "exit codes": " ".join(map(str, codes)), "results lost": len(lost),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True, help="SQLAlchemy URL the drivers share")
    parser.add_argument("--n-trials", type=int, default=16, help="enough that a joining driver finds trials running")
    parser.add_argument("--scenarios", default="together,joins,first killed,first paused")
    parser.add_argument("--work", type=Path, help="keep the drivers' logs and artifacts here (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        setting = build_setting(work / "setting")
        rows = [scenario(kind, setting, args.storage, work, args.n_trials) for kind in args.scenarios.split(",")]
    print(markdown_table(list(rows[0]), [list(row.values()) for row in rows]))


if __name__ == "__main__":
    main()
