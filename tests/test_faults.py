"""Faults a study meets on a cluster, injected for real: a trial that cannot finish, damaged cache
files, a Ray worker killed mid-trial, two drivers on one storage, bad input. Under both runners
where the fault concerns trials, with real Ray, real Optuna RDB storage and real processes."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict

import optuna
import psutil
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from pipeline_fixtures import spec_copy
from search.cache import PrefixCache
from search.cli import app
from search.launch import launch
from search.spec import load_study_spec

NO_BUDGETS = {"max_latency_ms": None, "min_map": None}


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def load(tmp_path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'study.db'}")


@pytest.fixture(params=["local", "ray"])
def runner_kind(request):
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return request.param


def test_a_failing_trial_fails_alone_and_damaged_cache_entries_are_recomputed(tiny_setting, tmp_path, runner_kind,
                                                                             capsys):
    # One complete trial: no search trial runs, so none can draw the failed trial's schedule and
    # answer its retry below from its own result. The greedy family alone (no channel ratios), so
    # the retried trial is the next one queued.
    path = spec_copy(tiny_setting, tmp_path, n_trials=1, search={"max_drops": 2, "channel_ratios": [0.0]},
                     runner={"kind": runner_kind, "max_concurrent": 2, "resources": {"cpu": 1}})
    # Trial 0 (the greedy chain's first prefix) cannot write its checkpoint: a file stands where its
    # directory goes, as a full or broken disk would stop it after all its work.
    blocked = tmp_path / "artifacts" / "checkpoints" / "trial-0"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a directory")
    study = launch(load_study_spec(path), NO_BUDGETS, show_progress=True)
    failed = study.trials[0]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"].startswith(f"FileExistsError: [Errno 17] File exists: '{blocked}'")
    assert "Traceback" in failed.user_attrs["traceback"]
    # The study went on: n_trials counts complete trials, so another trial took the failed one's place.
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 1
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert all("checkpoint_artifacts" in t.user_attrs for t in study.get_trials(states=(TrialState.COMPLETE,)))
    out, err = capsys.readouterr()
    assert "Configuration for experiment" not in out + err  # Tune's console box stays out of the way
    assert "greedy step 2/2: drop" in err  # the groundwork's progress, streamed from the Ray worker under Ray
    assert f"trial 0 failed: FileExistsError: [Errno 17] File exists: '{blocked}'" in err.replace("\n", "")

    # Now the disk is fine but the caches are damaged: every aligned prefix cut short, every latency
    # record garbled. The next launch queues the failed baseline trial again; it meets both.
    blocked.unlink()
    for weights in (tmp_path / "artifacts" / "cache" / "prefixes").glob("*.safetensors"):
        weights.write_bytes(weights.read_bytes()[:64])
    for record in (tmp_path / "artifacts" / "cache" / "latency").glob("*.json"):
        record.write_bytes(b"\xff\xfe{")
    study = launch(load_study_spec(path).with_overrides(n_trials=2), NO_BUDGETS, show_progress=True)
    retried = study.trials[-1]
    assert retried.state == TrialState.COMPLETE and retried.user_attrs["baseline"] == "greedy"
    assert retried.user_attrs["drops"] == study.user_attrs["greedy_chain"][:1]
    cache = retried.user_attrs["cache"]
    assert cache["alignment_steps_run"] == 1 and cache["latency_hit"] is False
    # The trial's own latency record and the base model's, which its figure is a ratio to.
    assert [entry.split(": ")[1] for entry in cache["discarded"]] == ["SafetensorError", "UnicodeDecodeError",
                                                                      "UnicodeDecodeError"]
    err = capsys.readouterr().err.replace("\n", "")
    for entry in cache["discarded"]:
        assert f"discarded an unreadable cache entry and recomputed it: {entry.split(':')[0]}" in err
    # Recomputed and written whole again.
    schedule = retried.user_attrs["schedule"]
    prefixes = PrefixCache(tmp_path / "artifacts" / "cache", schedule["base_fingerprint"], schedule["alignment"])
    assert prefixes.longest(retried.user_attrs["drops"])[0] == 1
    baseline = [t for t in study.trials if t.user_attrs.get("baseline") == "greedy" and t.state == TrialState.COMPLETE]
    assert sorted(len(t.user_attrs["drops"]) for t in baseline) == [1, 2]


def _ray_workers_of(marker: str) -> list[psutil.Process]:
    """Tune trial processes started by our own driver (they inherit its environment), running a trial."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if (process.info["cmdline"] or [""])[0].startswith("ray::ImplicitFunc.train") \
                    and process.environ().get("TADPRUNE_TEST_MARKER") == marker:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_a_killed_ray_worker_is_retried_and_a_quiet_launch_prints_only_the_status(tiny_setting, tmp_path):
    path = spec_copy(tiny_setting, tmp_path, n_trials=3,
                     runner={"kind": "ray", "max_concurrent": 1, "max_failures": 1, "resources": {"cpu": 1}})
    marker = uuid.uuid4().hex
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TADPRUNE_TEST_MARKER": marker}
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, "-m", "search.cli", "study", "launch", str(path), "--quiet"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (workers := _ray_workers_of(marker)):
            assert driver.poll() is None and time.time() < deadline, "no trial started"
            time.sleep(0.2)
        workers[0].send_signal(signal.SIGKILL)  # the node is preempted mid-trial
        out, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, err
    assert err == ""  # --quiet: no Ray warnings, no Tune error log, no Optuna lines
    # Before the status table only Ray's own report of the killed worker, which Ray prints whatever
    # its log settings (an error, not a warning).
    before = out[:out.index("┏")].splitlines()
    assert all("(raylet)" in line and "A worker died or was killed" in line for line in before if line.strip()), out
    assert "Pareto front" in out
    study = load(tmp_path)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    assert not study.get_trials(states=(TrialState.FAIL,))  # the killed trial ran again and completed


