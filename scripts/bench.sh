#!/usr/bin/env bash
# zpipe's benchmark: every figure is printed next to a baseline measured in the
# same run on the same machine, and each is the median of RUNS runs (these
# machines are small and noisy: compare within one run, quote medians).
#
#   (a) raw libzmq, two hops, three processes: PUSH→PULL→PUSH→PULL, 16-byte messages
#   (b) zpipe, no-op tasks, one worker thread: ventilator → worker → sink,
#       push dispatch and credit dispatch
#   (c) b / a, for each
#   (d) 1000 × 10 ms sleep tasks over 10 worker threads: elapsed against the
#       ideal and against the sleep floor (one thread sleeping its share of
#       the same sleeps back to back: no pipeline can beat that)
#   (e) the guide's random batch (Python's random.seed(42), 100 x randint(1, 100),
#       made here: the guide's own figures are for this batch) dealt to 1, 2,
#       4 and 8 single-threaded workers: push round-robin, credit, and credit
#       with --order cost, side by side
#   (f) a standing pool (sink --serve, worker --serve) against a fresh one:
#       the same batch (20 000 no-op tasks; 1000 x 10 ms sleeps over 10
#       threads) submitted to a pool already running, timed from the
#       ventilator's start to its exit, against starting sink, workers and
#       ventilator for it, timed until all have exited
#   (g) where a Slurm test cluster can run (root, Debian's slurm and munge;
#       scripts/slurm-lab.sh): from sbatch (scripts/slurm-workers.sh, one
#       pilot) to the first task's result at the hub
#   (h) exec tasks against xargs (and GNU parallel where installed), the
#       same commands in the same run: 2000 x `true` on 2 slots against
#       `xargs -P2 -I{} sh -c '{}'`, 1000 x `sleep 0.01` on 10 slots against
#       `xargs -P10`; zpipe is one worker of 2 (10) threads with the sink,
#       both already waiting, timed from the ventilator's start to its exit
#       (every result written); each figure a ratio to xargs in its run;
#       the sleeps also against `xargs -P10 -n1 sleep`, no shell at all
#   (i) a 1-task batch, sink and worker already waiting: from the
#       ventilator's start to the task running, and to every process of
#       the batch having exited
#   (j) 10 000 x 1 ms sleep tasks on 1 worker of 64 threads and on 8 of 8,
#       against 64 threads sleeping their share (ONLY=threads)
#   (k) scale: the peak memory of the ventilator and of the sink for a batch
#       of 1 M and of 10 M no-op tasks, and what one task costs each
#       (ONLY=memory runs it alone)
#
# Usage: scripts/bench.sh [RUNS] [--plot DIR]   (RUNS default 5; TASKS=200000
#        to change (b); ONLY=pool to run (f) and (g) alone, ONLY=guide (e))
#
#   --plot DIR (before or after RUNS) also draws (e), with the sink's own
#   `sink plot`: DIR/scaling.csv holds the median elapsed ms of each mode
#   at each worker count and the ideal (sum / workers), drawn as
#   DIR/scaling.svg; and the 4-worker runs of push and of credit keep
#   their results (the run of median elapsed, as DIR/timeline-push.jsonl
#   and DIR/timeline-credit.jsonl), drawn as DIR/timeline-push.svg and
#   DIR/timeline-credit.svg. The README's pictures are made so:
#   ONLY=guide scripts/bench.sh 5 --plot docs/pictures
#        METRICS=1 runs every role with --metrics (its cost); ONLY=throughput
#        runs (a) to (c) alone; ONLY=exec runs (h) and (i) alone
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=5
PLOT=
while [ $# -gt 0 ]; do
    case $1 in
        --plot) PLOT=${2:?"--plot needs a directory"}; shift 2 ;;
        --plot=*) PLOT=${1#--plot=}; shift ;;
        *[!0-9]* | '' | 0) echo "usage: scripts/bench.sh [RUNS] [--plot DIR] (not: $1)" >&2; exit 2 ;;
        *) RUNS=$1; shift ;;
    esac
