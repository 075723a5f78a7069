#!/usr/bin/env bash
# Starts, watches and stops a zpipe deployment described by an inventory:
# one process a line, `ROLE HOST [FLAGS...]`, `#` starts a comment. ROLE is
# sink, ventilator, worker, queue, forwarder or streamer; HOST is what ssh
# takes (`host`, `user@host`). See scripts/hosts.example.
#
#   scripts/deploy.sh [up] [--copy] INVENTORY   start: stable parts first
#                                                (sink, ventilator, devices),
#                                                then the workers
#   scripts/deploy.sh status INVENTORY          running or not, per line
#   scripts/deploy.sh stop INVENTORY            SIGTERM, workers first, so
#                                                every role flushes and reports
#   scripts/deploy.sh logs INVENTORY            every process's log
#
# --copy first copies the release binaries (cargo build --release) to every
# host. Each process keeps its pid and log on its host, in
# $ZPIPE_REMOTE_DIR/run/LINE-ROLE.{pid,log}.
#
# Environment: ZPIPE_SSH (default: ssh in batch mode with a 5 s connect
# timeout), ZPIPE_SCP (the same for copies), ZPIPE_REMOTE_DIR (default
# zpipe, under the remote home; binaries in its bin/), ZPIPE_BIN (local
# binaries for --copy, default target/release).
set -euo pipefail
cd "$(dirname "$0")/.."

SSH=${ZPIPE_SSH:-ssh -o BatchMode=yes -o ConnectTimeout=5}
SCP=${ZPIPE_SCP:-scp -q -o BatchMode=yes -o ConnectTimeout=5}
DIR=${ZPIPE_REMOTE_DIR:-zpipe}
BIN=${ZPIPE_BIN:-target/release}

usage() {
    echo "usage: $0 [up [--copy]|status|stop|logs] INVENTORY" >&2
    exit 2
}

ACTION=up
case "${1:-}" in
    up | status | stop | logs) ACTION=$1; shift ;;