def test_two_drivers_share_one_study(tiny_setting, tmp_path):
    n_trials = 8
    path = spec_copy(tiny_setting, tmp_path, n_trials=n_trials, runner={"kind": "local", "heartbeat_s": 1, "grace_s": 4})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    drivers = [subprocess.Popen([sys.executable, "-m", "search.cli", "study", "launch", str(path)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [driver.communicate(timeout=400) for driver in drivers]
    assert [driver.returncode for driver in drivers] == [0, 0], outputs
    logs = [err for _, err in outputs]
    # The groundwork happened once: one driver computed the greedy chain, the other waited for it.
    assert sorted("greedy step 1/2" in log for log in logs) == [False, True], logs
    assert any("waiting for the groundwork" in log for log in logs)
    study = load(tmp_path)
    trials = study.trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert not [t for t in trials if t.state == TrialState.FAIL]  # neither failed the other's live trials
    assert n_trials <= len(complete) <= n_trials + 1
    # The greedy chain was queued once.
    baseline = [t for t in trials if t.user_attrs.get("baseline") == "greedy"]
    assert sorted(len(t.user_attrs["drops"]) for t in baseline) == [1, 2]
    # Each launch sampled with its own seed, and both recorded it.
    assert {(t.user_attrs["launch"], t.user_attrs["sampler_seed"]) for t in trials} == {(0, 0), (1, 1)}
    # No schedule ran twice; a proposal of one that ran took its result.
    ran = [t.user_attrs["schedule_key"] for t in complete if not t.user_attrs["cache"]["result_hit"]]
    assert len(ran) == len(set(ran))
    # One latency per architecture.
    latencies = defaultdict(set)
    for trial in complete:
        latencies[trial.user_attrs["compute_signature"]].add(trial.user_attrs["latency_ms"])
    assert all(len(values) == 1 for values in latencies.values()), dict(latencies)


def test_a_spec_that_does_not_fit_the_model_leaves_nothing_behind(tiny_setting, tmp_path):
    path = spec_copy(tiny_setting, tmp_path, search={"max_drops": 9, "channel_ratios": [0.0]})
    result = run("study", "launch", path, "--quiet")
    assert result.exit_code == 2, result.output
    assert "search.max_drops 9: the model has 4 droppable blocks" in result.output
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize("url, expected", [
    ("sqlite:///{tmp}/missing/study.db", "directory {tmp}/missing does not exist"),
    ("postgres://user:secret@localhost/db", "SQLAlchemy names PostgreSQL 'postgresql', not 'postgres'"),
    ("studies/study.db", "not a SQLAlchemy URL"),
    ("postgresql+psycopg2://user:secret@127.0.0.1:9/db", "cannot open it: connection to server at \"127.0.0.1\""),
    ("mysql+nosuchdriver://user:secret@127.0.0.1:9/db", "its database driver is not installed"),
])
def test_storage_url_mistakes_are_named_and_leave_nothing_behind(tiny_setting, tmp_path, url, expected):
    url, expected = url.format(tmp=tmp_path), expected.format(tmp=tmp_path)
    result = run("study", "launch", spec_copy(tiny_setting, tmp_path), "--storage", url, "--quiet")
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert expected in output and "secret" not in output and "Traceback" not in output
    assert not (tmp_path / "artifacts").exists()


def test_read_only_commands_create_no_database(tmp_path):
    result = run("study", "status", "--storage", f"sqlite:///{tmp_path / 'nope.db'}", "--study", "tiny")
    assert result.exit_code == 2 and "no database file" in result.output
    assert not (tmp_path / "nope.db").exists()


def test_a_ray_address_without_a_cluster_is_refused_before_anything_is_written(tiny_setting, tmp_path):
    start = time.monotonic()
    result = run("study", "launch", spec_copy(tiny_setting, tmp_path), "--runner", "ray", "--address", "127.0.0.1:9")
    assert result.exit_code == 2 and "Ray address 127.0.0.1:9: no cluster answers" in result.output
    assert time.monotonic() - start < 30
    assert not (tmp_path / "study.db").exists()


def test_option_mistakes_name_the_option(tiny_setting, tmp_path):
    result = run("study", "launch", spec_copy(tiny_setting, tmp_path), "--runner", "foo")
    assert result.exit_code == 2
    assert "--runner: Input should be 'ray' or 'local'" in result.output and "pydantic" not in result.output
    assert not (tmp_path / "study.db").exists()
    usage = run("study", "launch", "-h")
    assert usage.exit_code == 0 and "failed trials do not count" in " ".join(usage.output.replace("│", " ").split())


def test_error_text_keeps_its_brackets(tmp_path):
    gt = {"database": {"v": {"subset": "test", "duration": 10.0, "fps": 30.0,
                             "annotations": [{"label": "a", "label_id": 0, "segment": [5.0]}]}}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps({"results": {}}))
    result = run("eval", "--gt", tmp_path / "gt.json", "--pred", tmp_path / "pred.json")
    assert result.exit_code == 2 and "expected [start_s, end_s]" in " ".join(result.output.split())


def test_the_default_storage_is_made_where_the_launch_runs(tiny_setting, tmp_path, monkeypatch):
    raw = yaml.safe_load(tiny_setting.read_text())
    raw.pop("storage"), raw.pop("artifacts")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**raw, "n_trials": 1}))
    monkeypatch.chdir(tmp_path)
    result = run("study", "launch", "spec.yaml", "--quiet")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "studies" / "tiny.db").is_file() and (tmp_path / "studies" / "tiny.artifacts").is_dir()
