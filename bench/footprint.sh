#!/usr/bin/env bash
# Footprint, side by side: binary size, idle RSS of a listener, and the time
# `send` takes from start to exit for one message. Loopback only; bounded.
# Usage: bench/footprint.sh [RUNS]   (needs a release build: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
portier=target/release/portier
[ -x "$portier" ] || { echo "build first: cargo build --release" >&2; exit 1; }
for tool in nc ncat socat; do
  command -v "$tool" >/dev/null || { echo "missing peer: $tool (apt-get install netcat-openbsd ncat socat)" >&2; exit 1; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Median idle RSS (KiB) of RUNS listeners, each read from /proc once it has settled
# (shared code pages make single readings vary by a few hundred KiB).
idle_rss() {
  local sizes=()
  for _ in $(seq "$runs"); do
    "$@" >/dev/null 2>&1 &
    local pid=$!
    sleep 0.5
    sizes+=("$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")")
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  done
  median "${sizes[@]}"
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Median wall time (ms) of RUNS sends of one message to a listener that keeps accepting.
send_ms() {
  local port=$1; shift
  local times=()
  for _ in $(seq "$runs"); do
    local start end
    start=$(date +%s%N)
    "${@//PORT/$port}" >/dev/null 2>&1 || true
    end=$(date +%s%N)
    times+=($(( (end - start) / 1000 )))
  done
  median "${times[@]}" | awk '{printf "%.2f", $1 / 1000}'
}

echo "| tool | binary (bytes) | idle RSS (KiB, median of $runs) | send one message, start to exit (ms, median of $runs) |"
echo "|---|---:|---:|---:|"
sink_port=$(free_port)
socat -u "TCP-LISTEN:$sink_port,bind=127.0.0.1,reuseaddr,fork" /dev/null & sink=$!
trap 'kill $sink 2>/dev/null || true' EXIT
sleep 0.3
row() { # name binary listen-command... -- send-command...
  local name=$1 bin=$2; shift 2
  local listen=() send=()
  while [ "$1" != "--" ]; do listen+=("$1"); shift; done; shift
  send=("$@")
  printf '| %s | %s | %s | %s |\n' "$name" "$(stat -L -c %s "$(command -v "$bin")")" \
    "$(idle_rss "${listen[@]}")" "$(send_ms "$sink_port" "${send[@]}")"
}
p1=$(free_port); row portier "$portier" "$portier" listen "$p1" -- sh -c "echo hello | $portier send 127.0.0.1 PORT"
p2=$(free_port); row nc nc nc -l 127.0.0.1 "$p2" -- sh -c 'echo hello | nc -N 127.0.0.1 PORT'
p3=$(free_port); row ncat ncat ncat -l 127.0.0.1 "$p3" -- sh -c 'echo hello | ncat --send-only 127.0.0.1 PORT'
p4=$(free_port); row socat socat socat "TCP-LISTEN:$p4,bind=127.0.0.1" - -- sh -c 'echo hello | socat -u - TCP:127.0.0.1:PORT'
