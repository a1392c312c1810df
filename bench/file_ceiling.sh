#!/usr/bin/env bash
# Into a file: portier and socat -b 131072 moving 2 GiB over loopback TCP into a
# fresh file on tmpfs, alternating ROUNDS times with what bounds them:
# bench/receive_floor.rs, which takes the same stream off the socket without
# copying it and fills the file's new pages from a cached buffer (less than any
# receiver must do), and copies that use no network at all: the same source
# file copied into a fresh file by dd (one core) and by bench/two_thread_copy.rs
# (two cores), and dd writing zeros (new pages only). Prints each round, the
# medians and each column's ratio to socat -b. Loopback only; bounded.
# Usage: bench/file_ceiling.sh [ROUNDS]   (needs a release build, rustc and socat)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh # free_port, wait_port, now, median, gb_per_s, fresh, timed_write, timed_dd, transfer
rounds=${1:-9}
portier=target/release/portier
[ -x "$portier" ] || { echo "build first: PORTIER_STARTUP_LAYOUT=1 cargo build --release" >&2; exit 1; }
command -v socat >/dev/null || { echo "missing peer: socat (apt-get install socat)" >&2; exit 1; }

size=$((2048 * 1024 * 1024))
source_file=$(mktemp) sink=$(mktemp /dev/shm/portier-ceiling.XXXXXX) table=$(mktemp) copier=$(mktemp) floor=$(mktemp)
trap 'rm -f "$source_file" "$sink" "$table" "$copier" "$floor"' EXIT
rustc -O --edition 2021 bench/two_thread_copy.rs -o "$copier"
rustc -O --edition 2021 bench/receive_floor.rs -o "$floor"
head -c "$size" /dev/zero > "$source_file"

# Untimed first: the first file written after a pause ran slower, whatever wrote it.
timed_dd "$sink" if=/dev/zero count=16384 >/dev/null
echo "| round | portier | socat -b 131072 | receive floor (network, writes none of it) | dd copying the source file (no network) | two threads copying it (no network) | dd from /dev/zero (no network) |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for round in $(seq "$rounds"); do
  p=$(transfer "$source_file" "$sink" "$portier" listen -t --once -q -b 127.0.0.1 PORT -- "$portier" send 127.0.0.1 PORT)
  s=$(transfer "$source_file" "$sink" socat -b 131072 -u TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr - -- socat -b 131072 -u - TCP:127.0.0.1:PORT)
  f=$(transfer "$source_file" "$sink" "$floor" PORT "$size" -- "$portier" send 127.0.0.1 PORT)
  c=$(timed_dd "$sink" if="$source_file")
  t=$(timed_write "$sink" "$copier" "$source_file")
  z=$(timed_dd "$sink" if=/dev/zero count=16384)
  echo "$p $s $f $c $t $z" >> "$table"
  echo "| $round | $p | $s | $f | $c | $t | $z |"
done
rm -f "$sink"
# The median of each column, then each median over socat's.
medians=$(for column in 1 2 3 4 5 6; do
  median $(cut -d' ' -f"$column" "$table")
done | paste -sd' ')
echo "$medians" | awk '{printf "| median | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n| / socat -b | %.2fx | 1x | %.2fx | %.2fx | %.2fx | %.2fx |\n", $1, $2, $3, $4, $5, $6, $1 / $2, $3 / $2, $4 / $2, $5 / $2, $6 / $2}'