esac
COPY=0
if [ "${1:-}" = --copy ]; then COPY=1; shift; fi
[ $# -eq 1 ] || usage
INVENTORY=$1
[ -r "$INVENTORY" ] || { echo "deploy: cannot read the inventory $INVENTORY" >&2; exit 2; }

# The inventory, checked whole before anything runs: LINES[i] is "N ROLE HOST
# FLAGS..." for line N.
LINES=()
n=0
while IFS= read -r raw || [ -n "$raw" ]; do
    n=$((n + 1))
    line=${raw%%#*}
    read -r -a words <<<"$line" || true
    [ ${#words[@]} -eq 0 ] && continue
    if [ ${#words[@]} -lt 2 ]; then
        echo "deploy: $INVENTORY line $n: expected ROLE HOST [FLAGS...]" >&2
        exit 2
    fi
    case "${words[0]}" in
        sink | ventilator | worker | queue | forwarder | streamer) ;;
        *)
            echo "deploy: $INVENTORY line $n: unknown role ${words[0]} (sink, ventilator, worker, queue, forwarder, streamer)" >&2
            exit 2
            ;;
    esac
    LINES+=("$n ${line}")
done <"$INVENTORY"
[ ${#LINES[@]} -gt 0 ] || { echo "deploy: $INVENTORY holds no process" >&2; exit 2; }

# Runs a command on a host; on failure, names the host and the line.
remote() {
    local where=$1 host=$2
    shift 2
    # (stdin closed: ssh would read the inventory loop's input.)
    if ! $SSH "$host" "$@" </dev/null; then
        echo "deploy: $where: ssh to $host failed" >&2
        return 1
    fi
}

# The order to start in: stable parts first, workers last.
rank() {
    case "$1" in
        sink) echo 0 ;;
        ventilator) echo 1 ;;
        queue | forwarder | streamer) echo 2 ;;
        worker) echo 3 ;;
    esac
}

ordered() {
    local reverse=$1 l
    for l in "${LINES[@]}"; do
        read -r num role _ <<<"$l"
        echo "$(rank "$role") $num"
    done | if [ "$reverse" = 1 ]; then sort -k1,1nr -k2,2nr; else sort -k1,1n -k2,2n; fi |
        while read -r _ num; do
            for l in "${LINES[@]}"; do
                read -r m _ <<<"$l"
                [ "$m" = "$num" ] && echo "$l"
            done
        done
}

start_one() {
    local num=$1 role=$2 host=$3
    shift 3
    local name="$num-$role" where="$INVENTORY line $num ($role on $host)"
    local program=$role args=()
    case "$role" in
        queue | forwarder | streamer) program=devices; args=("$role") ;;
    esac
    args+=("$@")
    local quoted
    quoted=$(printf '%q ' "${args[@]}")
    # A process that exits at once (a port in use, a bad flag) is an error
    # here, with the end of its log.
    remote "$where" "$host" "mkdir -p $DIR/run && cd $DIR &&
        if [ -f run/$name.pid ] && kill -0 \$(cat run/$name.pid) 2>/dev/null; then
            echo 'already running (pid '\$(cat run/$name.pid)')'; exit 0; fi
        nohup bin/$program $quoted >run/$name.log 2>&1 </dev/null & echo \$! >run/$name.pid
        sleep 0.5
        if ! kill -0 \$(cat run/$name.pid) 2>/dev/null; then
            echo 'exited at once:'; tail -n 5 run/$name.log; exit 1; fi" ||
        { echo "deploy: $where: did not start" >&2; return 1; }
    echo "started $where"
}

case "$ACTION" in
    up)
        if [ "$COPY" = 1 ]; then
            for b in sink ventilator worker devices; do
                [ -x "$BIN/$b" ] || { echo "deploy: $BIN/$b is missing: cargo build --release first" >&2; exit 2; }
            done
            hosts=$(for l in "${LINES[@]}"; do read -r _ _ host _ <<<"$l"; echo "$host"; done | sort -u)
            for host in $hosts; do
                remote "copy to $host" "$host" "mkdir -p $DIR/bin"
                for b in sink ventilator worker devices; do
                    # Copied beside, then renamed: a running binary cannot be
                    # overwritten, but it can be replaced.
                    $SCP "$BIN/$b" "$host:$DIR/bin/$b.new" </dev/null ||
                        { echo "deploy: copy of $b to $host failed" >&2; exit 1; }
                done
                remote "copy to $host" "$host" "cd $DIR/bin && for b in sink ventilator worker devices; do mv -f \$b.new \$b; done"
                echo "copied binaries to $host"
            done
        fi
        while read -r l; do
            read -r -a w <<<"$l"
            start_one "${w[@]}"
        done < <(ordered 0)
        ;;
    status)
        rc=0
        while read -r l; do
            read -r num role host _ <<<"$l"
            name="$num-$role"
            state=$($SSH "$host" "cd $DIR 2>/dev/null && if [ -f run/$name.pid ]; then
                if kill -0 \$(cat run/$name.pid) 2>/dev/null; then echo running \$(cat run/$name.pid); else echo stopped; fi
                else echo 'not started'; fi" </dev/null 2>/dev/null) || { state="unreachable"; rc=1; }
            printf '%-4s %-10s %-24s %s\n' "$num" "$role" "$host" "$state"
        done < <(ordered 0)
        exit $rc
        ;;
    stop)
        while read -r l; do
            read -r num role host _ <<<"$l"
            name="$num-$role"
            remote "$INVENTORY line $num ($role on $host)" "$host" "cd $DIR 2>/dev/null || exit 0
                [ -f run/$name.pid ] || exit 0
                pid=\$(cat run/$name.pid)
                kill -TERM \$pid 2>/dev/null || exit 0
                for _ in \$(seq 50); do kill -0 \$pid 2>/dev/null || exit 0; sleep 0.1; done
                echo 'still running after 5 s: SIGKILL'; kill -KILL \$pid" || true
            echo "stopped line $num ($role on $host)"
        done < <(ordered 1)
        ;;
    logs)
        while read -r l; do
            read -r num role host _ <<<"$l"
            echo "== line $num: $role on $host"
            $SSH "$host" "cat $DIR/run/$num-$role.log 2>/dev/null || echo '(no log)'" </dev/null ||
                echo "deploy: line $num: ssh to $host failed" >&2
        done < <(ordered 0)
        ;;
esac
