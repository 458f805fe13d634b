#!/usr/bin/env bash
# Checks that optuna-dashboard shows a tadprune study as the README says: it starts the dashboard
# on the study's storage, polls its JSON API until it answers, asserts on /api/studies and
# /api/studies/<id>, and stops the server.
#
#   benchmarks/dashboard_check.sh [STORAGE_URL] [STUDY] [PORT]    (default sqlite:///studies/demo.db demo 8081)
#
# Asserted: the study's two objectives (directions maximize, minimize; metric names average_mAP,
# latency_ms); every trial carries the `constraints` the dashboard reads; with budgets stored in
# the study (`study launch --max-latency-ms / --min-map`) each complete trial's constraints equal
# latency - max_latency_ms and min_map - mAP (feasible when <= 0), without budgets they are empty;
# every PRUNED trial lists its `prune_reason`, and one stopped at a rung its `rungs` (mAP, latency per rung).
# Relative SQLite paths are relative to the repository root. Exit status 0 when every check holds.
#
# Self-sufficient: it needs only a Python with this project's dependencies (PYTHON, else .venv/bin/python,
# else python3). optuna-dashboard is used from PATH or beside that Python when installed; otherwise the
# check installs optuna-dashboard==0.21.0 into a throwaway virtual environment that sees the project's
# packages (--system-site-packages) and removes it afterwards. No curl or jq: Python polls the API.
set -euo pipefail
cd "$(dirname "$0")/.."
storage=${1:-sqlite:///studies/demo.db}
study=${2:-demo}
port=${3:-8081}
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }; rm -rf "$work"' EXIT

dashboard=$(command -v "$(dirname "$python")/optuna-dashboard" || command -v optuna-dashboard || true)
if [ -z "$dashboard" ]; then
    echo "optuna-dashboard not found: installing optuna-dashboard==0.21.0 into a temporary environment" >&2
    "$python" -m venv --system-site-packages "$work/venv"
    "$work/venv/bin/python" -m pip install --quiet optuna-dashboard==0.21.0
    dashboard="$work/venv/bin/optuna-dashboard"
fi

"$dashboard" "$storage" --port "$port" --host 127.0.0.1 >"$work/server.log" 2>&1 &
server=$!

"$python" - "$port" "$study" "$storage" "$server" "$work/server.log" <<'EOF'
import json
import os
import sys
import time
import urllib.request

port, study_name, storage, server, server_log = sys.argv[1:6]
api = f"http://127.0.0.1:{port}/api"


def get(path: str) -> dict:
    with urllib.request.urlopen(f"{api}{path}", timeout=5) as response:
        return json.load(response)


deadline = time.monotonic() + 60
while True:
    try:
        summaries = get("/studies")
        break
    except OSError:
        try:
            os.kill(int(server), 0)
        except ProcessLookupError:
            sys.exit("optuna-dashboard exited:\n" + open(server_log).read())
        if time.monotonic() > deadline:
            sys.exit(f"no answer from {api}/studies in 60 s")
        time.sleep(0.5)
summary = next((s for s in summaries["study_summaries"] if s["study_name"] == study_name), None)
if summary is None:
    sys.exit(f"no study {study_name} in {storage}")
detail = get(f"/studies/{summary['study_id']}")

assert summary["directions"] == ["maximize", "minimize"], summary["directions"]
assert detail["directions"] == ["maximize", "minimize"], detail["directions"]
assert detail.get("objective_names") == ["average_mAP", "latency_ms"], detail.get("objective_names")
budgets = json.loads({a["key"]: a["value"] for a in detail["user_attrs"]}["budgets"])
complete = [t for t in detail["trials"] if t["state"] == "Complete"]
assert complete, "no complete trials"
assert all("constraints" in t for t in detail["trials"]), "a trial without constraints"
for trial in complete:
    mAP, latency = trial["values"]
    expected = ([latency - budgets["max_latency_ms"]] if budgets.get("max_latency_ms") is not None else []) + \
               ([budgets["min_map"] - mAP] if budgets.get("min_map") is not None else [])
    got = trial["constraints"]
    assert len(got) == len(expected) and all(abs(g - e) < 1e-9 for g, e in zip(got, expected)), \
        (trial["number"], got, expected)
feasible = sum(all(c <= 0 for c in t["constraints"]) for t in complete)
# PRUNED trials (multi-fidelity stops, repeats) list their reason, and a trial stopped at a rung its rung values.
pruned = [t for t in detail["trials"] if t["state"] == "Pruned"]
for trial in pruned:
    attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
    assert "prune_reason" in attrs, (trial["number"], sorted(attrs))
    stopped_at = attrs.get("pruned_at")
    if stopped_at is not None and "before alignment" not in str(stopped_at):
        rungs = json.loads(attrs["rungs"]) if isinstance(attrs["rungs"], str) else attrs["rungs"]
        assert rungs and all({"rung", "average_mAP", "latency_ms"} <= set(r) for r in rungs), (trial["number"], rungs)
print(f"dashboard OK: study {detail['name']!r}, objectives {detail['objective_names']} {detail['directions']}, "
      f"{len(detail['trials'])} trials ({len(complete)} complete, {feasible} feasible, {len(pruned)} pruned with "
      "their reason and rung values), "
      f"{len(detail['best_trials'])} on the Pareto front, budgets {budgets}, "
      f"constraints per trial: {sorted({len(t['constraints']) for t in complete})}")
EOF
