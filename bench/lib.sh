# Helpers shared by the bench scripts (sourced, not run). Loopback only;
# every command bounded by LIMIT seconds.
LIMIT=${LIMIT:-120}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do ss -ltnu | grep -q ":$1 " && return; sleep 0.02; done; }
now() { date +%s%N; }

# udp_relay_blast PORTIER COUNT DIR: COUNT datagrams of 64 B through `PORTIER relay` to a
# `PORTIER listen -u`; leaves DIR/udp.out (what arrived) and DIR/relay.err, and sets
# relay_cpu_ticks (the relay's user+system time, in clock ticks).
udp_relay_blast() {
  local portier=$1 count=$2 dir=$3 up_port relay_port up_pid relay_pid
  up_port=$(free_port); relay_port=$(free_port)
  "$portier" listen -u -q -b 127.0.0.1 "$up_port" > "$dir/udp.out" 2>/dev/null &
  up_pid=$!
  "$portier" relay "udp://127.0.0.1:$relay_port" "udp://127.0.0.1:$up_port" 2> "$dir/relay.err" &
  relay_pid=$!
  wait_port "$up_port"; wait_port "$relay_port"
  timeout "$LIMIT" python3 bench/udp_blast.py 127.0.0.1 "$relay_port" "$count" 64 > /dev/null
  sleep 1
  relay_cpu_ticks=$(awk '{print $14 + $15}' "/proc/$relay_pid/stat")
  kill -TERM "$relay_pid"; wait "$relay_pid" 2>/dev/null || true
  kill -TERM "$up_pid"; wait "$up_pid" 2>/dev/null || true
}
# median VALUES...: the middle one, or the mean of the two middle ones.
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
gb_per_s() { echo "$1 $2 $3" | awk '{printf "%.3f", $1 / (($3 - $2) / 1e9) / 1e9}'; } # bytes start end (ns)

# A file sink starts alike each time: the last file gone, nothing left to write back.
fresh() { [ "$1" = /dev/null ] || { rm -f "$1"; sync; }; }

# timed_write SINK CMD...: GB/s of CMD writing its stdout into a fresh SINK.
timed_write() {
  local sink=$1; shift
  fresh "$sink"
  local start; start=$(now)
  timeout "$LIMIT" "$@" > "$sink"
  local end; end=$(now)
  gb_per_s "$(stat -c %s "$sink")" "$start" "$end"
}

# timed_dd SINK ARGS...: timed_write of one dd (bs=128K, ARGS give the input).
timed_dd() { local sink=$1; shift; timed_write "$sink" dd bs=128K status=none "$@"; }

# transfer SOURCE SINK SERVER... -- CLIENT...: SOURCE through the client to the
# server, whose stdout is SINK (PORT is substituted in both commands); prints
# GB/s from the client's start to the server's exit.
transfer() {
  local source=$1 sink=$2; shift 2
  local server=() client=()
  while [ "$1" != "--" ]; do server+=("$1"); shift; done; shift
  client=("$@")
  local port; port=$(free_port)
  fresh "$sink"
  timeout "$LIMIT" "${server[@]//PORT/$port}" > "$sink" 2>/dev/null &
  local pid=$!
  wait_port "$port"
  local start; start=$(now)
  timeout "$LIMIT" "${client[@]//PORT/$port}" < "$source" > /dev/null 2>&1 || true
  wait "$pid" || true
  gb_per_s "$(stat -c %s "$source")" "$start" "$(now)"
}

# CPU nanoseconds of a process, all its threads (from the scheduler's statistics).
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {print s}'; }

# CPU nanoseconds a UDP listener (PID, on 127.0.0.1:PORT) spends draining BURSTS bursts of
# 4,000 datagrams of 64 bytes, each queued in its socket while it is frozen (SIGSTOP), then let go.
burst_cpu_ns() {
  local pid=$1 port=$2 bursts=$3 total=0 before
  for _ in $(seq "$bursts"); do
    kill -STOP "$pid"
    python3 bench/udp_blast.py 127.0.0.1 "$port" 4000 64
    before=$(cpu_ns "$pid")
    kill -CONT "$pid"
    sleep 0.15
    total=$(( total + $(cpu_ns "$pid") - before ))
  done
  echo "$total"
}
