#!/usr/bin/env bash
# Submits a standing pool of zpipe workers to Slurm: N pilots, each a
# `worker --serve` that takes batch after batch from the hub and exits 0
# once it has had no batch for --idle-exit, so an idle pool hands its
# allocation back by itself. Prints the job id and nothing else on stdout:
#
#   JOB=$(scripts/slurm-workers.sh --workers 4 --cpus-per-task 2 --hub hub.example.org)
#   ventilator --workers 4 --input jobs.txt ...      # on the hub, as usual
#   scancel "$JOB"                                   # the pool goes
#
#   scripts/slurm-workers.sh [OPTIONS] [-- SBATCH OPTIONS... [-- WORKER FLAGS...]]
#
#   --workers N            pilots (Slurm tasks), default 1        (ZPIPE_SLURM_WORKERS)
#   --cpus-per-task C      CPUs of each pilot, which runs C worker threads,
#                          default 1                              (ZPIPE_SLURM_CPUS_PER_TASK)
#   --idle-exit DUR        a pilot with no batch this long exits, default 10m;
#                          `none` never                           (ZPIPE_IDLE_EXIT)
#   --hub HOST             the sink and ventilator's host: endpoints
#                          tcp://HOST:5557, :5558, :5559          (ZPIPE_HUB)
#   --task-endpoint E, --result-endpoint E, --control-endpoint E
#                          each overrides --hub's; default the worker's own
#                          (ZPIPE_TASK_ENDPOINT, ZPIPE_RESULT_ENDPOINT, ZPIPE_CONTROL_ENDPOINT)
#   --dispatch credit|push as the ventilator's                    (ZPIPE_DISPATCH)
#   --worker-bin PATH      the worker, at a path the nodes see too; default
#                          this checkout's target/release/worker if built,
#                          else `worker` on the nodes' PATH       (ZPIPE_WORKER_BIN)
#   --job-name NAME        default zpipe-workers
#   --output PATH          the pool's log, every line labelled with its
#                          pilot's task number; sbatch's %j is the job id;
#                          default ./zpipe-workers-%j.log
#
# After `--`, options for sbatch (--partition=..., --time=..., --nodes=...);
# after a second `--`, flags for every worker (--heartbeat 500ms ...), which
# replace any of the above they repeat. Any other ZPIPE_* variable set here
# reaches the workers through the job's environment, which keeps secrets
# (ZPIPE_LOGIN) off command lines, unless sbatch is told --export=NONE.
#
# Why one job of N tasks and not a job array of N: one job id to watch and to
# scancel; one allocation, scheduled once, so the pool starts whole rather
# than one pilot at a time as each array element is scheduled; and one srun
# launches every pilot at once. The job's batch script execs that srun, and
# srun starts the worker binary itself, so each pilot is the process Slurm
# signals: no shell sits between them to swallow a SIGTERM.
#
# Stopping:
#   scancel JOB                   every pilot gets SIGTERM, and so do its
#                                 running exec tasks, at the same moment or
#                                 before it (Slurm signals children first);
#                                 SIGKILL follows KillWait later. The job
#                                 ends CANCELLED.
#   scancel --signal=TERM JOB     every pilot gets SIGTERM and ends as it
#                                 does; the job then ends COMPLETED.
#   one pilot: all pilots are tasks of one step (JOB.0), and scancel cannot
#   pick one task of a step, so signal its pid, found on its node; the
#   others run on (srun --kill-on-bad-exit=0). From the submitting host:
#       srun --jobid=JOB --overlap -n1 -w NODE scontrol listpids JOB.0
#           # PID JOBID STEPID LOCALID GLOBALID; pilot K is the line whose
#           # GLOBALID is K (lines with "-" are its exec tasks)
#       srun --jobid=JOB --overlap -n1 -w NODE kill -KILL PID
#   (One step per pilot would let `scancel JOB.K` pick one, but costs an
#   srun client and a controller round-trip per pilot, and a shell in the
#   batch script waiting on them all, which is the trap this layout
#   avoids.) Under proctrack/linuxproc, as in scripts/slurm-lab.sh, the
#   exec tasks of a pilot killed so are not tracked any more and run on;
#   proctrack/cgroup ends them with the job.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "slurm-workers: $*" >&2; exit 2; }
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

