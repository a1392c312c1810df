#!/usr/bin/env bash
# Into a file: portier and socat -b 131072 moving 2 GiB over loopback TCP into a
# fresh file on tmpfs, beside dd writing the same 2 GiB from /dev/zero with no
# network at all (the cost of the file write alone), alternating, ROUNDS times.
# If dd is not 1.5x socat, no receiver can be. Loopback only; bounded.
# Usage: bench/file_ceiling.sh [ROUNDS]   (needs a release build and socat)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-9}
portier=target/release/portier
[ -x "$portier" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v socat >/dev/null || { echo "missing peer: socat (apt-get install socat)" >&2; exit 1; }

size=$((2048 * 1024 * 1024))
source_file=$(mktemp) sink=$(mktemp /dev/shm/portier-ceiling.XXXXXX)
trap 'rm -f "$source_file" "$sink"' EXIT
head -c "$size" /dev/zero > "$source_file"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do ss -ltn | grep -q ":$1 " && return; sleep 0.02; done; }
rate() { awk -v bytes="$size" -v ns="$1" 'BEGIN {printf "%.3f", bytes / ns}'; } # GB/s

# One transfer: server command, then client command, PORT substituted; prints GB/s.
transfer() {
  local server=() client=()
  while [ "$1" != "--" ]; do server+=("$1"); shift; done; shift
  client=("$@")
  local port; port=$(free_port)
  rm -f "$sink"; sync
  timeout 120 "${server[@]//PORT/$port}" > "$sink" 2>/dev/null & local pid=$!
  wait_port "$port"
  local start; start=$(date +%s%N)
  timeout 120 "${client[@]//PORT/$port}" < "$source_file" > /dev/null 2>&1
  wait "$pid"
  rate $(( $(date +%s%N) - start ))
}

echo "| round | portier | socat -b 131072 | dd from /dev/zero (no network) |"
echo "|---:|---:|---:|---:|"
for round in $(seq "$rounds"); do
  p=$(transfer "$portier" listen -t --once -q -b 127.0.0.1 PORT -- "$portier" send 127.0.0.1 PORT)
  s=$(transfer socat -b 131072 -u TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr - -- socat -b 131072 -u - TCP:127.0.0.1:PORT)
  rm -f "$sink"; sync
  start=$(date +%s%N)
  dd if=/dev/zero of="$sink" bs=128K count=16384 status=none
  d=$(rate $(( $(date +%s%N) - start )))
  echo "| $round | $p | $s | $d |"
done
