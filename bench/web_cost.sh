#!/usr/bin/env bash
# What `listen --web` costs with no browser attached: 200,000 UDP datagrams of 64 bytes into
# `portier listen -u > /dev/null`, with and without `--web`, taking turns; each listener is
# frozen (SIGSTOP) while 4,000 datagrams queue in its socket, then let go (as udp_burst.sh),
# so no datagram is lost to the sender outrunning it. Reports datagrams received and CPU
# nanoseconds per datagram (from /proc/PID/task/*/schedstat), and the ratio per round.
# Usage: bench/web_cost.sh [BINARY] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bin=${1:-target/release/portier}
rounds=${2:-5}
bursts=50
# Runs one listener with the given extra arguments; prints: received ns_per_datagram.
one() {
  local port out pid total
  port=$(free_port)
  out=$(mktemp)
  "$bin" listen -u -q -b 127.0.0.1 "$port" "$@" > "$out" 2>/dev/null &
  pid=$!
  sleep 0.3
  total=$(burst_cpu_ns "$pid" "$port" "$bursts")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$(( $(stat -c %s "$out") / 64 )) $(( total / (bursts * 4000) ))"
  rm -f "$out"
}
declare -a plain_ns web_ns ratios
for round in $(seq "$rounds"); do
  read -r got_plain ns_plain < <(one)
  web=$(free_port)
  read -r got_web ns_web < <(one --web "127.0.0.1:$web")
  plain_ns+=("$ns_plain"); web_ns+=("$ns_web")
  ratios+=("$(echo "$ns_web $ns_plain" | awk '{printf "%.2f", $1 / $2}')")
  echo "round $round: without --web $got_plain of $((bursts * 4000)) received, $ns_plain ns/datagram; with --web $got_web received, $ns_web ns/datagram"
done
spread() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {printf "median %s (min %s, max %s)", v[int((NR + 1) / 2)], v[1], v[NR]}'; }
echo "CPU ns/datagram without --web: $(spread "${plain_ns[@]}")"
echo "CPU ns/datagram with --web:    $(spread "${web_ns[@]}")"
echo "with / without:                $(spread "${ratios[@]}")"
