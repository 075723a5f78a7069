#!/usr/bin/env bash
# Chaos runs: each run starts a whole pipeline on free loopback ports (a sink
# with --output, a ventilator, 2 or 3 workers of 2 threads, sometimes a device
# on the task or the result path), gives it a batch of 60-200 exec tasks that
# each append their task number to a run log, SIGKILLs one role at a random
# point of the batch (a worker, the sink, the ventilator or the device), and
# restarts it the way the README says after a short random pause:
#
#   worker      a new worker, the same flags
#   sink        `sink --resume`, the same --output and endpoints
#   ventilator  `ventilator --resume`, the same input and endpoints
#   device      the same device with the same flags
#
# Then it waits for the batch to end (the ventilator and the sink exit; at
# most CHAOS_TIMEOUT seconds) and checks that the output holds every task id
# exactly once, each ok, and that the run log shows every task ran at least
# once: the run is exact. What else looks wrong is a note on the run's line
# (a role's exit code other than 0, a first worker that did not end on END).
# One line per run and a summary; the exit code is 0 only if every run was
# exact (and, with CHAOS_STRICT=1, had no note). The logs of a run that was
# not exact or has a note are kept.
#
# Flags beyond the defaults: the ventilator gets --wait 10s (a resumed
# ventilator with no sink left to answer it gives up sooner), and with a
# device on the path --task-timeout 5s (a killed device loses the messages
# inside it; their tasks go out again only after the task timeout); push
# dispatch gets --window 20, so that a worker started mid-batch gets work.
#
#   scripts/chaos.sh [RUNS]                  (default 20)
#
# Environment:
#   CHAOS_SEED=N      the seed (default: a random one, printed). Run i uses
#                     seed N+i-1, printed on its line: CHAOS_SEED=<that> with
#                     RUNS=1 repeats that run's choices (ports and timing vary).
#   CHAOS_KEEP=DIR    keep the logs of failing runs here (default: a temp dir,
#                     printed; removed when every run is exact)
#   CHAOS_KEEP_ALL=1  keep the logs of every run
#   CHAOS_TIMEOUT=S   a run not done after S seconds fails (default 60)
#   CHAOS_STRICT=1    a run with a note fails too
#   CHAOS_LOG=LEVEL   RUST_LOG of every role (default info; the script reads
#                     the sink's "publishing END", an info line)
#   CHAOS_VICTIM=worker|sink|ventilator|device, CHAOS_DISPATCH=credit|push,
#   CHAOS_DEVICE=none|queue|streamer-tasks|streamer-results, CHAOS_AT=RESULTS
#                     pin one choice instead of drawing it
#
# Every process of a run carries CHAOS_RUN=<tag> in its environment, so that
# whatever it leaves behind (an exec task of a killed worker) is found and
# killed when the run ends, on Ctrl-C too.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-20}
case $RUNS in '' | *[!0-9]*)
    echo "usage: $0 [RUNS]" >&2
    exit 2
    ;;
esac
bad() { echo "chaos: $*" >&2; exit 2; }
case ${CHAOS_VICTIM:-} in '' | worker | sink | ventilator | device) ;; *) bad "CHAOS_VICTIM: worker, sink, ventilator or device" ;; esac
case ${CHAOS_DISPATCH:-} in '' | credit | push) ;; *) bad "CHAOS_DISPATCH: credit or push" ;; esac
case ${CHAOS_DEVICE:-} in '' | none | queue | streamer-tasks | streamer-results) ;;
    *) bad "CHAOS_DEVICE: none, queue, streamer-tasks or streamer-results" ;; esac
case ${CHAOS_DEVICE:-}/${CHAOS_DISPATCH:-} in queue/push | streamer-tasks/credit)
    bad "a queue on the task path needs credit dispatch, a streamer there push dispatch" ;; esac
