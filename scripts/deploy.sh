#!/usr/bin/env bash
# Starts, watches and stops a zpipe deployment described by an inventory:
# one process a line, `ROLE HOST [NAME=VALUE...] [FLAGS...]`; a word that
# starts with `#` starts a comment. ROLE is sink, ventilator, worker, queue,
# forwarder or streamer; HOST is what ssh takes (`host`, `user@host`).
# NAME=VALUE words (ZPIPE_LOGIN=..., say) are set in the process's
# environment rather than on its command line, where `ps` would show them.
# Words are split as xargs does: quote a flag that holds spaces. Paths in
# flags are on the remote host, relative to $ZPIPE_REMOTE_DIR. See
# scripts/hosts.example.
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
# $ZPIPE_REMOTE_DIR/run/ROLE-ID.{pid,log}, ID a checksum of the line: a line
# keeps its files while other lines are added or removed, and a changed line
# is a new process.
#
# Environment: ZPIPE_SSH (default: ssh in batch mode with a 5 s connect
# timeout), ZPIPE_SCP (the same for copies), ZPIPE_REMOTE_DIR (default
# zpipe, under the remote home; binaries in its bin/), ZPIPE_BIN (local
# binaries for --copy, default target/release).
#
# A relative INVENTORY is found from the directory deploy.sh is called in;
# the script then works from the project root, so a relative ZPIPE_BIN, or a
# key file named in ZPIPE_SSH, is taken from there.
set -euo pipefail
CALLED_IN=$PWD
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
# INVENTORY names the file in messages, as the caller wrote it.
INVENTORY=$1
case "$INVENTORY" in
    /*) INVENTORY_FILE=$INVENTORY ;;
    *) INVENTORY_FILE=$CALLED_IN/$INVENTORY ;;
esac
[ -r "$INVENTORY_FILE" ] || { echo "deploy: cannot read the inventory $INVENTORY" >&2; exit 2; }

# The inventory, checked whole before anything runs: LINES[i] is "N ROLE HOST
# FLAGS..." for line N.
LINES=()
n=0
while IFS= read -r raw || [ -n "$raw" ]; do
    n=$((n + 1))
    # A comment starts at a word beginning with #, not inside one (a CURVE
    # key or a password may hold a #).
    line=$(sed -E 's/(^|[[:space:]])#.*$//' <<<"$raw")
    words=()
    if ! words_text=$(printf '%s' "$line" | xargs printf '%s\n' 2>&1); then
        echo "deploy: $INVENTORY line $n: cannot split it into words ($words_text)" >&2
        exit 2
    fi
    [ -n "$words_text" ] && mapfile -t words <<<"$words_text"
    [ ${#words[@]} -eq 0 ] && continue
    if [ ${#words[@]} -lt 2 ]; then
        echo "deploy: $INVENTORY line $n: expected ROLE HOST [FLAGS...]" >&2
        exit 2
    fi
    case "${words[1]}" in
        -* | *=*)
            echo "deploy: $INVENTORY line $n: ${words[1]} is not a host (ROLE HOST [FLAGS...])" >&2
            exit 2
            ;;
    esac
    case "${words[0]}" in
        sink | ventilator | worker | queue | forwarder | streamer) ;;
        *)
            echo "deploy: $INVENTORY line $n: unknown role ${words[0]} (sink, ventilator, worker, queue, forwarder, streamer)" >&2
            exit 2
            ;;
    esac
    # Kept as one string of shell-quoted words, to be split again with eval.
    LINES+=("$n $(printf '%q ' "${words[@]}")")
done <"$INVENTORY_FILE"
[ ${#LINES[@]} -gt 0 ] || { echo "deploy: $INVENTORY holds no process" >&2; exit 2; }

# Runs a command on a host; on failure, names the line and the host, and
# whether ssh or the command failed.
remote() {
    local where=$1 host=$2 rc=0
    shift 2
    # (stdin closed: ssh would read the inventory loop's input.)
    $SSH "$host" "$@" </dev/null || rc=$?
    case $rc in
        0) return 0 ;;
        255) echo "deploy: $where: ssh to $host failed" >&2 ;;
        *) echo "deploy: $where: the command on $host failed (exit code $rc)" >&2 ;;
    esac
    return 1
}

# An inventory entry (as LINES holds it) into W (its words), num, role, host,
# name (the process's name on its host) and where (how errors name it).
split_entry() {
    eval "W=($1)"
    num=${W[0]} role=${W[1]} host=${W[2]}
    name=$(name_of "${1#* }" "$role")
    where="$INVENTORY line $num ($role on $host)"
}

# A process's name on its host: its role and a checksum of its line.
name_of() {
    local sum
    sum=$(printf '%s' "$1" | cksum | cut -d' ' -f1)
    echo "$2-$sum"
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
    local W num role host name where
    split_entry "$1"
    local program=$role args=() envs=() w
    case "$role" in
        queue | forwarder | streamer) program=devices; args=("$role") ;;
    esac
    local flags=1
    for w in "${W[@]:3}"; do
        if [ "$flags" = 1 ] && [[ "$w" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then
            envs+=("$w")
        else
            flags=0
            args+=("$w")
        fi
    done
    local quoted="bin/$program"
    [ ${#args[@]} -gt 0 ] && quoted+=" $(printf '%q ' "${args[@]}")"
    [ ${#envs[@]} -gt 0 ] && quoted="env $(printf '%q ' "${envs[@]}") $quoted"
    # A process that exits at once (a port in use, a bad flag) is an error
    # here, with the end of its log.
    remote "$where" "$host" "mkdir -p $DIR/run && cd $DIR &&
        if [ -f run/$name.pid ] && kill -0 \$(cat run/$name.pid) 2>/dev/null; then
            echo 'already running (pid '\$(cat run/$name.pid)')'; exit 0; fi
        nohup $quoted >run/$name.log 2>&1 </dev/null & echo \$! >run/$name.pid
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
            hosts=$(for l in "${LINES[@]}"; do split_entry "$l"; echo "$host"; done | sort -u)
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
            start_one "$l"
        done < <(ordered 0)
        ;;
    status)
        rc=0
        while read -r l; do
            split_entry "$l"
            err=$(mktemp)
            state=$($SSH "$host" "if [ -f $DIR/run/$name.pid ]; then
                if kill -0 \$(cat $DIR/run/$name.pid) 2>/dev/null; then echo running \$(cat $DIR/run/$name.pid); else echo stopped; fi
                else echo 'not started'; fi" </dev/null 2>"$err") ||
                { state="unreachable: $(tail -n 1 "$err")"; rc=1; }
            rm -f "$err"
            printf '%-4s %-10s %-24s %s\n' "$num" "$role" "$host" "$state"
        done < <(ordered 0)
        exit $rc
        ;;
    stop)
        rc=0
        while read -r l; do
            split_entry "$l"
            if said=$(remote "$where" "$host" "[ -f $DIR/run/$name.pid ] || { echo 'not started (no pid file)'; exit 0; }
                pid=\$(cat $DIR/run/$name.pid)
                kill -TERM \$pid 2>/dev/null || { echo 'was not running'; exit 0; }
                for _ in \$(seq 50); do kill -0 \$pid 2>/dev/null || { echo stopped; exit 0; }; sleep 0.1; done
                kill -KILL \$pid; echo 'killed (still running 5 s after SIGTERM)'"); then
                echo "$where: $said"
            else
                rc=1
            fi
        done < <(ordered 1)
        exit $rc
        ;;
    logs)
        while read -r l; do
            split_entry "$l"
            echo "== line $num: $role on $host"
            remote "$where" "$host" "cat $DIR/run/$name.log 2>/dev/null || echo '(no log)'" || true
        done < <(ordered 0)
        ;;
esac
