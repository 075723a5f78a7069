#!/usr/bin/env bash
# A Slurm cluster of one node on this machine, for tests and for trying the
# standing worker pool (scripts/slurm-workers.sh) without a real cluster.
# Everything it writes (munge key and socket, slurm.conf, state, spool, pid
# and log files) lives in DIR; it touches nothing under /etc and uses free
# loopback ports, so it runs beside a system Slurm or another lab.
#
#   scripts/slurm-lab.sh up DIR       write DIR, start munged, slurmctld and
#                                     slurmd, wait until the node is idle
#   scripts/slurm-lab.sh env DIR      print what the client commands need:
#       eval "$(scripts/slurm-lab.sh env DIR)"; sbatch --wrap 'echo $SLURM_JOB_ID'
#   scripts/slurm-lab.sh status DIR   each daemon running or not, sinfo, squeue
#   scripts/slurm-lab.sh down DIR     cancel every job, stop the daemons (TERM,
#                                     KILL 10 s later); DIR and its logs stay:
#                                     rm -rf DIR yourself
#
# Keep DIR short (/tmp/slurm-lab, say): munge's socket lives in it, and a
# socket's path may not exceed 107 bytes. `up` takes an empty or missing DIR,
# or one an earlier `up` wrote (its logs then start afresh); it refuses a DIR
# whose daemons still run.
#
# The node is this host (`hostname -s`) with ZPIPE_LAB_CPUS CPUs (default 8,
# more than most test machines have, so that a test can ask for several
# multi-threaded pilots); its partition `lab` lets up to 4 jobs share a CPU.
#
# Exit codes: 0 done; 1 failed (with the daemons' log tails); 2 usage; 77 this
# machine cannot run the lab (not root, packages missing): a test skips then,
# printing the reason. Needs root and Debian's munge, slurmctld, slurmd and
# slurm-client packages (installs nothing), and python3 to find free ports.
set -euo pipefail

die() { echo "slurm-lab: $*" >&2; exit 1; }
skip() { echo "slurm-lab: cannot run here: $*" >&2; exit 77; }
usage() { echo "usage: $0 up|down|env|status DIR" >&2; exit 2; }

