#!/usr/bin/env bash
# Side-by-side benchmarks: portier against nc, ncat, socat and iperf3, in one
# run on this machine, loopback only. Installs nothing; says what is missing.
# Every loop is bounded in count and every command in time.
#
# Usage: bench/run.sh            (RUNS=3 BULK_MIB=2048 CLIENTS="100 1000 10000" by default;
#                                 WORKLOADS="bulk udp clients round-trip check" picks some)
# Writes bench/results/results.tsv, bench/results/RESULTS.md and bench/results/chart.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh # free_port, wait_port, now, gb_per_s, fresh, timed_write, timed_dd, transfer; LIMIT
RUNS=${RUNS:-3}
BULK_MIB=${BULK_MIB:-2048}
CLIENTS=${CLIENTS:-"100 1000 10000"}
UDP_COUNT=${UDP_COUNT:-200000}
ROUND_TRIPS=${ROUND_TRIPS:-10000}
WORKLOADS=${WORKLOADS:-"bulk udp clients round-trip check"}
wanted() { [[ " $WORKLOADS " == *" $1 "* ]]; }

missing=()
for tool in nc ncat socat iperf3 python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]} (Debian: apt-get install netcat-openbsd ncat socat iperf3 python3)" >&2
  exit 1
fi
PORTIER_STARTUP_LAYOUT=1 cargo build --release --quiet  # as packaged (build.rs)
portier=$PWD/target/release/portier
out=bench/results
mkdir -p "$out"
tsv=$out/results.tsv
echo -e "workload\ttool\tmetric\tvalue" > "$tsv"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "${file_sink:-}"; jobs -p | xargs -r kill 2>/dev/null || true' EXIT