done
if [ -n "$PLOT" ]; then
    # Relative to where the script was started, not the repository.
    case $PLOT in /*) ;; *) PLOT=$OLDPWD/$PLOT ;; esac
    mkdir -p "$PLOT"
fi
TASKS=${TASKS:-200000}
# METRICS=1: every role of (b) to (e) serves Prometheus metrics on a free port.
MFLAGS=()
if [ -n "${METRICS:-}" ]; then MFLAGS=(--metrics 127.0.0.1:0); fi

ONLY=${ONLY:-}
# BIN=DIR benchmarks the ventilator, worker and sink in DIR instead (a
# build of another commit, say), against the same baselines.
B=${BIN:-target/release}
[ -n "${BIN:-}" ] || cargo build --release --quiet -p ventilator -p worker -p sink
cargo build --release --quiet -p common --example rawpipe
RAW=target/release/examples/rawpipe
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
GUIDE=$TMP/guide-batch.txt
python3 -c 'import random; random.seed(42); [print(random.randint(1, 100)) for _ in range(100)]' >"$GUIDE"

# Free loopback ports (see scripts/free-ports).
ports() { scripts/free-ports "$1"; }

# Waits for the given processes, at most 120 s: a lost message must not hang
# the benchmark.
wait_all() {
    local deadline=$((SECONDS + 120))
    for p in "$@"; do
        while kill -0 "$p" 2>/dev/null; do
            if [ $SECONDS -ge $deadline ]; then
                echo "bench: a process did not finish in time; stopping" >&2
                kill "$@" 2>/dev/null || true
                exit 1
            fi
            sleep 0.05
        done
        wait "$p" || { echo "bench: process $p failed" >&2; exit 1; }
    done
}

median() { python3 -c 'import sys, statistics; v=[float(x) for x in sys.argv[1:]]; print(statistics.median(v))' "$@"; }
field() { python3 -c 'import json, sys; r=json.load(open(sys.argv[1])); print(r[sys.argv[2]])' "$1" "$2"; }

raw_run() {
    read -r p1 p2 < <(ports 2)
    "$RAW" drain "tcp://127.0.0.1:$p2" "$TASKS" >"$TMP/raw" &
    local d=$!
    "$RAW" relay "tcp://127.0.0.1:$p1" "tcp://127.0.0.1:$p2" "$TASKS" &
    local r=$!
    "$RAW" source "tcp://127.0.0.1:$p1" "$TASKS"
    wait_all "$d" "$r"
    cat "$TMP/raw"
}

# zpipe_run REPORT WORKERS THREADS DISPATCH VENTILATOR-FLAGS...
zpipe_run() {
    local report=$1 workers=$2 threads=$3 dispatch=$4
    shift 4
    read -r pt pr pc pf < <(ports 4)
    RUST_LOG=warn "$B/sink" --result-endpoint "tcp://127.0.0.1:$pr" --control-endpoint "tcp://127.0.0.1:$pc" \
        --feedback-endpoint "tcp://127.0.0.1:$pf" --output "${SINK_OUTPUT:-/dev/null}" --report "$report" "${MFLAGS[@]}" 2>"$TMP/sink.log" &
    local s=$!
    local ws=()
    for _ in $(seq "$workers"); do
        RUST_LOG=warn "$B/worker" --task-endpoint "tcp://127.0.0.1:$pt" --result-endpoint "tcp://127.0.0.1:$pr" \
            --control-endpoint "tcp://127.0.0.1:$pc" --threads "$threads" --dispatch "$dispatch" "${MFLAGS[@]}" &
        ws+=($!)
    done
    RUST_LOG=warn "$B/ventilator" --task-endpoint "tcp://127.0.0.1:$pt" --feedback-endpoint "tcp://127.0.0.1:$pf" \
        --workers "$workers" --wait 20s --dispatch "$dispatch" "${MFLAGS[@]}" "$@" >/dev/null || { cat "$TMP/sink.log" >&2; kill "$s" "${ws[@]}" 2>/dev/null; exit 1; }
    wait_all "$s" "${ws[@]}"
}

now() { date +%s.%N; }
since() { python3 -c "import sys; print((float(sys.argv[2]) - float(sys.argv[1])) * 1000)" "$1" "$(now)"; }

# pool_start WORKERS THREADS: a standing sink and workers on free ports.
pool_start() {
    read -r pt pr pc pf < <(ports 4)
    POOL_TASKS=tcp://127.0.0.1:$pt
    POOL_FEEDBACK=tcp://127.0.0.1:$pf
    POOL_RESULTS=tcp://127.0.0.1:$pr
    POOL_CONTROL=tcp://127.0.0.1:$pc
    # A directory of its own for each pool: the same batch sent to a pool
    # that holds its results already would be refused (--resume).
    POOL_DIR=$(mktemp -d "$TMP/pool.XXXX")
    RUST_LOG=warn "$B/sink" --serve --output-dir "$POOL_DIR" --result-endpoint "$POOL_RESULTS" \
        --control-endpoint "$POOL_CONTROL" --feedback-endpoint "$POOL_FEEDBACK" 2>"$TMP/pool-sink.log" &
    POOL=($!)
    for _ in $(seq "$1"); do
        RUST_LOG=warn "$B/worker" --serve --task-endpoint "$POOL_TASKS" --result-endpoint "$POOL_RESULTS" \
            --control-endpoint "$POOL_CONTROL" --threads "$2" &
        POOL+=($!)
    done
    PIDS+=("${POOL[@]}")
}
# submit WORKERS VENTILATOR-FLAGS...: one batch to the pool.
submit() {
    local workers=$1
    shift
    RUST_LOG=warn "$B/ventilator" --task-endpoint "$POOL_TASKS" --feedback-endpoint "$POOL_FEEDBACK" \
        --workers "$workers" --wait 20s "$@" >/dev/null || { cat "$TMP/pool-sink.log" >&2; exit 1; }
}
pool_stop() {
    kill -TERM "${POOL[0]}"
    wait_all "${POOL[@]}"
}

# pool_vs_fresh LABEL WORKERS THREADS VENTILATOR-FLAGS...
pool_vs_fresh() {
    local label=$1 workers=$2 threads=$3
    shift 3
    local fresh=() pooled=() ratio=()
    for i in $(seq "$RUNS"); do
        local t0
        t0=$(now)
        zpipe_run "$TMP/f.json" "$workers" "$threads" credit "$@"
        fresh+=("$(since "$t0")")
        pool_start "$workers" "$threads"
        submit "$workers" --tasks 1 --kind noop          # the pool is up and connected
        t0=$(now)
        submit "$workers" "$@"
        pooled+=("$(since "$t0")")
        pool_stop
        ratio+=("$(python3 -c "print(${pooled[-1]} / ${fresh[-1]})")")
        printf '  run %d: fresh %.0f ms, pool %.0f ms (%.2f)\n' "$i" "${fresh[-1]}" "${pooled[-1]}" "${ratio[-1]}"
    done
    printf '  (f) %-28s fresh %7.0f ms, standing pool %7.0f ms: pool / fresh %.2f (medians)\n' \
        "$label" "$(median "${fresh[@]}")" "$(median "${pooled[@]}")" "$(median "${ratio[@]}")"
}

pool_section() {
    echo
    echo "A standing pool against a fresh one, the same batch (credit dispatch)"
    pool_vs_fresh "20000 no-op, 2 workers" 2 1 --tasks 20000 --kind noop
    pool_vs_fresh "1000 x 10 ms, 10 threads" 1 10 --tasks 1000 --kind sleep --workload 10

    echo
    echo "Slurm: from sbatch to the first task's result (one pilot, scripts/slurm-workers.sh)"
    local lab=/tmp/zb$$
    if ! scripts/slurm-lab.sh up "$lab" 2>"$TMP/slurm-lab.log"; then
        echo "  (g) skipped: $(tail -n 1 "$TMP/slurm-lab.log")"
        return
    fi
    local firsts=()
    for i in $(seq "$RUNS"); do
        pool_start 0 1
        local t0 job
        t0=$(now)
        job=$(SLURM_CONF=$lab/slurm.conf scripts/slurm-workers.sh --workers 1 --idle-exit 1m \
            --task-endpoint "$POOL_TASKS" --result-endpoint "$POOL_RESULTS" --control-endpoint "$POOL_CONTROL" \
            --worker-bin "$PWD/$B/worker" --output "$TMP/pilot-%j.log" 2>/dev/null)
        submit 1 --tasks 1 --kind noop
        firsts+=("$(since "$t0")")
        SLURM_CONF=$lab/slurm.conf scancel "$job"
        pool_stop
        printf '  run %d: %.0f ms\n' "$i" "${firsts[-1]}"
    done
    scripts/slurm-lab.sh down "$lab" >/dev/null 2>&1 || true
    printf '  (g) sbatch to the first result: %.0f ms (median)\n' "$(median "${firsts[@]}")"
}

# (e), and with --plot its pictures.
guide_section() {
    [ -s "$GUIDE" ] || return 0
    echo
    echo "The guide's random batch ($(wc -l <"$GUIDE") tasks of 1-100 ms): elapsed over ideal (sum / workers), medians"
    echo "  (the guide's Python pipeline, push: +0.6 %, +5.6 %, +17.3 %, +21.1 %; a perfect online greedy dispatcher: 0, 0.9 %... 6.2 % at 8)"
    printf '  %-8s %10s %10s %14s\n' workers push credit "credit+cost"
    [ -z "$PLOT" ] || echo "workers,ideal,push,credit,credit+cost" >"$PLOT/scaling.csv"
    local shown=()
    for w in 1 2 4 8; do
        row=(); elapsed=(); ideal=
        for mode in push credit cost; do
            overs=(); els=()
            for i in $(seq "$RUNS"); do
                # With --plot, the 4-worker push and credit runs keep their results.
                local keep=/dev/null
                if [ -n "$PLOT" ] && [ "$w" = 4 ] && [ "$mode" != cost ]; then keep=$TMP/tl-$mode-$i.jsonl; fi
                if [ "$mode" = cost ]; then
                    SINK_OUTPUT=$keep zpipe_run "$TMP/e.json" "$w" 1 credit --input "$GUIDE" --plain sleep --order cost
                else
                    SINK_OUTPUT=$keep zpipe_run "$TMP/e.json" "$w" 1 "$mode" --input "$GUIDE" --plain sleep
                fi
                overs+=("$(field "$TMP/e.json" overhead_pct)")
                els+=("$(field "$TMP/e.json" elapsed_ms)")
                ideal=$(field "$TMP/e.json" ideal_ms)
            done
            row+=("$(median "${overs[@]}")")
            elapsed+=("$(median "${els[@]}")")
            if [ -n "$PLOT" ] && [ "$w" = 4 ] && [ "$mode" != cost ]; then
                # The run whose elapsed is nearest the median stands for them all.
                local pick
                pick=$(python3 -c 'import sys; m=float(sys.argv[1]); v=[float(x) for x in sys.argv[2:]]; print(1 + min(range(len(v)), key=lambda i: abs(v[i] - m)))' "${elapsed[-1]}" "${els[@]}")
                cp "$TMP/tl-$mode-$pick.jsonl" "$PLOT/timeline-$mode.jsonl"
                shown+=("${els[pick - 1]}")
            fi
        done
        if [ -n "$PLOT" ] && [ "$w" = 4 ]; then
            # Both on one time scale, to be seen side by side.
            local x_max
            x_max=$(python3 -c 'import sys; print(max(float(x) for x in sys.argv[1:]) * 1.02)' "${shown[@]}")
            for mode in push credit; do
                "$B/sink" plot timeline "$PLOT/timeline-$mode.jsonl" --width 800 --x-max "$x_max" \
                    -o "$PLOT/timeline-$mode.svg"
            done
        fi
        printf '  (e) %-4d %+9.1f%% %+9.1f%% %+13.1f%%\n' "$w" "${row[0]}" "${row[1]}" "${row[2]}"
        [ -z "$PLOT" ] || printf '%d,%.1f,%.1f,%.1f,%.1f\n' "$w" "$ideal" "${elapsed[@]}" >>"$PLOT/scaling.csv"
    done
    echo "  targets: credit within 3 % at 4 workers and 8 % at 8; credit+cost within 2 % at 8"
    if [ -n "$PLOT" ]; then
        "$B/sink" plot scaling "$PLOT/scaling.csv" -o "$PLOT/scaling.svg" \
            --title "The guide's random batch: elapsed against single-threaded workers (medians of $RUNS runs)"
        echo "  pictures: $PLOT/scaling.svg, $PLOT/timeline-push.svg, $PLOT/timeline-credit.svg"
    fi
}

# (j) 10 000 x 1 ms sleep tasks on many threads: one worker of 64 threads,
# and 8 workers of 8, credit dispatch, against the floor of the same
# threads sleeping their share back to back (rawpipe sleep 10000 1 64).
many_threads_section() {
    echo
    echo "Fine-grained tasks on many threads: 10000 x 1 ms sleeps, credit dispatch (ideal 156.25 ms)"
    local label workers threads
    for shape in "1 64" "8 8"; do
        read -r workers threads <<<"$shape"
        local els=() floors=() beyond=()
        for i in $(seq "$RUNS"); do
            zpipe_run "$TMP/i.json" "$workers" "$threads" credit --tasks 10000 --kind sleep --workload 1
            local e f
            e=$(field "$TMP/i.json" elapsed_ms)
            f=$("$RAW" sleep 10000 1 64)
            els+=("$e"); floors+=("$f")
            beyond+=("$(python3 -c "print(($e - $f) / 156.25 * 100)")")
        done
        printf '  (j) %d x %-2d threads: elapsed %.1f ms, floor %.1f ms, beyond the floor %+.1f points (median; target <= 10)\n' \
            "$workers" "$threads" "$(median "${els[@]}")" "$(median "${floors[@]}")" "$(median "${beyond[@]}")"
    done
}

# (k) peak memory (resident set, as the kernel counts it for a process
# that has exited) of the ventilator and of the sink, one batch of N no-op
# tasks to one worker (credit dispatch), once each at 1 M and 10 M; the
# growth from one to the other, per task, is what a task costs.
peak_kb() { python3 -c 'import resource, subprocess, sys; r = subprocess.run(sys.argv[2:]); open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(r.returncode)' "$@"; }
memory_run() {
    local n=$1
    read -r pt pr pc pf < <(ports 4)
    RUST_LOG=warn peak_kb "$TMP/sink.kb" "$B/sink" --result-endpoint "tcp://127.0.0.1:$pr" --control-endpoint "tcp://127.0.0.1:$pc" \
        --feedback-endpoint "tcp://127.0.0.1:$pf" --output /dev/null --report "$TMP/h.json" 2>"$TMP/sink.log" &
    local s=$!
    RUST_LOG=warn "$B/worker" --task-endpoint "tcp://127.0.0.1:$pt" --result-endpoint "tcp://127.0.0.1:$pr" \
        --control-endpoint "tcp://127.0.0.1:$pc" &
    local w=$!
    RUST_LOG=warn peak_kb "$TMP/vent.kb" "$B/ventilator" --task-endpoint "tcp://127.0.0.1:$pt" --feedback-endpoint "tcp://127.0.0.1:$pf" \
        --workers 1 --wait 20s --tasks "$n" --kind noop >/dev/null || { cat "$TMP/sink.log" >&2; kill "$s" "$w" 2>/dev/null; exit 1; }
    wait_all "$s" "$w"
    echo "$(cat "$TMP/vent.kb") $(cat "$TMP/sink.kb") $(field "$TMP/h.json" ok)"
}
memory_section() {
    echo
    echo "Scale: peak memory of one batch of no-op tasks, one worker, credit dispatch"
    local v1 s1 ok1 v10 s10 ok10
    read -r v1 s1 ok1 < <(memory_run 1000000)
    printf '  (k) 1 M tasks:  ventilator %6.1f MB, sink %5.1f MB (%s results)\n' "$(python3 -c "print($v1 / 1024)")" "$(python3 -c "print($s1 / 1024)")" "$ok1"
    read -r v10 s10 ok10 < <(memory_run 10000000)
    printf '      10 M tasks: ventilator %6.1f MB, sink %5.1f MB (%s results)\n' "$(python3 -c "print($v10 / 1024)")" "$(python3 -c "print($s10 / 1024)")" "$ok10"
    printf '      per task (10 M less 1 M): ventilator %.1f bytes (target < 64), sink %.2f bytes (flat: a few bits)\n' \
        "$(python3 -c "print(($v10 - $v1) * 1024 / 9e6)")" "$(python3 -c "print(max(0, $s10 - $s1) * 1024 / 9e6)")"
}

# exec_zpipe INPUT THREADS: ms from the ventilator's start to its exit (the
# batch's every result written), with the sink and one worker of THREADS
# threads already running.
exec_zpipe() {
    local input=$1 threads=$2
    read -r pt pr pc pf < <(ports 4)
    RUST_LOG=warn "$B/sink" --result-endpoint "tcp://127.0.0.1:$pr" --control-endpoint "tcp://127.0.0.1:$pc" \
        --feedback-endpoint "tcp://127.0.0.1:$pf" --output /dev/null 2>"$TMP/sink.log" &
    local s=$!
    RUST_LOG=warn "$B/worker" --task-endpoint "tcp://127.0.0.1:$pt" --result-endpoint "tcp://127.0.0.1:$pr" \
        --control-endpoint "tcp://127.0.0.1:$pc" --threads "$threads" &
    local w=$!
    sleep 0.3
    local t0
    t0=$(now)
    RUST_LOG=warn "$B/ventilator" --task-endpoint "tcp://127.0.0.1:$pt" --feedback-endpoint "tcp://127.0.0.1:$pf" \
        --workers 1 --wait 20s --input "$input" >/dev/null || { cat "$TMP/sink.log" >&2; kill "$s" "$w" 2>/dev/null; exit 1; }
    since "$t0"
    wait_all "$s" "$w"
}

# exec_row LABEL INPUT SLOTS [PROGRAM ARGS-INPUT]: zpipe, xargs and GNU
# parallel on the same commands, interleaved run by run; with PROGRAM, also
# xargs starting PROGRAM with each line of ARGS-INPUT directly, no shell
# (the floor: one fork and exec a task; zpipe starts a command of plain
# words so too, see worker/src/exec.rs).
exec_row() {
    local label=$1 input=$2 slots=$3 program=${4:-} args=${5:-}
    local xs=() zs=() ps=() rz=() rp=() ds=() rd=()
    for i in $(seq "$RUNS"); do
        local t0 x z p= d=
        t0=$(now)
        xargs -P"$slots" -I{} sh -c '{}' <"$input"
        x=$(since "$t0")
        z=$(exec_zpipe "$input" "$slots")
        xs+=("$x"); zs+=("$z"); rz+=("$(python3 -c "print($z / $x)")")
        if [ -n "$program" ]; then
            t0=$(now)
            xargs -P"$slots" -n1 "$program" <"$args"
            d=$(since "$t0")
            ds+=("$d"); rd+=("$(python3 -c "print($z / $d)")")
            printf '  run %d: xargs without a shell %.0f ms (zpipe %.2f x it)\n' "$i" "$d" "${rd[-1]}"
        fi
        if command -v parallel >/dev/null; then
            t0=$(now)
            parallel --will-cite -j"$slots" <"$input"
            p=$(since "$t0")
            ps+=("$p"); rp+=("$(python3 -c "print($p / $x)")")
            printf '  run %d: xargs %.0f ms; zpipe %.0f ms (%.2f); parallel %.0f ms (%.2f)\n' \
                "$i" "$x" "$z" "${rz[-1]}" "$p" "${rp[-1]}"
        else
            printf '  run %d: xargs %.0f ms; zpipe %.0f ms (%.2f)\n' "$i" "$x" "$z" "${rz[-1]}"
        fi
    done
    printf '  (h) %-26s xargs %6.0f ms; zpipe %6.0f ms, %.2f x xargs' \
        "$label" "$(median "${xs[@]}")" "$(median "${zs[@]}")" "$(median "${rz[@]}")"
    if [ ${#ps[@]} -gt 0 ]; then
        printf '; GNU parallel %6.0f ms, %.2f x xargs' "$(median "${ps[@]}")" "$(median "${rp[@]}")"
    else
        printf '; GNU parallel not installed'
    fi
    printf ' (medians of per-run ratios)\n'
    if [ ${#ds[@]} -gt 0 ]; then
        printf '      xargs -P%d -n1 %s (no shell) %6.0f ms; zpipe %.2f x it\n' \
            "$slots" "$program" "$(median "${ds[@]}")" "$(median "${rd[@]}")"
    fi
}

# exit_times VENTILATOR-ARGS...: starts the ventilator; prints when the task
# ran (the task writes its clock to $TMP/first) and when the last of the
# ventilator and the processes in $WATCH had exited, in ms from its start.
exit_times() {
    python3 - "$TMP/first" "$WATCH" "$@" <<'PY'
import os, subprocess, sys, time
first_file, watch, argv = sys.argv[1], [int(p) for p in sys.argv[2].split()], sys.argv[3:]
t0 = time.time_ns()
v = subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
gone = {}
while len(gone) < len(watch) + 1:
    if v.pid not in gone and v.poll() is not None:
        gone[v.pid] = time.time_ns()
    for p in watch:
        if p in gone:
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = "gone"
        if state in ("Z", "gone"):
            gone[p] = time.time_ns()
    time.sleep(0.0005)
first = int(open(first_file).read())
print((first - t0) / 1e6, (max(gone.values()) - t0) / 1e6, (max(gone.values()) - first) / 1e6)
PY
}

latency_row() {
    local firsts=() ends=() afters=()
    echo "date +%s%N >$TMP/first" >"$TMP/one.txt"
    for i in $(seq "$RUNS"); do
        read -r pt pr pc pf < <(ports 4)
        RUST_LOG=warn "$B/sink" --result-endpoint "tcp://127.0.0.1:$pr" --control-endpoint "tcp://127.0.0.1:$pc" \
            --feedback-endpoint "tcp://127.0.0.1:$pf" --output /dev/null 2>"$TMP/sink.log" &
        local s=$!
        RUST_LOG=warn "$B/worker" --task-endpoint "tcp://127.0.0.1:$pt" --result-endpoint "tcp://127.0.0.1:$pr" \
            --control-endpoint "tcp://127.0.0.1:$pc" &
        local w=$!
        sleep 0.5
        read -r f e a < <(WATCH="$s $w" exit_times "$B/ventilator" --task-endpoint "tcp://127.0.0.1:$pt" \
            --feedback-endpoint "tcp://127.0.0.1:$pf" --workers 1 --wait 20s --input "$TMP/one.txt")
        wait_all "$s" "$w"
        firsts+=("$f"); ends+=("$e"); afters+=("$a")
        printf '  run %d: task running at %.1f ms, every process exited at %.1f ms (%.1f ms after the task)\n' "$i" "$f" "$e" "$a"
    done
    printf '  (i) 1-task batch: ventilator start to the task running %.1f ms (target < 50); to every process exited %.1f ms, %.1f ms after the task ran (target < 100) (medians)\n' \
        "$(median "${firsts[@]}")" "$(median "${ends[@]}")" "$(median "${afters[@]}")"
}

exec_section() {
    echo
    echo "Exec tasks against xargs (and GNU parallel), the same commands in the same run"
    printf 'true\n%.0s' $(seq 2000) >"$TMP/true.txt"
    printf 'sleep 0.01\n%.0s' $(seq 1000) >"$TMP/sleep.txt"
    printf '0.01\n%.0s' $(seq 1000) >"$TMP/sleep-args.txt"
    exec_row "2000 x true, 2 slots" "$TMP/true.txt" 2
    echo "      target: zpipe <= 1.15 x xargs -P2"
    exec_row "1000 x sleep 0.01, 10 slots" "$TMP/sleep.txt" 10 sleep "$TMP/sleep-args.txt"
    echo "      target: zpipe <= 1.05 x xargs -P10"
    echo
    echo "A batch that ends when its work ends (1 task, sink and worker already waiting)"
    latency_row
}

echo "zpipe benchmark: $RUNS runs each, medians; $(nproc) cores, $(uname -r)"
if [ "$ONLY" = memory ]; then
    memory_section
    exit 0
fi
if [ "$ONLY" = threads ]; then
    many_threads_section
    exit 0
fi
if [ "$ONLY" = pool ]; then
    pool_section
    exit 0
fi
if [ "$ONLY" = guide ]; then
    guide_section
    exit 0
fi
if [ "$ONLY" = exec ]; then
    exec_section
    exit 0
fi
echo
echo "Throughput, $TASKS no-op tasks, tcp loopback"
raws=(); pushes=(); credits=(); rp=(); rc=()
for i in $(seq "$RUNS"); do
    a=$(raw_run)
    zpipe_run "$TMP/b.json" 1 1 push --tasks "$TASKS" --kind noop
    b=$(field "$TMP/b.json" tasks_per_s)
    zpipe_run "$TMP/b.json" 1 1 credit --tasks "$TASKS" --kind noop
    c=$(field "$TMP/b.json" tasks_per_s)
    raws+=("$a"); pushes+=("$b"); credits+=("$c")
    rp+=("$(python3 -c "print($b / $a)")"); rc+=("$(python3 -c "print($c / $a)")")
    printf '  run %d: raw %.0f msg/s; push %.0f tasks/s (%.2f); credit %.0f tasks/s (%.2f)\n' \
        "$i" "$a" "$b" "${rp[-1]}" "$c" "${rc[-1]}"
done
printf '  (a) raw two-hop PUSH/PULL     %10.0f msg/s   (median)\n' "$(median "${raws[@]}")"
printf '  (b) zpipe push, 1 worker      %10.0f tasks/s (median)\n' "$(median "${pushes[@]}")"
printf '      zpipe credit, 1 worker    %10.0f tasks/s (median)\n' "$(median "${credits[@]}")"
printf '  (c) push / raw                %10.2f         (median of per-run ratios; target >= 0.8)\n' "$(median "${rp[@]}")"
printf '      credit / raw              %10.2f         (median of per-run ratios; target >= 1)\n' "$(median "${rc[@]}")"
[ "$ONLY" = throughput ] && exit 0

echo
echo "Sleep tasks: 1000 x 10 ms over 10 worker threads, credit dispatch (ideal 1000 ms)"
els=(); floors=(); beyond=()
for i in $(seq "$RUNS"); do
    zpipe_run "$TMP/d.json" 1 10 credit --tasks 1000 --kind sleep --workload 10
    e=$(field "$TMP/d.json" elapsed_ms)
    f=$("$RAW" sleep 100 10)
    els+=("$e"); floors+=("$f")
    beyond+=("$(python3 -c "print(($e - $f) / 1000 * 100)")")
    printf '  run %d: elapsed %.1f ms, floor %.1f ms, beyond the floor %+.2f points\n' "$i" "$e" "$f" "${beyond[-1]}"
done
printf '  (d) elapsed %.1f ms (%+.2f %% over ideal); sleep floor %.1f ms (%+.2f %%); beyond the floor %+.2f points (median; target <= 0.5)\n' \
    "$(median "${els[@]}")" "$(python3 -c "print(($(median "${els[@]}") - 1000) / 10)")" \
    "$(median "${floors[@]}")" "$(python3 -c "print(($(median "${floors[@]}") - 1000) / 10)")" "$(median "${beyond[@]}")"

guide_section

exec_section

many_threads_section

pool_section

memory_section