case ${CHAOS_VICTIM:-}/${CHAOS_DEVICE:-} in device/none) bad "CHAOS_VICTIM=device needs a device" ;; esac
case ${CHAOS_AT:-0}${CHAOS_SEED:-0}${CHAOS_TIMEOUT:-0} in *[!0-9]*) bad "CHAOS_AT, CHAOS_SEED and CHAOS_TIMEOUT are numbers" ;; esac
SEED=${CHAOS_SEED:-$(((RANDOM << 15) | RANDOM))}
TIMEOUT=${CHAOS_TIMEOUT:-60}
LOG=${CHAOS_LOG:-info}

echo "building (release)..." >&2
cargo build --release --quiet -p sink -p worker -p ventilator -p devices
BIN=${CARGO_TARGET_DIR:-target}/release
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
FREE_PORTS=$PWD/scripts/free-ports

if [ -n "${CHAOS_KEEP:-}" ]; then
    KEEP=$CHAOS_KEEP
    mkdir -p "$KEEP"
    OWN_KEEP=0
else
    KEEP=$(mktemp -d -t zpipe-chaos-XXXXXX)
    OWN_KEEP=1
fi
KEEP=$(cd "$KEEP" && pwd)

# --- one run's processes ------------------------------------------------------

TAG=
PIDS=()    # every process started in this run
LAST_PID=

# spawn NAME CMD...: starts CMD in the background, its stderr in NAME.log and
# its stdout in NAME.out under the run's directory; its pid in LAST_PID.
spawn() {
    local name=$1
    shift
    CHAOS_RUN=$TAG RUST_LOG=$LOG "$@" </dev/null >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.log" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    # Until it has exec'd, the child carries the script's environment.
    local n
    for n in $(seq 100); do
        alive "$LAST_PID" && break
        kill -0 "$LAST_PID" 2>/dev/null || break
        sleep 0.01
    done
}

# Whether PID is a live process of this run: it carries the run's tag, so a
# pid the system has given to someone else since is never signalled.
alive() { grep -qzxF "CHAOS_RUN=$TAG" "/proc/$1/environ" 2>/dev/null; }

# The pids of processes that carry this run's tag (exec tasks included).
tagged() {
    [ -n "$TAG" ] || return 0
    grep -lzxF "CHAOS_RUN=$TAG" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 || true
}

# Stops every process of the run: SIGTERM, then SIGKILL after 3 s, then
# whatever still carries the tag (not our children: polled until gone).
# STOPPED: how many processes it had to stop.
STOPPED=0
stop_run() {
    local p n=0 deadline
    for p in "${PIDS[@]}"; do
        if alive "$p"; then
            kill -TERM "$p" 2>/dev/null || true
            n=$((n + 1))
        fi
    done
    deadline=$((SECONDS + 3))
    for p in "${PIDS[@]}"; do
        while alive "$p" && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
        if alive "$p"; then
            kill -KILL "$p" 2>/dev/null || true
            echo "killed $p: SIGTERM did not stop it" >>"$RUN_DIR/chaos.log"
        fi
        { wait "$p"; } 2>/dev/null || true
    done
    local left
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        left=$(tagged)
        [ -n "$left" ] || break
        for p in $left; do
            echo "leftover $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" >>"$RUN_DIR/chaos.log"
            kill -KILL "$p" 2>/dev/null || true
        done
        sleep 0.1
    done
    PIDS=()
    STOPPED=$n
}

