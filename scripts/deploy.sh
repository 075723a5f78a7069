#!/usr/bin/env bash
# Starts, watches and stops a zpipe deployment described by an inventory:
# one process a line, `ROLE HOST [NAME=VALUE...] [FLAGS...]`; a word that
# starts with `#` starts a comment. ROLE is sink, ventilator, worker, queue,
# forwarder or streamer; HOST is what ssh takes (`host`, `user@host`).
# NAME=VALUE words (ZPIPE_LOGIN=..., say) are set in the process's
# environment rather than on its command line, where `ps` would show them.
# Words are split as xargs does: quote a flag that holds spaces. Paths in
# flags are on the remote host, relative to $ZPIPE_REMOTE_DIR. See
# scripts/hosts.example (one batch) and scripts/pool.example (a pool).
#
#   scripts/deploy.sh [up] [--copy] INVENTORY   start: stable parts first
#                                                (sink, ventilator, devices),
#                                                then the workers
#   scripts/deploy.sh status INVENTORY          running or not, per line
#   scripts/deploy.sh stop INVENTORY            SIGTERM, workers first, so
#                                                every role flushes and reports
#   scripts/deploy.sh logs INVENTORY            every process's log
#   scripts/deploy.sh submit INVENTORY [FLAGS...]
#                                                a pool: run one batch
#
# A standing pool is an inventory whose sink line has --serve (and
# --output-dir DIR); its workers want --serve too, or they leave after the
# first batch (`up` warns). `up` starts the sink, the devices and the
# workers, and they stay; a batch is then run with `submit`, which runs a
# ventilator on the hub in the foreground: on the host of the inventory's
# ventilator line, with that line's flags and then FLAGS (a --FLAG in FLAGS
# replaces the line's), or without such a line on the sink's host with
# FLAGS alone. A pool's ventilator line is not started by `up`: it holds
# what every batch shares (--dispatch, endpoints, --workers). `submit`
# prints the ventilator's line (`batch ID: complete, N ok, M failed, in T
# ms; results in HOST:PATH`) and exits with its code: 0 all ok, 3 complete
# with some failed, 1 error, 2 usage, 4 sink silent at the end (may be
# incomplete), 130 stopped. Paths in FLAGS are on
# that host too, relative to $ZPIPE_REMOTE_DIR; with `--input -` the
# ventilator reads submit's standard input (else none). Ctrl-C (or
# SIGTERM) stops the batch there, and so does `stop`; the sink keeps a
# stopped batch open (it refuses another) until the same batch is submitted
# again with --resume, which sends only what is missing. One batch at a
# time per inventory: `submit` refuses while one runs. (`submit`, not
# `run`: the batch goes to a pool that is already up, as a job is submitted
# to a queue; `up` is what starts processes.)
#
#   scripts/deploy.sh up pool                    # sink --serve, devices, workers --serve
#   scripts/deploy.sh submit pool --input jobs.txt
#   scripts/deploy.sh submit pool --input - <jobs.txt   # tasks from here
#   scripts/deploy.sh status pool                # the ventilator: idle or running a batch
#   scripts/deploy.sh stop pool                  # workers, devices, a running batch, the sink
#
# --copy first copies the release binaries (cargo build --release) to every
# host. Each process keeps its pid and log on its host, in
# $ZPIPE_REMOTE_DIR/run/ROLE-ID.{pid,log}, ID a checksum of the line: a line
# keeps its files while other lines are added or removed, and a changed line
# is a new process. A batch's ventilator keeps only its pid there, while it
# runs; its messages go to the terminal of `submit`.
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
    echo "       $0 submit INVENTORY [VENTILATOR FLAGS...]" >&2
    exit 2
}

ACTION=up
case "${1:-}" in
    up | status | stop | logs | submit) ACTION=$1; shift ;;
esac
COPY=0
if [ "$ACTION" = up ] && [ "${1:-}" = --copy ]; then COPY=1; shift; fi
if [ "$ACTION" = submit ]; then [ $# -ge 1 ] || usage; else [ $# -eq 1 ] || usage; fi
# INVENTORY names the file in messages, as the caller wrote it.
INVENTORY=$1
shift
# submit: flags for the ventilator after the line's.
EXTRA=("$@")
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
    # (Named by the line as `read` gives it: without the space that ends
    # every entry.)
    local line=${1#* }
    name=$(name_of "${line% }" "$role")
    if [ "$num" = 0 ]; then
        where="$INVENTORY (a batch's ventilator on $host, the sink's host)"
    else
        where="$INVENTORY line $num ($role on $host)"
    fi
}

# A process's name on its host: its role and a checksum of its line.
name_of() {
    local sum
    sum=$(printf '%s' "$1" | cksum | cut -d' ' -f1)
    echo "$2-$sum"
}

# An entry's flags into ENVS (the NAME=VALUE words before them) and ARGS.
flags_of() {
    local W num role host name where w flags=1
    split_entry "$1"
    ENVS=() ARGS=()
    for w in "${W[@]:3}"; do
        if [ "$flags" = 1 ] && [[ "$w" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then
            ENVS+=("$w")
        else
            flags=0
            ARGS+=("$w")
        fi
    done
}

# Whether an entry has --serve, or ZPIPE_SERVE=true (the one other value a
# role takes is false).
serves() {
    local ENVS ARGS w
    flags_of "$1"
    for w in "${ARGS[@]}" "${ENVS[@]}"; do
        case "$w" in --serve | ZPIPE_SERVE=true) return 0 ;; esac
    done
    return 1
}

# A standing pool: a sink line with --serve. Its batches are run by
# `submit`, on the ventilator line's host with its flags or, without one, on
# the sink's host: SUBMIT is that entry, an entry of line 0 (no flags) in
# the second case, added to LINES so that status and stop see a batch that
# runs.
POOL=0 SUBMIT='' VENTILATORS=0
for l in "${LINES[@]}"; do
    read -r num role host _ <<<"$l"
    case "$role" in
        sink) if [ "$POOL" = 0 ] && serves "$l"; then POOL=1 SINK_HOST=$host; fi ;;
        ventilator) VENTILATORS=$((VENTILATORS + 1)); [ -n "$SUBMIT" ] || SUBMIT=$l ;;
    esac
