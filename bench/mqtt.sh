#!/usr/bin/env bash
# 100,000 messages of 64 bytes into a local mosquitto (QoS 0), read back by one
# mosquitto_sub, three ways side by side, each round in turn:
#   mosquitto_pub -l      the lines from a file, one process publishing (no UDP at all)
#   portier --to          UDP datagrams -> portier listen -u --to mqtt://...
#   socat | mosquitto_pub UDP datagrams -> socat -> pipe -> mosquitto_pub -l (a pipeline of
#                         distribution parts; Telegraf and fluent-bit are not in Debian)
# The UDP sender (bench/udp_blast.py) sends as fast as it can. Every message is accounted
# for: received by the subscriber, or dropped (portier counts kernel and queue drops; for
# socat the kernel's UDP receive-buffer errors are read from /proc/net/snmp).
# Rate: messages received / (last received - first sent). Usage: bench/mqtt.sh [BINARY] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bin=${1:-target/release/portier}
rounds=${2:-5}
count=100000
dir=$(mktemp -d)
chmod 777 "$dir"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT
broker=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$broker" > "$dir/mosquitto.conf"
mosquitto -c "$dir/mosquitto.conf" 2> "$dir/mosquitto.log" &
wait_port "$broker"
python3 -c "import sys; sys.stdout.write(('x' * 63 + '\n') * $count)" > "$dir/lines"
rcvbuf_errors() { awk '/^Udp:/ { if (++n == 2) print $6 }' /proc/net/snmp; }

# Subscribes to TOPIC, runs the rest of the arguments, waits until the count stops growing;
# prints: received start_ns end_ns.
measure() {
  local topic=$1; shift
  : > "$dir/got"
  # One byte per message received, whatever its payload.
  mosquitto_sub -p "$broker" -t "$topic" -F . -N > "$dir/got" &
  local sub=$!
  sleep 0.3
  local start last=0 seen=0 stable=0 n
  start=$(now)
  "$@"
  local end=$start
  while [ "$stable" -lt 100 ] && [ "$seen" -lt "$count" ]; do
    n=$(stat -c %s "$dir/got")
    if [ "$n" -gt "$seen" ]; then seen=$n; end=$(now); stable=0; else stable=$((stable + 1)); fi
    sleep 0.01
  done
  kill "$sub"; wait "$sub" 2>/dev/null || true
  echo "$seen $start $end"
}

rate() { echo "$1 $2 $3" | awk '{printf "%.0f", $1 / (($3 - $2) / 1e9)}'; }

declare -a pub_rates portier_rates socat_rates portier_vs_pub portier_vs_socat
for round in $(seq "$rounds"); do
  read -r got start end < <(measure bench/pub mosquitto_pub -p "$broker" -t bench/pub -l < "$dir/lines")
  pub=$(rate "$got" "$start" "$end"); pub_rates+=("$pub")
  echo "round $round: mosquitto_pub -l: $got of $count received, $pub msg/s"

  port=$(free_port)
  "$bin" listen -u -b 127.0.0.1 "$port" --to "mqtt://127.0.0.1:$broker/bench/portier" > /dev/null 2> "$dir/portier.err" &
  pid=$!
  sleep 0.3
  read -r got start end < <(measure bench/portier python3 bench/udp_blast.py 127.0.0.1 "$port" "$count" 64)
  kill -TERM "$pid"; wait "$pid" || true
  p=$(rate "$got" "$start" "$end"); portier_rates+=("$p")
  echo "round $round: portier --to:     $got of $count received, $p msg/s; portier says: $(grep -h 'to mqtt.*delivered\|summary' "$dir/portier.err" | sed 's/^portier: //' | tr '\n' ' ')"

  port=$(free_port)
  errors_before=$(rcvbuf_errors)
  socat -u "UDP-RECV:$port,bind=127.0.0.1" STDOUT | mosquitto_pub -p "$broker" -t bench/socat -l &
  pipeline=$!
  sleep 0.3
  read -r got start end < <(measure bench/socat python3 bench/udp_blast.py 127.0.0.1 "$port" "$count" 64)
  pkill -f "UDP-RECV:$port" || true; wait "$pipeline" 2>/dev/null || true
  s=$(rate "$got" "$start" "$end"); socat_rates+=("$s")
  echo "round $round: socat | mosquitto_pub: $got of $count received, $s msg/s; kernel drops $(( $(rcvbuf_errors) - errors_before ))"
  portier_vs_pub+=("$(echo "$p $pub" | awk '{printf "%.2f", $1 / $2}')")
  portier_vs_socat+=("$(echo "$p $s" | awk '{printf "%.2f", $1 / $2}')")
done
spread() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {printf "median %s (min %s, max %s)", v[int((NR + 1) / 2)], v[1], v[NR]}'; }
echo "mosquitto_pub -l msg/s:        $(spread "${pub_rates[@]}")"
echo "portier --to msg/s:            $(spread "${portier_rates[@]}")"
echo "socat | mosquitto_pub msg/s:   $(spread "${socat_rates[@]}")"
echo "portier / mosquitto_pub -l:    $(spread "${portier_vs_pub[@]}")"
echo "portier / socat|mosquitto_pub: $(spread "${portier_vs_socat[@]}")"
