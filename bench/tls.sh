#!/usr/bin/env bash
# TLS bulk throughput, side by side in one run: BULK_MIB of zeros from a file in
# /dev/shm through a TLS sender to a TLS receiver writing /dev/null, for each pair
# of portier, socat and ncat, in turns (ECDSA P-256 certificate, each tool's default
# suite: TLS 1.3). Loopback only; every command bounded by LIMIT seconds.
#
# Usage: bench/tls.sh            (RUNS=3 BULK_MIB=512)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh # free_port, wait_port, now, gb_per_s, median, LIMIT
RUNS=${RUNS:-3}
BULK_MIB=${BULK_MIB:-512}
for tool in socat ncat openssl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
PORTIER_STARTUP_LAYOUT=1 cargo build --release --quiet # as packaged (build.rs)
portier=$PWD/target/release/portier
tmp=$(mktemp -d -p /dev/shm)
trap 'rm -rf "$tmp"; jobs -p | xargs -r kill 2>/dev/null || true' EXIT
bulk=$tmp/bulk.bin
head -c "${BULK_MIB}M" /dev/zero > "$bulk"
bytes=$(stat -c %s "$bulk")
# rustls refuses a CA certificate as a server's own (CaUsedAsEndEntity): mark it a leaf.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -addext basicConstraints=critical,CA:FALSE \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null

# The receiver listens on PORT, prints what arrives, and exits when the sender is done.
receiver() {
  case $1 in
    portier) echo "$portier listen --tls --cert $tmp/cert.pem --key $tmp/key.pem --once -q PORT" ;;
    socat) echo "socat -b 131072 -u OPENSSL-LISTEN:PORT,bind=127.0.0.1,reuseaddr,cert=$tmp/cert.pem,key=$tmp/key.pem,verify=0 STDOUT" ;;
    ncat) echo "ncat --ssl --ssl-cert $tmp/cert.pem --ssl-key $tmp/key.pem -l 127.0.0.1 PORT --recv-only" ;;
  esac
}
# The sender reads its stdin (the file) and checks the receiver against cert.pem.
sender() {
  case $1 in
    portier) echo "$portier send --tls --ca $tmp/cert.pem 127.0.0.1 PORT" ;;
    socat) echo "socat -b 131072 -u STDIN OPENSSL:127.0.0.1:PORT,cafile=$tmp/cert.pem" ;;
    # ncat checks the name only against DNS names, so it asks for localhost (IPv4).
    ncat) echo "ncat -4 --ssl --ssl-trustfile $tmp/cert.pem --ssl-verify --send-only localhost PORT" ;;
  esac
}

# run SENDER RECEIVER SINK: the file through the pair, the receiver writing into
# the file SINK; prints GB/s from the sender's start to the receiver's exit, then
# the CPU milliseconds (user and system) of the sender and of the receiver.
run() {
  local port
  port=$(free_port)
  # shellcheck disable=SC2046
  timeout "$LIMIT" /usr/bin/time -f "%U %S" -o "$tmp/receiver.cpu" \
    $(receiver "$2" | sed "s/PORT/$port/") > "$3" 2>/dev/null &
  local pid=$!
  wait_port "$port"
  local start; start=$(now)
  # shellcheck disable=SC2046
  timeout "$LIMIT" /usr/bin/time -f "%U %S" -o "$tmp/sender.cpu" \
    $(sender "$1" | sed "s/PORT/$port/") < "$bulk" > /dev/null 2>&1 || true
  wait "$pid" || true
  local end; end=$(now)
  echo "$(gb_per_s "$bytes" "$start" "$end") $(cpu_ms "$tmp/sender.cpu") $(cpu_ms "$tmp/receiver.cpu")"
}
# (The last line: time puts "Command exited with non-zero status N" before a failed one's.)
cpu_ms() { awk 'END {printf "%d", ($1 + $2) * 1000}' "$1"; }

pairs=("portier portier" "socat socat" "ncat ncat" "portier socat" "socat portier" "portier ncat" "ncat portier")
# Each pair once untimed into a file, to see that every byte arrives.
declare -A arrived
for p in "${pairs[@]}"; do
  # shellcheck disable=SC2086
  run $p "$tmp/out" > /dev/null
  got=$(stat -c %s "$tmp/out")
  rm "$tmp/out"
  if [ "$got" = "$bytes" ]; then arrived[$p]=all; else arrived[$p]="**$((bytes - got)) bytes lost**"; fi
done
declare -A rate sender_ms receiver_ms
for run in $(seq "$RUNS"); do
  for i in "${!pairs[@]}"; do
    p=${pairs[(i + run - 1) % ${#pairs[@]}]}
    # shellcheck disable=SC2086
    read -r gbps sms rms < <(run $p /dev/null)
    rate[$p]+="$gbps "
    sender_ms[$p]+="$sms "
    receiver_ms[$p]+="$rms "
  done
done
# spread VALUES...: "min / median / max"
spread() { echo "$(printf '%s\n' "$@" | sort -g | head -1) / $(median "$@") / $(printf '%s\n' "$@" | sort -g | tail -1)"; }
echo "### TLS bulk, $BULK_MIB MiB, $RUNS runs each, in turns (receiver to /dev/null; min / median / max)"
echo
echo "| sender -> receiver | GB/s | sender CPU ms | receiver CPU ms | bytes (one checked run) |"
echo "|---|---:|---:|---:|---|"
for p in "${pairs[@]}"; do
  # shellcheck disable=SC2086
  printf '| %s -> %s | %s | %s | %s | %s |\n' ${p% *} ${p#* } "$(spread ${rate[$p]})" \
    "$(spread ${sender_ms[$p]})" "$(spread ${receiver_ms[$p]})" "${arrived[$p]}"
done
# shellcheck disable=SC2086
med() { local -n of=$1; median ${of[$2]}; }
echo
awk -v pp="$(med rate "portier portier")" -v ss="$(med rate "socat socat")" \
  -v ps="$(med rate "portier socat")" -v sp="$(med rate "socat portier")" \
  -v s_p="$(med sender_ms "portier socat")" -v s_s="$(med sender_ms "socat socat")" \
  -v r_p="$(med receiver_ms "socat portier")" -v r_s="$(med receiver_ms "socat socat")" 'BEGIN {
  printf "Throughput (medians): portier pair / socat pair **%.2fx**; portier sending to socat / socat pair **%.2fx**; ", pp / ss, ps / ss
  printf "socat sending to portier / socat pair **%.2fx**.\n", sp / ss
  printf "CPU, socat / portier (medians, the other end socat; above 1: portier spends less): "
  printf "as sender **%.2fx**, as receiver **%.2fx**.\n", s_s / s_p, r_s / r_p }'