done
if [ "$POOL" = 1 ] && [ -z "$SUBMIT" ]; then
    SUBMIT="0 ventilator $SINK_HOST "
    LINES+=("$SUBMIT")
fi

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
    local reverse=$1 l n r m
    for l in "${LINES[@]}"; do
        read -r n r _ <<<"$l"
        echo "$(rank "$r") $n"
    done | if [ "$reverse" = 1 ]; then sort -k1,1nr -k2,2nr; else sort -k1,1n -k2,2n; fi |
        while read -r _ n; do
            for l in "${LINES[@]}"; do
                read -r m _ <<<"$l"
                [ "$m" = "$n" ] && echo "$l"
            done
        done
}

# An entry's command line on its host, quoted for its shell: QUOTED. More
# flags may follow the entry: each --FLAG of them replaces the entry's own
# (--FLAG VALUE or --FLAG=VALUE), which a role would refuse to take twice.
command_of() {
    local entry=$1 W num role host name where ENVS ARGS program kept=() i w f
    shift
    split_entry "$entry"
    flags_of "$entry"
    for ((i = 0; i < ${#ARGS[@]}; i++)); do
        w=${ARGS[i]}
        for f in "$@"; do
            [[ "$f" == --?* ]] || continue
            f=${f%%=*}
            if [ "$w" = "$f" ]; then
                # Its value too, if the next word is one (`-` is, a flag is not).
                [[ "${ARGS[i + 1]:-}" =~ ^-[-A-Za-z] ]] || i=$((i + 1))
                continue 2
            fi
            [[ "$w" == "$f="* ]] && continue 2
        done
        kept+=("$w")
    done
    ARGS=("${kept[@]}")
    program=$role
    case "$role" in
        queue | forwarder | streamer) program=devices; ARGS=("$role" "${ARGS[@]}") ;;
    esac
    ARGS+=("$@")
    # Whether it reads its tasks from stdin.
    STDIN=0
    for ((i = 0; i < ${#ARGS[@]}; i++)); do
        case "${ARGS[i]}" in
            --input=- | -i-) STDIN=1 ;;
            --input | -i) [ "${ARGS[i + 1]:-}" = - ] && STDIN=1 ;;
        esac
    done
    for w in "${ENVS[@]}"; do [ "$w" = ZPIPE_INPUT=- ] && STDIN=1; done
    QUOTED="bin/$program"
    [ ${#ARGS[@]} -gt 0 ] && QUOTED+=" $(printf '%q ' "${ARGS[@]}")"
    [ ${#ENVS[@]} -gt 0 ] && QUOTED="env $(printf '%q ' "${ENVS[@]}") $QUOTED"
    return 0
}

start_one() {
    local W num role host name where QUOTED
    split_entry "$1"
    if [ "$POOL" = 1 ] && [ "$role" = ventilator ]; then
        [ "$num" = 0 ] || echo "$where: kept for submit (the sink has --serve)"
        return 0
    fi
    if [ "$POOL" = 1 ] && [ "$role" = worker ] && ! serves "$1"; then
        echo "deploy: $where: warning: no --serve, so it leaves after the pool's first batch" >&2
    fi
    command_of "$1"
    # A process that exits at once (a port in use, a bad flag) is an error
    # here, with the end of its log.
    remote "$where" "$host" "mkdir -p $DIR/run && cd $DIR &&
        if [ -f run/$name.pid ] && kill -0 \$(cat run/$name.pid) 2>/dev/null; then
            echo 'already running (pid '\$(cat run/$name.pid)')'; exit 0; fi
        nohup $QUOTED >run/$name.log 2>&1 </dev/null & echo \$! >run/$name.pid
        sleep 0.5
        if ! kill -0 \$(cat run/$name.pid) 2>/dev/null; then
            echo 'exited at once:'; tail -n 5 run/$name.log; exit 1; fi" ||
        { echo "deploy: $where: did not start" >&2; return 1; }
    echo "started $where"
}

# submit, on a signal: stops the batch's ventilator (SIGTERM), which then
# says so and exits 130.
stop_batch() {
    signalled=1
    echo "deploy: $where: stopping the batch" >&2
    $SSH "$host" "[ -f $DIR/run/$name.pid ] && kill -TERM \$(cat $DIR/run/$name.pid) 2>/dev/null" </dev/null || true
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
            # A pool's ventilator runs only while `submit` runs a batch.
            if [ "$POOL" = 1 ] && [ "$role" = ventilator ]; then
                case "$state" in
                    running*) state="running a batch (pid ${state#running })" ;;
                    stopped | 'not started') state=idle ;;
                esac
            fi
            [ "$num" = 0 ] && num=-
            printf '%-4s %-10s %-24s %s\n' "$num" "$role" "$host" "$state"
        done < <(ordered 0)
        exit $rc
        ;;
    stop)
        # Workers first, the sink last, as for one batch. In a pool the
        # sink's SIGTERM would end the workers too (it publishes KILL), but
        # only those its KILL reaches: through a forwarder stopped before it,
        # or over a cut link, it does not. A worker's own SIGTERM always
        # reaches it, and each line says how it went. A batch that runs is
        # stopped after the workers and before the sink, so `submit` says
        # so (130) rather than waiting for a sink that is gone.
        rc=0
        while read -r l; do
            split_entry "$l"
            if said=$(remote "$where" "$host" "[ -f $DIR/run/$name.pid ] || { echo 'not started (no pid file)'; exit 0; }
                pid=\$(cat $DIR/run/$name.pid)
                kill -TERM \$pid 2>/dev/null || { echo 'was not running'; exit 0; }
                for _ in \$(seq 50); do kill -0 \$pid 2>/dev/null || { echo stopped; exit 0; }; sleep 0.1; done
                kill -KILL \$pid; echo 'killed (still running 5 s after SIGTERM)'"); then
                if [ "$POOL" = 1 ] && [ "$role" = ventilator ]; then
                    # Its pid file goes when its batch ends: none means idle.
                    case "$said" in
                        stopped) said='stopped its batch' ;;
                        killed*) ;;
                        *) said='no batch running' ;;
                    esac
                fi
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
            if [ "$POOL" = 1 ] && [ "$role" = ventilator ]; then
                [ "$num" = 0 ] ||
                    echo "== line $num: $role on $host: a batch's messages go to the terminal of submit"
                continue
            fi
            echo "== line $num: $role on $host"
            remote "$where" "$host" "cat $DIR/run/$name.log 2>/dev/null || echo '(no log)'" || true
        done < <(ordered 0)
        ;;
    submit)
        if [ "$POOL" = 0 ]; then
            echo "deploy: submit: $INVENTORY is not a standing pool (no sink line with --serve); \`up\` runs its one batch" >&2
            exit 2
        fi
        if [ "$VENTILATORS" -gt 1 ]; then
            echo "deploy: submit: $INVENTORY has $VENTILATORS ventilator lines; a pool's batches take their flags from one" >&2
            exit 2
        fi
        split_entry "$SUBMIT"
        command_of "$SUBMIT" "${EXTRA[@]}"
        # The ventilator runs in the background of the remote shell, which
        # waits for it and then removes its pid file: a pid file means a
        # batch runs. With `--input -` its stdin is ours (fd 3: a background
        # command's stdin is otherwise /dev/null), else none, so that ssh
        # does not eat the input of a loop that submits; 75 says a batch
        # from this line runs already.
        cmd="mkdir -p $DIR/run && cd $DIR || exit 1
            if [ -f run/$name.pid ] && kill -0 \$(cat run/$name.pid) 2>/dev/null; then exit 75; fi
            exec 3<&0
            $QUOTED <&3 3<&- &
            echo \$! >run/$name.pid
            wait \$!; rc=\$?; rm -f run/$name.pid; exit \$rc"
        # ssh in the background, so that a signal here is heard while it
        # runs (a background command ignores SIGINT from the terminal, so
        # ssh stays to print what the ventilator says when stopped).
        if [ "$STDIN" = 1 ]; then
            $SSH "$host" "$cmd" <&0 &
        else
            $SSH "$host" "$cmd" </dev/null &
        fi
        ssh_pid=$!
        signalled=0
        trap stop_batch INT TERM HUP
        while :; do
            signalled=0 rc=0
            wait "$ssh_pid" || rc=$?
            # A signal ends `wait` early: wait again, for the code.
            [ "$signalled" = 1 ] || break
        done
        case $rc in
            0 | 3 | 130) ;;
            75) echo "deploy: $where: a batch from it runs already (see status); one at a time" >&2; rc=1 ;;
            255) echo "deploy: $where: ssh to $host failed" >&2 ;;
            *) echo "deploy: $where: the ventilator on $host failed (exit code $rc)" >&2 ;;
        esac
        exit "$rc"
        ;;
esac
