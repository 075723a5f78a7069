#!/usr/bin/env bash
# Runs a whole zpipe pipeline on this machine: a sink, WORKERS workers and a
# ventilator with TASKS tasks (the guide's random 1-100 ms sleeps unless you
# pass other ventilator flags after them), then prints the sink's report.
# Every process it starts is stopped when it exits, on Ctrl-C too.
#
#   scripts/run-local.sh [WORKERS] [TASKS] [VENTILATOR FLAGS...]
#   scripts/run-local.sh 4 100
#   scripts/run-local.sh 2 0 --input jobs.txt        # one shell command a line
#
# Environment: THREADS (per worker, default 1), OUTPUT (results file),
# ZPIPE_TASK_ENDPOINT, ZPIPE_RESULT_ENDPOINT, ZPIPE_CONTROL_ENDPOINT and
# ZPIPE_FEEDBACK_ENDPOINT (default: the guide's ports on 127.0.0.1; a bare
# endpoint makes the sink and ventilator bind and the workers connect).
# Any other ZPIPE_* variable reaches every role too: ZPIPE_DISPATCH=push runs
# the guide's round-robin instead of credit dispatch.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS=${1:-4}
TASKS=${2:-100}
shift $(( $# >= 2 ? 2 : $# ))
THREADS=${THREADS:-1}
export RUST_LOG=${RUST_LOG:-warn}
OUTPUT=${OUTPUT:-$(mktemp -t zpipe-results-XXXXXX.jsonl)}
export ZPIPE_TASK_ENDPOINT=${ZPIPE_TASK_ENDPOINT:-tcp://127.0.0.1:5557}
export ZPIPE_RESULT_ENDPOINT=${ZPIPE_RESULT_ENDPOINT:-tcp://127.0.0.1:5558}
export ZPIPE_CONTROL_ENDPOINT=${ZPIPE_CONTROL_ENDPOINT:-tcp://127.0.0.1:5559}
export ZPIPE_FEEDBACK_ENDPOINT=${ZPIPE_FEEDBACK_ENDPOINT:-tcp://127.0.0.1:5561}

case "$WORKERS$TASKS" in
    *[!0-9]*) echo "usage: $0 [WORKERS] [TASKS] [VENTILATOR FLAGS...]" >&2; exit 2 ;;
esac

echo "building (release)..." >&2
cargo build --release --quiet -p sink -p worker -p ventilator
BIN=${CARGO_TARGET_DIR:-target}/release

PIDS=()
cleanup() {
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'echo "run-local: interrupted" >&2; exit 130' INT TERM

"$BIN/sink" --output "$OUTPUT" &
SINK=$!
PIDS+=("$SINK")
# A sink that cannot bind (a port in use) says so and exits 2 at once.
sleep 0.3
if ! kill -0 "$SINK" 2>/dev/null; then
    wait "$SINK" && rc=0 || rc=$?
    echo "run-local: the sink did not start (exit code $rc)" >&2
    exit "$rc"
fi
for _ in $(seq "$WORKERS"); do
    "$BIN/worker" --threads "$THREADS" &
    PIDS+=("$!")
done

VENT_FLAGS=(--workers "$WORKERS")
if [ "$TASKS" -gt 0 ]; then VENT_FLAGS+=(--tasks "$TASKS"); fi
# The ventilator returns once the sink says DONE. It runs in the background
# and we wait for it, because bash runs a trap (Ctrl-C, SIGTERM) only between
# commands, and `wait` is one it can interrupt.
"$BIN/ventilator" "${VENT_FLAGS[@]}" "$@" &
VENT=$!
PIDS+=("$VENT")
wait "$VENT"
# The sink prints its report and exits right after the batch; so do the workers.
wait "$SINK"
echo "results: $OUTPUT ($(wc -l <"$OUTPUT") lines)" >&2
