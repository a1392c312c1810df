#!/usr/bin/env bash
# CPU time a UDP listener spends per datagram while draining bursts: the
# listener is frozen (SIGSTOP) while 4,000 datagrams of 64 bytes queue up in
# its socket buffer, then let go; 20 bursts. This is where batch receive
# (recvmmsg) pays: a steady trickle arrives one datagram at a time anyway.
# Usage: bench/udp_burst.sh PORTIER_BINARY...   (e.g. two builds to compare)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh # cpu_ns, burst_cpu_ns
for binary in "$@"; do
  port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  out=$(mktemp)
  "$binary" listen -u -q -b 127.0.0.1 "$port" > "$out" &
  pid=$!
  sleep 0.3
  total=$(burst_cpu_ns "$pid" "$port" 20)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$binary: $(( $(stat -c %s "$out") / 64 )) of 80000 received, $(( total / 80000 )) ns of CPU per datagram"
  rm -f "$out"
done
