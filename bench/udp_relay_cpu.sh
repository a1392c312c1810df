#!/usr/bin/env bash
# The UDP relay's CPU per datagram forwarded, for one or more portier builds in turns:
# COUNT datagrams of 64 B blasted at `portier relay udp:// udp://` in front of
# `portier listen -u`; the relay's user+system time (from /proc) over what reached
# the listener, and the relay's summary (forwarded, counted as dropped).
#
# Usage: bench/udp_relay_cpu.sh BINARY [BINARY...]   (ROUNDS=4 COUNT=200000)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh # udp_relay_blast
ROUNDS=${ROUNDS:-4}
COUNT=${COUNT:-200000}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tick_ms=$(( 1000 / $(getconf CLK_TCK) ))

for round in $(seq "$ROUNDS"); do
  echo "round $round"
  for portier in "$@"; do
    udp_relay_blast "$portier" "$COUNT" "$tmp"
    got=$(( $(stat -c %s "$tmp/udp.out") / 64 ))
    cpu_ms=$(( relay_cpu_ticks * tick_ms ))
    awk -v p="$portier" -v cpu="$cpu_ms" -v got="$got" 'BEGIN {
      printf "%s: %d ms CPU, %d reached the listener, %.2f us a datagram\n", p, cpu, got, cpu * 1000 / (got > 0 ? got : 1) }'
    grep -o 'relay summary.*' "$tmp/relay.err" || true
  done
done
