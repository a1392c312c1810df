#!/usr/bin/env bash
# CPU time a UDP listener spends per datagram while draining bursts: the
# listener is frozen (SIGSTOP) while 4,000 datagrams of 64 bytes queue up in
# its socket buffer, then let go; 20 bursts. This is where batch receive
# (recvmmsg) pays: a steady trickle arrives one datagram at a time anyway.
# Usage: bench/udp_burst.sh PORTIER_BINARY...   (e.g. two builds to compare)
set -euo pipefail
cd "$(dirname "$0")/.."
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {print s}'; }
for binary in "$@"; do
  port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  out=$(mktemp)
  "$binary" listen -u -q -b 127.0.0.1 "$port" > "$out" &
  pid=$!
  sleep 0.3
  total=0
  for _ in $(seq 20); do
    kill -STOP "$pid"
    python3 bench/udp_blast.py 127.0.0.1 "$port" 4000 64
    before=$(cpu_ns "$pid")
    kill -CONT "$pid"
    sleep 0.15
    total=$(( total + $(cpu_ns "$pid") - before ))
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$binary: $(( $(stat -c %s "$out") / 64 )) of 80000 received, $(( total / 80000 )) ns of CPU per datagram"
  rm -f "$out"
done
