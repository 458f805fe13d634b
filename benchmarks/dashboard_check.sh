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
# latency - max_latency_ms and min_map - mAP (feasible when <= 0), without budgets they are empty.
# Relative SQLite paths are relative to the repository root. Exit status 0 when every check holds.
set -euo pipefail
cd "$(dirname "$0")/.."
storage=${1:-sqlite:///studies/demo.db}
study=${2:-demo}
port=${3:-8081}
api="http://127.0.0.1:$port/api"
work=$(mktemp -d)

.venv/bin/optuna-dashboard "$storage" --port "$port" --host 127.0.0.1 >"$work/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

for _ in $(seq 120); do
    curl -sf "$api/studies" >"$work/studies.json" && break
    if ! kill -0 "$server" 2>/dev/null; then
        echo "optuna-dashboard exited:" >&2; cat "$work/server.log" >&2; exit 1
    fi
    sleep 0.5
done
[ -s "$work/studies.json" ] || { echo "no answer from $api/studies in 60 s" >&2; exit 1; }
id=$(jq -er --arg name "$study" '.study_summaries[] | select(.study_name == $name) | .study_id' "$work/studies.json") \
    || { echo "no study $study in $storage" >&2; exit 1; }
curl -sf "$api/studies/$id" >"$work/detail.json"

.venv/bin/python - "$work/studies.json" "$work/detail.json" "$study" <<'EOF'
import json
import sys

summaries, detail = (json.load(open(path)) for path in sys.argv[1:3])
summary = next(s for s in summaries["study_summaries"] if s["study_name"] == sys.argv[3])
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
print(f"dashboard OK: study {detail['name']!r}, objectives {detail['objective_names']} {detail['directions']}, "
      f"{len(detail['trials'])} trials ({len(complete)} complete, {feasible} feasible), "
      f"{len(detail['best_trials'])} on the Pareto front, budgets {budgets}, "
      f"constraints per trial: {sorted({len(t['constraints']) for t in complete})}")
EOF