WORKERS=${ZPIPE_SLURM_WORKERS:-1}
CPUS=${ZPIPE_SLURM_CPUS_PER_TASK:-1}
IDLE_EXIT=${ZPIPE_IDLE_EXIT:-10m}
HUB=${ZPIPE_HUB:-}
TASK_EP=${ZPIPE_TASK_ENDPOINT:-}
RESULT_EP=${ZPIPE_RESULT_ENDPOINT:-}
CONTROL_EP=${ZPIPE_CONTROL_ENDPOINT:-}
DISPATCH=${ZPIPE_DISPATCH:-}
WORKER_BIN=${ZPIPE_WORKER_BIN:-}
JOB_NAME=zpipe-workers
OUTPUT=zpipe-workers-%j.log
SBATCH_OPTS=()
WORKER_FLAGS=()

while [ $# -gt 0 ]; do
    case "$1" in
        --workers | --cpus-per-task | --idle-exit | --hub | --task-endpoint | --result-endpoint | \
            --control-endpoint | --dispatch | --worker-bin | --job-name | --output)
            [ $# -ge 2 ] || die "$1 needs a value"
            case "$1" in
                --workers) WORKERS=$2 ;;
                --cpus-per-task) CPUS=$2 ;;
                --idle-exit) IDLE_EXIT=$2 ;;
                --hub) HUB=$2 ;;
                --task-endpoint) TASK_EP=$2 ;;
                --result-endpoint) RESULT_EP=$2 ;;
                --control-endpoint) CONTROL_EP=$2 ;;
                --dispatch) DISPATCH=$2 ;;
                --worker-bin) WORKER_BIN=$2 ;;
                --job-name) JOB_NAME=$2 ;;
                --output) OUTPUT=$2 ;;
            esac
            shift 2
            ;;
        --*=*)
            # --workers=4 as well as --workers 4.
            set -- "${1%%=*}" "${1#*=}" "${@:2}"
            ;;
        --)
            shift
            while [ $# -gt 0 ] && [ "$1" != -- ]; do SBATCH_OPTS+=("$1"); shift; done
            if [ $# -gt 0 ]; then shift; WORKER_FLAGS=("$@"); fi
            break
            ;;
        -h | --help) usage ;;
        *) die "unknown option $1 (sbatch options go after --, worker flags after a second --)" ;;
    esac
done

case "$WORKERS" in '' | *[!0-9]* | 0) die "--workers must be a positive number, not '$WORKERS'" ;; esac
case "$CPUS" in '' | *[!0-9]* | 0) die "--cpus-per-task must be a positive number, not '$CPUS'" ;; esac
command -v sbatch >/dev/null || die "sbatch is not here (apt-get install slurm-client, or run on a login node)"