record() { echo -e "$1\t$2\t$3\t$4" >> "$tsv"; }
peak_rss() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# 1. TCP bulk: BULK_MIB from a file through each tool into /dev/null and into a file.
if wanted bulk; then
bulk=$tmp/bulk.bin
head -c "${BULK_MIB}M" /dev/zero > "$bulk"
bytes=$(stat -c %s "$bulk")
# The file written is on tmpfs where there is one: on a disk, the kernel's
# writeback and discard of 2 GiB swing a run's rate 0.6-3 GB/s (dd alone, here).
file_sink=$tmp/out.bin file_where="to a file"
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  file_sink=$(mktemp /dev/shm/portier-bench.XXXXXX) file_where="to a file on tmpfs"
fi
floor=$tmp/receive_floor
rustc -O --edition 2021 bench/receive_floor.rs -o "$floor"
bulk_tools=(portier nc ncat socat "socat -b 131072")
bulk_run() { # tool sink: prints GB/s
  case $1 in
    portier) transfer "$bulk" "$2" "$portier" listen -t --once -q PORT -- "$portier" send 127.0.0.1 PORT ;;
    nc) transfer "$bulk" "$2" nc -l 127.0.0.1 PORT -- nc -N 127.0.0.1 PORT ;;
    ncat) transfer "$bulk" "$2" ncat -l 127.0.0.1 PORT --recv-only -- ncat --send-only 127.0.0.1 PORT ;;
    socat) transfer "$bulk" "$2" socat -u TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr - -- socat -u - TCP:127.0.0.1:PORT ;;
    "socat -b 131072") transfer "$bulk" "$2" socat -b 131072 -u TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr - -- socat -b 131072 -u - TCP:127.0.0.1:PORT ;;
  esac
}
for run in $(seq "$RUNS"); do
  for sink in /dev/null "$file_sink"; do
    where=$([ "$sink" = /dev/null ] && echo "to /dev/null" || echo "$file_where")
    # The first file written after a pause ran slower here, whichever tool wrote
    # it (nc 0.34 first, 0.55-0.65 later; portier 0.36 and 0.63-1.0): an untimed
    # write first, and each run starts with the next tool.
    [ "$sink" = /dev/null ] || timed_dd "$sink" if=/dev/zero count=$((BULK_MIB * 8)) >/dev/null
    for i in "${!bulk_tools[@]}"; do
      tool=${bulk_tools[(i + run - 1) % ${#bulk_tools[@]}]}
      record "TCP bulk $where (GB/s)" "$tool" GB/s "$(bulk_run "$tool" "$sink")"
    done
  done
  # The file's ceilings, no network at all: a copy of the same source file (read
  # it, fill new pages: what any transfer of it must do), and new pages alone.
  record "TCP bulk $file_where (GB/s)" "dd copying the source (no network)" GB/s "$(timed_dd "$file_sink" if="$bulk")"
  record "TCP bulk $file_where (GB/s)" "dd from /dev/zero (no network)" GB/s "$(timed_dd "$file_sink" if=/dev/zero count=$((BULK_MIB * 8)))"
  # With the network: the same stream taken off the socket without a copy while
  # new pages are filled from a cached buffer, less than any receiver must do.
  record "TCP bulk $file_where (GB/s)" "receive floor (writes none of what comes)" GB/s "$(transfer "$bulk" "$file_sink" "$floor" PORT "$bytes" -- "$portier" send 127.0.0.1 PORT)"
  rm -f "$file_sink"
  port=$(free_port)
  timeout "$LIMIT" iperf3 -s -1 -p "$port" >/dev/null 2>&1 &
  wait_port "$port"
  rate=$(timeout "$LIMIT" iperf3 -c 127.0.0.1 -p "$port" -n "${BULK_MIB}M" -J | python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8e9))')
  wait || true
  record "TCP bulk to /dev/null (GB/s)" "iperf3 (ceiling)" GB/s "$rate"
  start=$(now); cat "$bulk" | cat > /dev/null; end=$(now)
  record "TCP bulk to /dev/null (GB/s)" "cat, through a pipe" GB/s "$(gb_per_s "$bytes" "$start" "$end")"
done
rm -f "$bulk"
fi

# 2. UDP receive: UDP_COUNT datagrams of 64 bytes blasted at each receiver.
if wanted udp; then
udp_run() { # label receiver-cmd ; prints "received% cpu-ns-per-datagram"
  local port; port=$(free_port)
  local cmd=("${@//PORT/$port}")
  "${cmd[@]}" > "$tmp/udp.out" 2>"$tmp/udp.err" &
  local pid=$!
  wait_port "$port"
  local before; before=$(cpu_ticks "$pid")
  timeout "$LIMIT" python3 bench/udp_blast.py 127.0.0.1 "$port" "$UDP_COUNT" 64
  sleep 1
  local after; after=$(cpu_ticks "$pid")
  { kill -TERM "$pid" 2>/dev/null || true; }; wait "$pid" 2>/dev/null || true
  local got=$(( $(stat -c %s "$tmp/udp.out") / 64 ))
  local ticks; ticks=$(getconf CLK_TCK)
  echo "$got $UDP_COUNT $before $after $ticks" | awk '{printf "%.3f %.0f", 100 * $1 / $2, ($4 - $3) / $5 * 1e9 / $2}'
}
for run in $(seq "$RUNS"); do
  for tool in portier nc ncat socat; do
    case $tool in
      portier) result=$(udp_run "$portier" listen -u -q -b 127.0.0.1 PORT) ;;
      nc) result=$(udp_run nc -u -l 127.0.0.1 PORT) ;;
      ncat) result=$(udp_run ncat -u -l 127.0.0.1 PORT --recv-only) ;;
      socat) result=$(udp_run socat -u UDP-RECV:PORT,bind=127.0.0.1 -) ;;
    esac
    record "UDP receive, $UDP_COUNT x 64 B (% received)" "$tool" percent "${result% *}"
    record "UDP receive CPU (ns per datagram)" "$tool" ns "${result#* }"
  done
done
fi