# shellcheck disable=SC2317 # run by the trap
cleanup() {
    trap - EXIT INT TERM
    if [ ${#PIDS[@]} -gt 0 ]; then stop_run; fi
}
trap cleanup EXIT
trap 'echo "chaos: interrupted; logs in $KEEP" >&2; exit 130' INT TERM

lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
# secs FROM TO: seconds between two $EPOCHREALTIME readings, to a tenth.
secs() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "$2"; }

# --- one run ------------------------------------------------------------------

# Set by run_one for the summary.
R_VICTIM=
R_EXACT=0
R_KILLED=0
R_NOTED=0
R_RATIO=

# run_one I RUN_SEED
run_one() {
    local i=$1 rs=$2
    TAG="$$-$i"
    RUN_DIR=$KEEP/run-$i
    rm -rf "$RUN_DIR"
    mkdir -p "$RUN_DIR"
    local input=$RUN_DIR/input.jsonl runlog=$RUN_DIR/runlog out=$RUN_DIR/results.jsonl

    # The run's choices, from its seed alone; the input file too.
    local TASKS DISPATCH DEVICE NWORKERS VICTIM WHICH AT PAUSE choices
    choices=$(python3 - "$rs" "$input" "$runlog" \
        "${CHAOS_VICTIM:-}" "${CHAOS_DISPATCH:-}" "${CHAOS_DEVICE:-}" "${CHAOS_AT:-}" <<'EOF'
import json, random, sys
seed, path, runlog, victim, dispatch, device, at_pinned = sys.argv[1:8]
r = random.Random(int(seed))
tasks = r.randint(60, 200)
need = {"queue": "credit", "streamer-tasks": "push"}.get(device)
if need and dispatch and dispatch != need:
    sys.exit(f"chaos: a {device} on the task path needs {need} dispatch")
dispatch = dispatch or need or ("push" if r.random() < 0.3 else "credit")
if not device:
    device = "none"
    if r.random() < 0.6 or victim == "device":
        device = r.choice(["queue" if dispatch == "credit" else "streamer-tasks", "streamer-results"])
workers = r.randint(2, 3)
roles = ["worker", "sink", "ventilator"] + (["device", "device"] if device != "none" else [])
victim = victim or r.choice(roles)
which = r.randrange(workers)
at = r.randrange(0, tasks)            # kill once this many results are in the output
at = min(int(at_pinned), tasks - 1) if at_pinned else at
pause = round(r.uniform(0.1, 2.0), 2) # before the restart
with open(path, "w") as f:
    for t in range(tasks):
        cmd = f"sleep 0.0{r.randint(1, 9)}; echo {t} >> {runlog}"
        f.write(json.dumps({"kind": "exec", "command": cmd}) + "\n")
print(f"TASKS={tasks} DISPATCH={dispatch} DEVICE={device} NWORKERS={workers} "
      f"VICTIM={victim} WHICH={which} AT={at} PAUSE={pause}")
EOF
    )
    eval "$choices"
    : >"$runlog"

    local pt pr pc pf pd1 pd2
    read -r pt pr pc pf pd1 pd2 < <("$FREE_PORTS" 6)
    local lo=tcp://127.0.0.1
    local sink_flags=(--result-endpoint "$lo:$pr" --control-endpoint "$lo:$pc"
        --feedback-endpoint "$lo:$pf" --output "$out")
    local vent_tasks="$lo:$pt" w_tasks="$lo:$pt" w_results="$lo:$pr" dev_flags=() where=
    case $DEVICE in
        queue) # credit: workers' DEALERs meet its ROUTER, its DEALER the ventilator's ROUTER
            dev_flags=(queue --frontend "@$lo:$pd1" --backend "@$lo:$pd2")
            vent_tasks=">$lo:$pd2" w_tasks="$lo:$pd1" where="queue on the task path" ;;
        streamer-tasks) # push: the ventilator's PUSH into it, the workers' PULLs out of it
            dev_flags=(streamer --frontend "@$lo:$pd1" --backend "@$lo:$pd2")
            vent_tasks=">$lo:$pd1" w_tasks="$lo:$pd2" where="streamer on the task path" ;;
        streamer-results) # the workers' PUSHes into it, out to the sink's PULL
            dev_flags=(streamer --frontend "@$lo:$pd1" --backend ">$lo:$pr")
            w_results="$lo:$pd1" where="streamer on the result path" ;;
        none) where="no device" ;;
        *) echo "chaos: unknown device $DEVICE" >&2; exit 2 ;;
    esac
    local vent_flags=(--task-endpoint "$vent_tasks" --feedback-endpoint "$lo:$pf"
        --input "$input" --workers "$NWORKERS" --dispatch "$DISPATCH" --wait 10s)
    # Push: a window, so that a worker started mid-batch gets a share.
    if [ "$DISPATCH" = push ]; then vent_flags+=(--window 20); fi
    # A device that is killed loses the messages inside it; a task whose
    # result never comes goes out again after --task-timeout (15 min by
    # default), so with a device on the path the runs set it short.
    if [ "$DEVICE" != none ]; then vent_flags+=(--task-timeout 5s); fi
    local worker_flags=(--task-endpoint "$w_tasks" --result-endpoint "$w_results"
        --control-endpoint "$lo:$pc" --dispatch "$DISPATCH" --threads 2)
    {
        echo "seed $rs: $TASKS tasks, $DISPATCH, $where, $NWORKERS workers; kill $VICTIM at $AT results, restart after ${PAUSE}s"
        echo "ports: tasks $pt results $pr control $pc feedback $pf device $pd1 $pd2"
    } >"$RUN_DIR/chaos.log"

    local t0 sink_pid vent_pid dev_pid='' workers=() n
    t0=$EPOCHREALTIME
    spawn sink "$BIN/sink" "${sink_flags[@]}"
    sink_pid=$LAST_PID
    if [ "$DEVICE" != none ]; then
        spawn device "$BIN/devices" "${dev_flags[@]}"
        dev_pid=$LAST_PID
    fi
    for n in $(seq "$NWORKERS"); do
        spawn "worker-$n" "$BIN/worker" "${worker_flags[@]}"
        workers+=("$LAST_PID")
    done
    spawn ventilator "$BIN/ventilator" "${vent_flags[@]}"
    vent_pid=$LAST_PID

    local deadline=$((SECONDS + TIMEOUT)) failure='' notes='' kill_note late=0 target
    case $VICTIM in
        worker) target=${workers[$WHICH]} ;;
        sink) target=$sink_pid ;;
        ventilator) target=$vent_pid ;;
        device) target=$dev_pid ;;
        *) echo "chaos: unknown role $VICTIM" >&2; exit 2 ;;
    esac
    # The kill point: AT results in the output, the batch not complete.
    while [ "$(lines "$out")" -lt "$AT" ] && [ $SECONDS -lt $deadline ]; do
        alive "$vent_pid" || alive "$sink_pid" || break
        sleep 0.02
    done
    local at_results at_time=$EPOCHREALTIME
    at_results=$(lines "$out")
    if alive "$target" && [ "$at_results" -lt "$TASKS" ] && ! grep -q "publishing END" "$RUN_DIR/sink.log"; then
        { kill -KILL "$target" && wait "$target"; } 2>/dev/null || true
        echo "$EPOCHREALTIME SIGKILL $VICTIM pid $target at $at_results results" >>"$RUN_DIR/chaos.log"
        R_KILLED=1
        at_time=$(secs "$t0" "$at_time")
        kill_note="killed $VICTIM at $at_results/$TASKS results (${at_time}s)"
        # The sink may have completed the batch in the moment before the
        # kill: then the ventilator may be gone, and a resumed sink waits
        # for a ventilator that never comes.
        if grep -q "publishing END" "$RUN_DIR/sink.log"; then late=1; fi
        sleep "$PAUSE"
        case $VICTIM in
            worker)
                spawn "worker-$((NWORKERS + 1))" "$BIN/worker" "${worker_flags[@]}"
                workers+=("$LAST_PID") ;;
            sink)
                spawn sink-2 "$BIN/sink" "${sink_flags[@]}" --resume
                sink_pid=$LAST_PID ;;
            ventilator)
                spawn ventilator-2 "$BIN/ventilator" "${vent_flags[@]}" --resume
                vent_pid=$LAST_PID ;;
            device)
                spawn device-2 "$BIN/devices" "${dev_flags[@]}"
                dev_pid=$LAST_PID ;;
        esac
        echo "$EPOCHREALTIME restarted $VICTIM: pid $LAST_PID" >>"$RUN_DIR/chaos.log"
        kill_note="$kill_note, back after ${PAUSE}s"
    else
        R_KILLED=0
        kill_note="no kill: the batch was complete before the kill point ($AT results)"
    fi

    # The batch ends when the ventilator and the sink have exited.
    local vent_said='' sink_said=''
    while { alive "$vent_pid" || alive "$sink_pid"; } && [ $SECONDS -lt $deadline ]; do
        if [ -z "$vent_said" ] && ! alive "$vent_pid"; then
            vent_said=1
            echo "$EPOCHREALTIME the ventilator (pid $vent_pid) has exited" >>"$RUN_DIR/chaos.log"
        fi
        if [ -z "$sink_said" ] && ! alive "$sink_pid"; then
            sink_said=1
            echo "$EPOCHREALTIME the sink (pid $sink_pid) has exited" >>"$RUN_DIR/chaos.log"
        fi
        if [ $late = 1 ] && [ "$VICTIM" = sink ] && ! alive "$vent_pid" && alive "$sink_pid"; then
            notes="${notes:+$notes; }the batch completed just before the kill: the resumed sink stopped"
            kill -TERM "$sink_pid" 2>/dev/null || true
            { wait "$sink_pid"; } 2>/dev/null || true
            break
        fi
        sleep 0.05
    done
    local took vent_rc=- sink_rc=-
    took="done in $(secs "$t0" "$EPOCHREALTIME")s"
    if alive "$vent_pid" || alive "$sink_pid"; then
        took="stopped after $(secs "$t0" "$EPOCHREALTIME")s"
        failure="not done after ${TIMEOUT}s:"
        if alive "$vent_pid"; then failure="$failure the ventilator still runs"; fi
        if alive "$sink_pid"; then failure="$failure the sink still runs"; fi
    else
        wait "$vent_pid" && vent_rc=0 || vent_rc=$?
        wait "$sink_pid" && sink_rc=0 || sink_rc=$?
        if [ "$vent_rc" != 0 ]; then notes="${notes:+$notes; }ventilator exit $vent_rc"; fi
        if [ "$sink_rc" != 0 ] && [ $late = 0 ]; then notes="${notes:+$notes; }sink exit $sink_rc"; fi
        # The workers end on END (a worker started after END never hears
        # it; the others should).
        local wd=$((SECONDS + 3)) p k=0
        for p in "${workers[@]}"; do
            while alive "$p" && [ $SECONDS -lt $wd ]; do sleep 0.05; done
        done
        for p in "${workers[@]:0:NWORKERS}"; do
            k=$((k + 1))
            if alive "$p"; then notes="${notes:+$notes; }worker-$k did not end"; fi
        done
    fi
    stop_run
    echo "$EPOCHREALTIME $took; ventilator exit $vent_rc, sink exit $sink_rc; stopped $STOPPED process(es) at the end" >>"$RUN_DIR/chaos.log"

    # The check: every task id once in the output, each ok; every task in
    # the run log at least once.
    local verdict
    verdict=$(python3 - "$out" "$runlog" "$TASKS" <<'EOF'
import collections, json, sys
out, runlog, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen, bad, notok, batches = collections.Counter(), [], [], set()
try:
    text = open(out).read()
except OSError:
    text = ""
for n, line in enumerate(text.splitlines(), 1):
    try:
        v = json.loads(line)
        seen[v["task"]] += 1
        batches.add(v.get("batch"))
        if v.get("status") != "ok":
            notok.append(f'{v["task"]}:{v.get("status")}')
    except Exception:
        bad.append(n)
ran = collections.Counter(int(x) for x in open(runlog).read().split())
execs = sum(ran.values())
def few(xs):
    xs = sorted(xs)
    return ",".join(map(str, xs[:12])) + (",..." if len(xs) > 12 else "")
problems = []
missing = [t for t in range(tasks) if seen[t] == 0]
dups = [t for t, c in seen.items() if c > 1]
stray = [t for t in seen if not isinstance(t, int) or not 0 <= t < tasks]
never = [t for t in range(tasks) if ran[t] == 0]
if missing: problems.append(f"missing {len(missing)} [{few(missing)}]")
if dups: problems.append(f"duplicated {len(dups)} [{few(dups)}]")
if stray: problems.append(f"unknown ids {few(map(str, stray))}")
if notok: problems.append(f"not ok {len(notok)} [{few(notok)}]")
if bad: problems.append(f"malformed lines {few(bad)}")
if len(batches) > 1: problems.append(f"{len(batches)} batches in one output")
if never: problems.append(f"never ran {len(never)} [{few(never)}]")
print(f"{execs} {execs / tasks:.3f} " + ("exact" if not problems else "; ".join(problems)))
EOF
    )
    local execs ratio rest
    read -r execs ratio rest <<<"$verdict"
    if [ -n "$failure" ]; then
        if [ "$rest" = exact ]; then rest=$failure; else rest="$failure; $rest"; fi
    fi
    R_VICTIM=$VICTIM
    R_RATIO=$ratio
    R_EXACT=0
    R_NOTED=0
    if [ "$rest" = exact ]; then R_EXACT=1; fi
    if [ -n "$notes" ]; then R_NOTED=1; fi
    printf 'run %3d  seed %-10s %-6s %-27s %3d tasks: %s; %s; %d executions (%.2fx); %s%s\n' \
        "$i" "$rs" "$DISPATCH" "$where," "$TASKS" "$kill_note" "$took" "$execs" "$ratio" "$rest" "${notes:+ (note: $notes)}"
    echo "verdict: $rest${notes:+ (note: $notes)}" >>"$RUN_DIR/chaos.log"
    if [ $R_EXACT = 1 ] && [ $R_NOTED = 0 ] && [ -z "${CHAOS_KEEP_ALL:-}" ]; then
        rm -rf "$RUN_DIR"
    else
        echo "         logs: $RUN_DIR"
    fi
    TAG=
}