if [ -n "$HUB" ]; then
    TASK_EP=${TASK_EP:-tcp://$HUB:5557}
    RESULT_EP=${RESULT_EP:-tcp://$HUB:5558}
    CONTROL_EP=${CONTROL_EP:-tcp://$HUB:5559}
fi
if [ -z "$TASK_EP$RESULT_EP$CONTROL_EP" ]; then
    echo "slurm-workers: no --hub or endpoints: the pilots look for the hub on their own node (localhost)" >&2
fi

# Paths are taken from where we were called, and handed to Slurm whole: the
# job may start in another directory, on another host.
absolute() {
    case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac
}
if [ -z "$WORKER_BIN" ]; then
    if [ -x "$ROOT/target/release/worker" ]; then
        WORKER_BIN=$ROOT/target/release/worker
    else
        WORKER_BIN=worker
        echo "slurm-workers: $ROOT/target/release/worker is not built: the pilots run \`worker\` from their PATH" >&2
    fi
elif [[ "$WORKER_BIN" == */* ]]; then
    WORKER_BIN=$(absolute "$WORKER_BIN")
    [ -x "$WORKER_BIN" ] || die "--worker-bin $WORKER_BIN is not an executable here (the nodes run that same path)"
fi
OUTPUT=$(absolute "$OUTPUT")

# Whether the worker flags after the second -- already say FLAG: then they
# win, and we do not say it too (the worker refuses a flag given twice).
given() {
    local w
    for w in ${WORKER_FLAGS[@]+"${WORKER_FLAGS[@]}"}; do
        case "$w" in "$1" | "$1"=*) return 0 ;; esac
    done
    return 1
}
# The worker's command line, quoted for the batch script. Its --threads is
# the job's own CPUs per task, read there, so that an sbatch option after --
# that changes them is obeyed.
WORKER_LINE="$(printf '%q' "$WORKER_BIN") --serve"
# shellcheck disable=SC2016 # expanded by the batch script
given --threads || WORKER_LINE+=' --threads "$SLURM_CPUS_PER_TASK"'
ARGS=()
if [ "$IDLE_EXIT" != none ] && ! given --idle-exit; then ARGS+=(--idle-exit "$IDLE_EXIT"); fi
if [ -n "$TASK_EP" ] && ! given --task-endpoint; then ARGS+=(--task-endpoint "$TASK_EP"); fi
if [ -n "$RESULT_EP" ] && ! given --result-endpoint; then ARGS+=(--result-endpoint "$RESULT_EP"); fi
if [ -n "$CONTROL_EP" ] && ! given --control-endpoint; then ARGS+=(--control-endpoint "$CONTROL_EP"); fi
if [ -n "$DISPATCH" ] && ! given --dispatch; then ARGS+=(--dispatch "$DISPATCH"); fi
ARGS+=(${WORKER_FLAGS[@]+"${WORKER_FLAGS[@]}"})
for a in ${ARGS[@]+"${ARGS[@]}"}; do
    WORKER_LINE+=" $(printf '%q' "$a")"
done
# `--idle-exit none` means no limit, which the worker's own variable must
# not contradict in the job's environment.
UNSET=
[ "$IDLE_EXIT" = none ] && UNSET="unset ZPIPE_IDLE_EXIT
"

# The batch script, on sbatch's stdin. srun is told the tasks and CPUs
# outright, because newer Slurm (23.11 on) no longer hands --cpus-per-task
# from sbatch to srun, and --export=ALL, so that the pilots and their exec
# tasks get the job's whole environment (SLURM_JOB_ID among it) whatever
# SLURM_EXPORT_ENV says. --kill-on-bad-exit=0: a pilot that fails or is
# killed leaves the others running. --label: each log line names its pilot.
SCRIPT="#!/bin/bash
# zpipe pilot workers, submitted by scripts/slurm-workers.sh.
${UNSET}exec srun --kill-on-bad-exit=0 --label --export=ALL \\
    --ntasks=\"\$SLURM_NTASKS\" --cpus-per-task=\"\$SLURM_CPUS_PER_TASK\" \\
    $WORKER_LINE
"

# (sbatch's own messages go to stderr as they come; its stdout is the id.)
if ! out=$(sbatch --parsable --ntasks="$WORKERS" --cpus-per-task="$CPUS" \
    --job-name="$JOB_NAME" --output="$OUTPUT" ${SBATCH_OPTS[@]+"${SBATCH_OPTS[@]}"} <<<"$SCRIPT"); then
    echo "slurm-workers: sbatch refused the pool" >&2
    exit 1
fi
# --parsable prints JOBID, or JOBID;CLUSTER on a federation.
JOB=${out%%;*}
echo "slurm-workers: job $JOB: $WORKERS pilot(s) of $CPUS CPU(s), log ${OUTPUT//%j/$JOB}" >&2
echo "$JOB"
