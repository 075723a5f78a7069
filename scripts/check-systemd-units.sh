#!/usr/bin/env bash
# Checks the systemd units in scripts/systemd/ (or those named) with
# `systemd-analyze verify`, which needs no running systemd, and the example
# env files beside them for lines systemd could not read. For CI: installs
# nothing, and exits 77 (skip) with the reason where systemd-analyze is
# missing.
#
#   scripts/check-systemd-units.sh [UNIT_FILE...]
#
# verify refuses a unit whose program does not exist, and on a build or CI
# machine /usr/local/bin/sink does not. So each unit is checked as a copy
# whose missing programs are replaced by stub executables in a temporary
# directory; nothing else in it changes. A template (NAME@.service) is
# checked as the instance NAME@check.service. verify reports most mistakes
# (an unknown key, a bad value) as warnings and still exits 0: any word from
# it is a failure here.
#
# Exit codes: 0 all clean; 1 a unit or env file has a problem; 77 skipped.
set -euo pipefail

command -v systemd-analyze >/dev/null ||
    { echo "check-systemd-units: skipped: systemd-analyze is not installed (Debian: systemd)" >&2; exit 77; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [ $# -gt 0 ]; then
    UNITS=("$@")
else
    UNITS=("$ROOT"/scripts/systemd/*.service)
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir "$TMP/stub"

rc=0
for unit in "${UNITS[@]}"; do
    [ -r "$unit" ] || { echo "check-systemd-units: cannot read $unit" >&2; rc=1; continue; }
    name=$(basename "$unit")
    copy=$TMP/$name
    cp "$unit" "$copy"
    # The program of every Exec*= line (after systemd's prefixes @, -, :, +,
    # !), stubbed out when this machine lacks it.
    # shellcheck disable=SC2013 # a program path is one word
    for prog in $(sed -nE 's/^Exec[A-Za-z]*=[-@:+!]*([^[:space:]]+).*/\1/p' "$unit" | sort -u); do
        case "$prog" in /*) ;; *) continue ;; esac
        [ -x "$prog" ] && continue
        mkdir -p "$TMP/stub$(dirname "$prog")"
        printf '#!/bin/sh\nexit 0\n' >"$TMP/stub$prog"
        chmod 0755 "$TMP/stub$prog"
        sed -i "s|=\([-@:+!]*\)$prog|=\1$TMP/stub$prog|" "$copy"
    done
    target=$copy
    case "$name" in *@.service) target=$TMP/${name%@.service}@check.service ;; esac
    out=$(cd "$TMP" && systemd-analyze verify --man=no "$target" 2>&1) || true
    if [ -n "$out" ]; then
        echo "check-systemd-units: $unit:" >&2
        # Messages name the copy; say the file the reader will edit.
        sed -e "s|$TMP/stub||g" -e "s|$TMP/|$(dirname "$unit")/|g" <<<"$out" | sed 's/^/  /' >&2
        rc=1
    else
        echo "ok   $unit"
    fi
done

# An env file is KEY=VALUE lines and comments; a line commented out as an
# example (#KEY=VALUE) must read the same once uncommented.
for env in "$ROOT"/scripts/systemd/*.env.example; do
    [ -e "$env" ] || continue
    bad=$(grep -nEv '^[[:space:]]*$|^#[[:space:]]|^#$|^#?[A-Za-z_][A-Za-z0-9_]*=' "$env" || true)
    if [ -n "$bad" ]; then
        echo "check-systemd-units: $env: lines systemd would not read as KEY=VALUE:" >&2
        while IFS= read -r l; do echo "  $l"; done <<<"$bad" >&2
        rc=1
    else
        echo "ok   $env"
    fi
done
exit $rc
