#!/usr/bin/env bash
# A multi-subnet lab on one Linux machine: network namespaces as hosts, each
# with its own sshd, so that scripts/deploy.sh runs over real ssh.
#
#   subnet A 192.0.2.0/24            device host             subnet B 198.51.100.0/24
#   zp-a1 192.0.2.10 ── br-a ── zp-dev 192.0.2.1 | 198.51.100.1 ── br-b ── zp-b1 198.51.100.11
#                                  (no IP forwarding)                  └── zp-b2 198.51.100.12
#
# The device host has a leg in each subnet and does not route: traffic gets
# from one subnet to the other only through zpipe's devices running there.
#
#   scripts/netns-lab.sh up      build it (root; installs nothing: needs
#                                iproute2, openssh-server and ssh-keygen)
#   scripts/netns-lab.sh down    tear it down
#   scripts/netns-lab.sh env     print ZPIPE_SSH/ZPIPE_SCP for deploy.sh;
#                                run deploy.sh inside zp-dev, which reaches
#                                both subnets:
#       eval "$(scripts/netns-lab.sh env)"
#       ip netns exec zp-dev scripts/deploy.sh INVENTORY
#   scripts/netns-lab.sh cut HOST    drop a host's link (zp-b2, say)
#
# ZPIPE_LAB (default /tmp/zpipe-lab) holds the lab's keys and sshd files.
# The namespace names are fixed: one lab per machine (`up` clears an old one).
set -euo pipefail

LAB=${ZPIPE_LAB:-/tmp/zpipe-lab}
HOSTS=(zp-a1 zp-b1 zp-b2)
ALL=(zp-dev "${HOSTS[@]}")
declare -A ADDR=([zp-a1]=192.0.2.10 [zp-b1]=198.51.100.11 [zp-b2]=198.51.100.12)
declare -A BRIDGE=([zp-a1]=br-a [zp-b1]=br-b [zp-b2]=br-b)

die() { echo "netns-lab: $*" >&2; exit 1; }

up() {
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
    command -v ip >/dev/null || die "needs iproute2 (ip)"
    [ -x /usr/sbin/sshd ] || die "needs sshd (apt-get install openssh-server)"
    command -v ssh-keygen >/dev/null || die "needs ssh-keygen (openssh-client)"
    down quiet
    mkdir -p "$LAB"
    ssh-keygen -q -t ed25519 -N '' -f "$LAB/id" <<<y >/dev/null
    ssh-keygen -q -t ed25519 -N '' -f "$LAB/host_key" <<<y >/dev/null
    cp "$LAB/id.pub" "$LAB/authorized_keys"
    chmod 600 "$LAB/authorized_keys"
    mkdir -p /run/sshd

    ip netns add zp-dev || die "cannot create network namespaces here"
    ip -n zp-dev link set lo up
    ip -n zp-dev link add br-a type bridge
    ip -n zp-dev link add br-b type bridge
    ip -n zp-dev addr add 192.0.2.1/24 dev br-a
    ip -n zp-dev addr add 198.51.100.1/24 dev br-b
    ip -n zp-dev link set br-a up
    ip -n zp-dev link set br-b up
    # The device host must not route between the subnets.
    ip netns exec zp-dev sysctl -q -w net.ipv4.ip_forward=0
    for h in "${HOSTS[@]}"; do
        ip netns add "$h"
        ip -n "$h" link set lo up
        ip link add "v-$h" netns zp-dev type veth peer name eth0 netns "$h"
        ip -n zp-dev link set "v-$h" master "${BRIDGE[$h]}" up
        ip -n "$h" addr add "${ADDR[$h]}/24" dev eth0
        ip -n "$h" link set eth0 up
    done
    for h in "${ALL[@]}"; do
        cat >"$LAB/sshd-$h.conf" <<EOF
Port 22
HostKey $LAB/host_key
AuthorizedKeysFile $LAB/authorized_keys
PidFile $LAB/sshd-$h.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel ERROR
Subsystem sftp internal-sftp
EOF
        ip netns exec "$h" /usr/sbin/sshd -f "$LAB/sshd-$h.conf" || die "sshd did not start in $h"
    done
    # Every sshd answers before we say the lab is up.
    for a in 192.0.2.10 198.51.100.11 198.51.100.12 192.0.2.1; do
        local ok=0
        for _ in $(seq 50); do
            if ip netns exec zp-dev bash -c "exec 3<>/dev/tcp/$a/22" 2>/dev/null; then ok=1; break; fi
            sleep 0.1
        done
        [ "$ok" = 1 ] || die "the sshd at $a does not answer"
    done
    echo "netns-lab: up: zp-a1 192.0.2.10 | zp-dev 192.0.2.1, 198.51.100.1 | zp-b1 198.51.100.11, zp-b2 198.51.100.12"
}

down() {
    for h in "${ALL[@]}"; do
        if [ -f "$LAB/sshd-$h.pid" ]; then
            kill "$(cat "$LAB/sshd-$h.pid")" 2>/dev/null || true
        fi
        # Whatever still runs in the namespace goes with it.
        if ip netns pids "$h" >/dev/null 2>&1; then
            for p in $(ip netns pids "$h" 2>/dev/null); do kill -TERM "$p" 2>/dev/null || true; done
        fi
    done
    sleep 0.2
    for h in "${ALL[@]}"; do
        for p in $(ip netns pids "$h" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
        ip netns del "$h" 2>/dev/null || true
    done
    rm -rf "$LAB"
    [ "${1:-}" = quiet ] || echo "netns-lab: down"
}

env_vars() {
    local opts="-i $LAB/id -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    echo "export ZPIPE_SSH='ssh $opts'"
    echo "export ZPIPE_SCP='scp -q $opts'"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    env) env_vars ;;
    cut)
        [ -n "${2:-}" ] || die "usage: $0 cut HOST"
        ip -n "$2" link set eth0 down
        ;;
    *) echo "usage: $0 up|down|env|cut HOST" >&2; exit 2 ;;
esac
