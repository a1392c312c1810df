#!/usr/bin/env bash
# Into a file: portier and socat -b 131072 moving 2 GiB over loopback TCP into a
# fresh file on tmpfs, beside dd writing the same 2 GiB from /dev/zero with no
# network at all (the cost of the file write alone), alternating, ROUNDS times.
# If dd is not 1.5x socat, no receiver can be. Loopback only; bounded.
# Usage: bench/file_ceiling.sh [ROUNDS]   (needs a release build and socat)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh # free_port, wait_port, now, gb_per_s, fresh, transfer
rounds=${1:-9}
portier=target/release/portier
[ -x "$portier" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v socat >/dev/null || { echo "missing peer: socat (apt-get install socat)" >&2; exit 1; }

size=$((2048 * 1024 * 1024))
source_file=$(mktemp) sink=$(mktemp /dev/shm/portier-ceiling.XXXXXX)
trap 'rm -f "$source_file" "$sink"' EXIT
head -c "$size" /dev/zero > "$source_file"

echo "| round | portier | socat -b 131072 | dd from /dev/zero (no network) |"
echo "|---:|---:|---:|---:|"
for round in $(seq "$rounds"); do
  p=$(transfer "$source_file" "$sink" "$portier" listen -t --once -q -b 127.0.0.1 PORT -- "$portier" send 127.0.0.1 PORT)
  s=$(transfer "$source_file" "$sink" socat -b 131072 -u TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr - -- socat -b 131072 -u - TCP:127.0.0.1:PORT)
  fresh "$sink"
  start=$(now)
  dd if=/dev/zero of="$sink" bs=128K count=16384 status=none
  d=$(gb_per_s "$size" "$start" "$(now)")
  echo "| $round | $p | $s | $d |"
done