if [ $# -ne 2 ] || [ -z "$2" ]; then usage; fi
ACTION=$1
# One spelling of DIR, absolute: the daemons' command lines carry it, and a
# later `down` finds them by it.
DIR=$(realpath -ms "$2")
[ "$DIR" != / ] || usage
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge.sock
NODE=$(hostname -s)
DAEMONS=(munged slurmctld slurmd)
# What the client commands read; the daemons are given it too.
export SLURM_CONF=$CONF

# The pid of a daemon this lab started, if it still runs.
pid_of() {
    local pid
    [ -f "$DIR/$1.pid" ] || return 1
    pid=$(cat "$DIR/$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

# Processes of this lab found without pid files: a daemon of an earlier run
# whose pid file was lost names DIR on its command line; a step daemon left
# behind by a job (named `slurmstepd: [JOB.STEP]`) has only the environment
# it inherited from our slurmd to say which cluster it belongs to.
lab_processes() {
    local p comm
    for p in /proc/[0-9]*; do
        { read -r comm <"$p/comm"; } 2>/dev/null || continue
        case "$comm" in
            munged | slurmctld | slurmd)
                { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF "$DIR/" && echo "${p#/proc/}"
                ;;
            slurmstepd)
                { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$CONF" && echo "${p#/proc/}"
                ;;
        esac
    done
    return 0
}

# A line for each process that still runs (an exited one waiting to be
# reaped has no command line).
describe() {
    local pid cmd
    for pid in "$@"; do
        cmd=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || continue
        [ -n "$cmd" ] && echo "  pid $pid: $cmd"
    done
    return 0
}

# The end of every log, for a failure that does not say enough by itself.
# A Slurm daemon that fails before it opens its log file (a bad slurm.conf)
# says why only on stderr, kept in NAME.out.
log_tails() {
    local f
    for f in munged.log slurmctld.log slurmctld.out slurmd.log slurmd.out; do
        [ -s "$DIR/$f" ] || continue
        case "$f" in *.out) [ -s "$DIR/${f%.out}.log" ] && continue ;; esac
        echo "--- $DIR/$f (last 15 lines)"
        tail -n 15 "$DIR/$f"
    done >&2
}

# Stops the daemons by their pids, all at once (each takes about 2 s to
# end, and none needs another to): TERM, then KILL what still runs 10 s
# later.
stop_daemons() {
    local d pid
    local -A pids=()
    for d in "$@"; do
        pid=$(pid_of "$d") || continue
        pids[$d]=$pid
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 100); do
        for d in "${!pids[@]}"; do
            if ! kill -0 "${pids[$d]}" 2>/dev/null; then
                echo "slurm-lab: $d (pid ${pids[$d]}) stopped" >&2
                rm -f "$DIR/$d.pid"
                unset "pids[$d]"
            fi
        done
        [ ${#pids[@]} -eq 0 ] && return 0
        sleep 0.1
    done
    for d in "${!pids[@]}"; do
        kill -KILL "${pids[$d]}" 2>/dev/null || true
        rm -f "$DIR/$d.pid"
        echo "slurm-lab: $d (pid ${pids[$d]}) killed: still running 10 s after SIGTERM" >&2
    done
}

# Starts a daemon in the foreground mode each has, in a session of its own
# (so that a Ctrl-C meant for the caller does not reach it) with no hold on
# the caller's stdout (so that `$(slurm-lab.sh up DIR)` returns), and records
# its pid. Its stderr goes to OUTPUT: munged's log (in the foreground it logs
# there only), the Slurm daemons' early errors.
start_one() {
    local name=$1 output=$2
    shift 2
    setsid "$@" </dev/null >>"$output" 2>&1 &
    echo $! >"$DIR/$name.pid"
}

# Waits up to $2 seconds for a command to succeed, and fails (naming WHAT,
# with the logs) when it does not or when the daemon NAME that should make
# it succeed exits meanwhile.
await() {
    local name=$1 seconds=$2 what=$3
    shift 3
    for _ in $(seq $((seconds * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        pid_of "$name" >/dev/null || fail "$name exited while we waited for $what"
        sleep 0.1
    done
    fail "waited $seconds s for $what, in vain"
}

node_idle() {
    [ "$(sinfo -h -n "$NODE" -o %T 2>/dev/null)" = idle ]
}

# Whether slurmctld's main scheduler has run (sdiag counts its passes).
scheduler_ran() {
    sdiag 2>/dev/null | awk '/^Main schedule/ { m = 1 } m && /Total cycles:/ { n = $3; exit } END { exit !(n > 0) }'
}

up() {
    [ "$(id -u)" = 0 ] || skip "needs root (the daemons run as root, SlurmUser=root)"
    local missing=() b pkg
    for b in munged:munge slurmctld:slurmctld slurmd:slurmd slurmstepd:slurmd \
        sbatch:slurm-client srun:slurm-client sinfo:slurm-client squeue:slurm-client \
        scancel:slurm-client scontrol:slurm-client sdiag:slurm-client python3:python3; do
        pkg=${b#*:}
        b=${b%%:*}
        command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || missing+=("$b ($pkg)")
    done
    [ ${#missing[@]} -eq 0 ] ||
        skip "missing ${missing[*]}: apt-get install munge slurmctld slurmd slurm-client"
    PATH=$PATH:/usr/sbin
    [ ${#SOCKET} -le 100 ] || die "DIR is too long for munge's socket ($SOCKET): use a shorter one"

    # An earlier run in this DIR must be stopped first: its daemons hold the
    # munge socket, and its jobs would be lost without a word.
    local old
    old=$(lab_processes)
    if [ -n "$old" ]; then
        echo "slurm-lab: an earlier run in $DIR still runs; stop it first ($0 down $DIR):" >&2
        # shellcheck disable=SC2086
        describe $old >&2
        exit 1
    fi
    if [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -f "$DIR/.slurm-lab" ]; then
        die "$DIR holds files that are not a lab's: give an empty or new directory"
    fi
    # Another cluster's daemons do not stop us (our ports are free ones), but
    # whoever reads a surprising log later should know they were there.
    local others
    # shellcheck disable=SC2046
    others=$(describe $(pgrep -x munged) $(pgrep -x slurmctld) $(pgrep -x slurmd))
    if [ -n "$others" ]; then
        echo "slurm-lab: note: Slurm or munge daemons outside this lab are running:" >&2
        echo "$others" >&2
    fi

    # munged refuses group- or world-writable directories on its paths, and
    # a key anyone but its owner may read.
    umask 022
    mkdir -p "$DIR"
    chmod 0755 "$DIR"
    touch "$DIR/.slurm-lab"
    rm -rf "$DIR/state" "$DIR/spool"
    mkdir -p "$DIR/state" "$DIR/spool"
    for b in "${DAEMONS[@]}"; do rm -f "$DIR/$b.log" "$DIR/$b.out" "$DIR/$b.pid"; done
    rm -f "$DIR/munge.key" "$DIR/munged.seed" "$SOCKET" "$SOCKET.lock"
    head -c 1024 /dev/urandom >"$DIR/munge.key"
    chmod 0400 "$DIR/munge.key"

    # Two ports nobody holds now, on any address (slurmctld and slurmd
    # listen on all of them), below the ephemeral range.
    local ports ctld_port slurmd_port
    ports=$("$(dirname "$0")/free-ports" 2) || die "python3 could not find free ports"
    read -r ctld_port slurmd_port <<<"$ports"

    local cpus=${ZPIPE_LAB_CPUS:-8}
    case "$cpus" in '' | *[!0-9]* | 0) die "ZPIPE_LAB_CPUS must be a positive number, not '$cpus'" ;; esac
    cat >"$CONF" <<EOF
# Written by scripts/slurm-lab.sh: a one-node test cluster in $DIR.
ClusterName=zpipe-lab
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# Jobs start as soon as they are submitted rather than at the next
# scheduling pass (3 s by default).
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
# scancel's SIGKILL follows its SIGTERM after 2 s rather than 30 s, so that a
# test learns quickly whether a pilot stops on SIGTERM.
KillWait=2
# The node may declare more CPUs than the machine has (else it is drained).
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
# Up to 4 jobs on each CPU: a test's pool of pilots and its other jobs do not
# wait for each other.
PartitionName=lab Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF

    # From here on a failure stops what was started, so a failed `up` leaves
    # nothing running.
    trap 'rc=$?; [ $rc = 0 ] || { log_tails; stop_all quiet; }' EXIT
    local t0=$EPOCHREALTIME
    start_one munged "$DIR/munged.log" munged -F --socket="$SOCKET" --key-file="$DIR/munge.key" \
        --pid-file="$DIR/munged.pid" --seed-file="$DIR/munged.seed"
    await munged 5 "its socket $SOCKET" test -S "$SOCKET"
    start_one slurmctld "$DIR/slurmctld.out" slurmctld -D -c -f "$CONF"
    await slurmctld 10 "it to answer on port $ctld_port" scontrol ping
    start_one slurmd "$DIR/slurmd.out" slurmd -D -f "$CONF" -N "$NODE"
    await slurmd 20 "node $NODE to be idle" node_idle
    # One step, start to end: credentials, launch and the step daemon work.
    timeout 30 srun -N1 -n1 true >/dev/null 2>&1 ||
        fail "srun true did not run on the new cluster ($(sinfo -h -n "$NODE" -o '%T %E' 2>&1))"
    # slurmctld's main scheduler first runs 3 s after it starts, whatever
    # SchedulerParameters say, and an srun step does not make it run sooner
    # (Slurm 22.05); a batch job submitted before then waits for it. Waiting
    # here once makes every sbatch of a test start within a second.
    await slurmctld 10 "its first scheduling pass" scheduler_ran
    trap - EXIT
    echo "slurm-lab: up in $(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $t0 }") s: node $NODE ($cpus CPUs), slurmctld 127.0.0.1:$ctld_port, slurmd :$slurmd_port, partition lab" >&2
    echo "slurm-lab: eval \"\$($0 env $DIR)\" for sbatch, srun, squeue, scancel" >&2
}

# (`up` ends with the logs' tails and stops what it started: see its trap.)
fail() {
    echo "slurm-lab: $*" >&2
    exit 1
}

# Every job cancelled (each of its steps gets SIGTERM, then SIGKILL after
# KillWait), then the daemons stopped by pid; a step daemon
# still running after all that is ended too, so nothing of the lab stays.
stop_all() {
    local quiet=$1
    # (Asked of whatever answers at the lab's address: a controller whose
    # pid file was lost still has jobs to cancel.)
    if [ -f "$CONF" ] && timeout 10 scontrol ping >/dev/null 2>&1; then
        local jobs
        jobs=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null || true
            for _ in $(seq 150); do
                [ -z "$(timeout 10 squeue -h -o %A 2>/dev/null)" ] && break
                sleep 0.1
            done
            [ "$quiet" = quiet ] || echo "slurm-lab: cancelled jobs ${jobs//$'\n'/ }" >&2
        fi
    fi
    stop_daemons slurmd slurmctld munged
    local left
    left=$(lab_processes)
    if [ -n "$left" ]; then
        echo "slurm-lab: ending what the lab left running:" >&2
        # shellcheck disable=SC2086
        describe $left >&2
        # shellcheck disable=SC2086
        kill -TERM $left 2>/dev/null || true
        for _ in $(seq 50); do
            left=$(lab_processes)
            [ -z "$left" ] && break
            sleep 0.1
        done
        # shellcheck disable=SC2086
        [ -z "$left" ] || kill -KILL $left 2>/dev/null || true
    fi
}

down() {
    # (A DIR removed while its daemons ran is no lab any more, but they are
    # still found by the paths on their command lines.)
    if [ ! -f "$DIR/.slurm-lab" ] && [ -z "$(lab_processes)" ]; then
        echo "slurm-lab: $DIR is not a lab, and nothing of one runs there" >&2
        return 0
    fi
    PATH=$PATH:/usr/sbin
    stop_all loud
    if [ -d "$DIR" ]; then
        echo "slurm-lab: down; logs kept in $DIR" >&2
    else
        echo "slurm-lab: down" >&2
    fi
}

status() {
    [ -f "$DIR/.slurm-lab" ] || { echo "slurm-lab: $DIR is not a lab"; exit 3; }
    local rc=0 d pid
    for d in "${DAEMONS[@]}"; do
        if pid=$(pid_of "$d"); then
            printf '%-10s running (pid %s)\n' "$d" "$pid"
        else
            printf '%-10s stopped\n' "$d"
            rc=3
        fi
    done
    if pid_of slurmctld >/dev/null; then
        timeout 10 sinfo || rc=3
        timeout 10 squeue || rc=3
    fi
    exit $rc
}

case "$ACTION" in
    up) up ;;
    down) down ;;
    env)
        [ -f "$CONF" ] || die "$CONF does not exist: run $0 up $DIR first"
        printf 'export SLURM_CONF=%q\n' "$CONF"
        ;;
    status) status ;;
    *) usage ;;
esac