# --- the runs -------------------------------------------------------------------

echo "chaos: $RUNS run(s), seed $SEED; $(nproc) cores; logs of failing runs in $KEEP"
declare -A KILLS=([worker]=0 [sink]=0 [ventilator]=0 [device]=0)
RATIOS=()
EXACT=0
NOKILL=0
NOTED=0
for i in $(seq "$RUNS"); do
    run_one "$i" $((SEED + i - 1))
    if [ $R_KILLED = 1 ]; then
        KILLS[$R_VICTIM]=$((KILLS[$R_VICTIM] + 1))
        RATIOS+=("$R_RATIO")
    else
        NOKILL=$((NOKILL + 1))
    fi
    EXACT=$((EXACT + R_EXACT))
    NOTED=$((NOTED + R_NOTED))
done
SUMMARY="$RUNS runs, $EXACT exact; kills: worker ${KILLS[worker]}, sink ${KILLS[sink]}, ventilator ${KILLS[ventilator]}, device ${KILLS[device]}"
if [ $NOKILL -gt 0 ]; then SUMMARY="$SUMMARY ($NOKILL complete before the kill point)"; fi
if [ ${#RATIOS[@]} -gt 0 ]; then
    SUMMARY="$SUMMARY; executions: $(python3 -c 'import statistics, sys; v = [float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.2f}x tasks (median), {max(v):.2f}x at most")' "${RATIOS[@]}")"
fi
if [ $NOTED -gt 0 ]; then SUMMARY="$SUMMARY; $NOTED with notes"; fi
echo "$SUMMARY"
FAILED=$((RUNS - EXACT))
if [ -n "${CHAOS_STRICT:-}" ]; then FAILED=$((FAILED + NOTED)); fi
if [ $FAILED -eq 0 ]; then
    if [ "$OWN_KEEP" = 1 ] && [ $NOTED -eq 0 ] && [ -z "${CHAOS_KEEP_ALL:-}" ]; then rm -rf "$KEEP"; fi
    exit 0
fi
echo "chaos: $((RUNS - EXACT)) run(s) not exact${CHAOS_STRICT:+, $NOTED with notes}; logs in $KEEP" >&2
exit 1
