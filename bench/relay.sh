#!/usr/bin/env bash
# TCP relay throughput, side by side in one run: BULK_MIB from a file sent by
# `portier send` to a `portier listen -t --once` sink writing /dev/null, directly
# and through each relay (portier relay, socat ...,fork, socat -b 131072), in turns.
# Loopback only; every command bounded by LIMIT seconds.
#
# Then CLIENTS connections at once through portier relay (each a line, held
# open; the upstream must get each line once; the relay's peak RSS), and
# UDP_COUNT datagrams through a UDP relay (every one forwarded, or counted).
#
# Usage: bench/relay.sh            (RUNS=5 BULK_MIB=1024 CLIENTS=10000 UDP_COUNT=200000)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh # free_port, wait_port, now, gb_per_s, median, LIMIT
RUNS=${RUNS:-5}
BULK_MIB=${BULK_MIB:-1024}
CLIENTS=${CLIENTS:-10000}
UDP_COUNT=${UDP_COUNT:-200000}
command -v socat >/dev/null || { echo "missing: socat" >&2; exit 1; }
# Two sockets a relayed client: 10,000 clients need more than the usual 20,000 descriptors.
ulimit -n 65536 2>/dev/null || echo "cannot raise the open-file limit (run as root for CLIENTS=10000)" >&2
PORTIER_STARTUP_LAYOUT=1 cargo build --release --quiet  # as packaged (build.rs)
portier=$PWD/target/release/portier
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; jobs -p | xargs -r kill 2>/dev/null || true' EXIT
bulk=$tmp/bulk.bin
head -c "${BULK_MIB}M" /dev/zero > "$bulk"
bytes=$(stat -c %s "$bulk")

# through RELAY: GB/s from the sender's start to the sink's exit.
through() {
  local sink_port relay_port port relay_pid=
  sink_port=$(free_port)
  timeout "$LIMIT" "$portier" listen -t --once -q "$sink_port" > /dev/null 2>&1 &
  local sink_pid=$!
  wait_port "$sink_port"
  case $1 in
    direct) port=$sink_port ;;
    *)
      relay_port=$(free_port)
      case $1 in
        portier) "$portier" relay "tcp://127.0.0.1:$relay_port" "tcp://127.0.0.1:$sink_port" 2>/dev/null & ;;
        socat) socat "TCP-LISTEN:$relay_port,bind=127.0.0.1,reuseaddr,fork" "TCP:127.0.0.1:$sink_port" & ;;
        "socat -b 131072") socat -b 131072 "TCP-LISTEN:$relay_port,bind=127.0.0.1,reuseaddr,fork" "TCP:127.0.0.1:$sink_port" & ;;
      esac
      relay_pid=$!
      wait_port "$relay_port"
      port=$relay_port ;;
  esac
  local start; start=$(now)
  timeout "$LIMIT" "$portier" send 127.0.0.1 "$port" --file "$bulk" > /dev/null 2>&1 || true
  wait "$sink_pid" || true
  local end; end=$(now)
  [ -z "$relay_pid" ] || { kill "$relay_pid" 2>/dev/null; wait "$relay_pid" 2>/dev/null || true; }
  gb_per_s "$bytes" "$start" "$end"
}

tools=(direct portier socat "socat -b 131072")
declare -A results
for run in $(seq "$RUNS"); do
  for i in "${!tools[@]}"; do
    tool=${tools[(i + run - 1) % ${#tools[@]}]}
    results[$tool]+="$(through "$tool") "
  done
done
echo "### TCP relay, $BULK_MIB MiB, $RUNS runs each, in turns (GB/s)"
echo
echo "| path | min | median | max |"
echo "|---|---:|---:|---:|"
for tool in "${tools[@]}"; do
  # shellcheck disable=SC2086
  set -- ${results[$tool]}
  printf '| %s | %s | %s | %s |\n' "$tool" "$(printf '%s\n' "$@" | sort -g | head -1)" "$(median "$@")" "$(printf '%s\n' "$@" | sort -g | tail -1)"
done
med() { # shellcheck disable=SC2086
  median ${results[$1]}; }
echo
awk -v p="$(med portier)" -v s="$(med socat)" -v b="$(med "socat -b 131072")" -v d="$(med direct)" 'BEGIN {
  best = s > b ? s : b
  printf "portier relay / best socat (median): **%.2fx**; portier relay / direct: **%.2f**\n", p / best, p / d }'

# Many clients at once through the relay.
up_port=$(free_port); relay_port=$(free_port)
"$portier" listen -t -q -m 20000 -b 127.0.0.1 "$up_port" > "$tmp/lines.out" 2>/dev/null &
up_pid=$!
wait_port "$up_port"
"$portier" relay "tcp://127.0.0.1:$relay_port" "tcp://127.0.0.1:$up_port" -m 20000 2> "$tmp/relay.err" &
relay_pid=$!
wait_port "$relay_port"
took=$(timeout "$LIMIT" python3 bench/many_clients.py 127.0.0.1 "$relay_port" "$CLIENTS")
sleep 1
rss=$(awk '/^VmHWM/ {print $2}' "/proc/$relay_pid/status")
kill -TERM "$relay_pid" "$up_pid"; wait "$relay_pid" "$up_pid" 2>/dev/null || true
once=$(grep -o 'client [0-9]*' "$tmp/lines.out" | sort | uniq -u | wc -l)
echo
echo "### $CLIENTS clients at once through portier relay"
echo
echo "lines the upstream got exactly once: **$once** of $CLIENTS; relay peak RSS: **$rss KiB**; python's wall time and failed connects: $took"
echo "relay: $(grep 'relay summary' "$tmp/relay.err")"

# UDP: UDP_COUNT datagrams of 64 bytes through the relay to a portier listener.
udp_relay_blast "$portier" "$UDP_COUNT" "$tmp"
got=$(( $(stat -c %s "$tmp/udp.out") / 64 ))
echo
echo "### $UDP_COUNT datagrams of 64 B through portier relay"
echo
echo "reached the upstream listener: **$got** of $UDP_COUNT"
echo "relay: $(grep 'relay summary' "$tmp/relay.err")"