# 3. Many clients, one line each: lines received exactly once, wall time, server peak RSS.
if wanted clients; then
clients_run() { # count server-cmd
  local count=$1; shift
  local port; port=$(free_port)
  local cmd=("${@//PORT/$port}")
  "${cmd[@]}" > "$tmp/lines.out" 2>/dev/null &
  local pid=$!
  wait_port "$port"
  local took; took=$(timeout "$LIMIT" python3 bench/many_clients.py 127.0.0.1 "$port" "$count" | cut -d' ' -f1)
  sleep 1
  local rss; rss=$(peak_rss "$pid")
  { kill -TERM "$pid" 2>/dev/null || true; }; wait "$pid" 2>/dev/null || true
  local once; once=$(grep -o 'client [0-9]*' "$tmp/lines.out" | sort | uniq -u | wc -l)
  echo "$once $took $rss"
}
for count in $CLIENTS; do
  for tool in portier ncat socat; do
    case $tool in
      portier) result=$(clients_run "$count" "$portier" listen -t -q -m 20000 -b 127.0.0.1 PORT) ;;
      ncat) result=$(clients_run "$count" ncat -l -k -m 20000 127.0.0.1 PORT --recv-only) ;;
      socat) result=$(clients_run "$count" socat -u "TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr,fork,backlog=4096" -) ;;
    esac
    read -r once took rss <<< "$result"
    record "$count clients: lines received exactly once" "$tool" lines "$once"
    record "$count clients: server peak RSS (KiB)" "$tool" KiB "$rss"
  done
done
fi

# 4. Round trip: ROUND_TRIPS sequential 32-byte requests on one connection to an echo server.
if wanted round-trip; then
for run in $(seq "$RUNS"); do
  for tool in portier ncat socat; do
    port=$(free_port)
    case $tool in
      portier) "$portier" listen -t -q --echo -b 127.0.0.1 "$port" > /dev/null & ;;
      ncat) ncat -l 127.0.0.1 "$port" --exec /bin/cat & ;;
      socat) socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" EXEC:cat & ;;
    esac
    pid=$!
    wait_port "$port"
    read -r p50 p99 <<< "$(timeout "$LIMIT" python3 bench/round_trip.py 127.0.0.1 "$port" "$ROUND_TRIPS")"
    { kill -TERM "$pid" 2>/dev/null || true; }; wait "$pid" 2>/dev/null || true
    record "Round trip p50 (µs)" "$tool" us "$p50"
    record "Round trip p99 (µs)" "$tool" us "$p99"
  done
done
fi

# 5. Port check: every TCP port of 127.0.0.1, portier check against nc -z. Each
# tool's open set is held against what listens (ss): a port reported open that
# nothing listens on is counted (nc -z reports a socket that connected to itself
# as open; portier does not).
if wanted check; then
listening() { ss -ltnH | awk '{n = split($4, a, ":"); print a[n]}' | sort -nu; }
wrong() { comm -23 "$1" "$2" | wc -l; } # reported open, not listening
for run in $(seq "$RUNS"); do
  for tool in nc portier; do
    start=$(now)
    case $tool in
      nc) { timeout "$LIMIT" nc -z -v 127.0.0.1 1-65535 2>&1 || true; } | awk '/succeeded/ {print $4}' | sort -nu > "$tmp/open" ;;
      portier) { timeout "$LIMIT" "$portier" check 127.0.0.1 1-65535 --open 2>/dev/null || true; } | awk '{split($2, p, "/"); print p[1]}' | sort -nu > "$tmp/open" ;;
    esac
    end=$(now)
    listening > "$tmp/listening"
    record "Check 65,535 TCP ports (s)" "$tool" s "$(echo "$start $end" | awk '{printf "%.3f", ($2 - $1) / 1e9}')"
    record "Check: ports reported open that nothing listens on" "$tool" ports "$(wrong "$tmp/open" "$tmp/listening")"
  done
done
fi

python3 bench/report.py "$tsv" "$out/RESULTS.md" "$out/chart.svg"
cat "$out/RESULTS.md"
