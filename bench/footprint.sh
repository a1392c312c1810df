#!/usr/bin/env bash
# Footprint, side by side: binary size, idle RSS of a listener (each tool in
# turn, RUNS rounds), and the time `send` takes from start to exit for one
# message (hyperfine, 10 x RUNS runs a tool). Loopback only; bounded.
# Usage: bench/footprint.sh [RUNS]   (needs a release build: PORTIER_STARTUP_LAYOUT=1 cargo build --release, as packaged)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh # free_port, median
runs=${1:-5}
portier=target/release/portier
[ -x "$portier" ] || { echo "build first: PORTIER_STARTUP_LAYOUT=1 cargo build --release" >&2; exit 1; }
for tool in nc ncat socat hyperfine python3; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install netcat-openbsd ncat socat hyperfine python3)" >&2; exit 1; }
done

# Idle RSS (KiB) of one listener, read from /proc once it has settled.
idle_rss() {
  "$@" >/dev/null 2>&1 &
  local pid=$!
  sleep 0.5
  awk '/^VmRSS/ {print $2}' "/proc/$pid/status"
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
}


sink_port=$(free_port) timings=$(mktemp)
socat -u "TCP-LISTEN:$sink_port,bind=127.0.0.1,reuseaddr,fork" /dev/null & sink=$!
trap 'kill $sink 2>/dev/null || true; rm -f "$timings"' EXIT
sleep 0.3

tools=(portier nc ncat socat)
declare -A binary listen send rss ms
binary[portier]=$portier
listen[portier]="$portier listen $(free_port)"
send[portier]="echo hello | $portier send 127.0.0.1 $sink_port"
binary[nc]=nc
listen[nc]="nc -l 127.0.0.1 $(free_port)"
send[nc]="echo hello | nc -N 127.0.0.1 $sink_port"
binary[ncat]=ncat
listen[ncat]="ncat -l 127.0.0.1 $(free_port)"
send[ncat]="echo hello | ncat --send-only 127.0.0.1 $sink_port"
binary[socat]=socat
listen[socat]="socat TCP-LISTEN:$(free_port),bind=127.0.0.1 -"
send[socat]="echo hello | socat -u - TCP:127.0.0.1:$sink_port"

# In turns, one reading of each tool a round: drift on a shared machine (shared code
# pages, other tenants) then touches every tool alike. Medians of RUNS rounds.
for _ in $(seq "$runs"); do
  for tool in "${tools[@]}"; do
    # shellcheck disable=SC2086 # the listen commands are words without spaces
    rss[$tool]+="$(idle_rss ${listen[$tool]}) "
  done
done

# Send: hyperfine times each pipeline (the shell's own start-up subtracted), in ms.
hyperfine_args=()
for tool in "${tools[@]}"; do hyperfine_args+=(-n "$tool" "${send[$tool]}"); done
timeout "$LIMIT" hyperfine --style none --warmup 3 --runs $((runs * 10)) --export-json "$timings" "${hyperfine_args[@]}" >/dev/null
while read -r tool median; do ms[$tool]=$median; done < <(python3 -c '
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(r["command"], "%.2f" % (r["median"] * 1000))' "$timings")

echo "| tool | binary (bytes) | idle RSS (KiB, median of $runs) | send one message, start to exit (ms, hyperfine median of $((runs * 10))) |"
echo "|---|---:|---:|---:|"
for tool in "${tools[@]}"; do
  # shellcheck disable=SC2086
  printf '| %s | %s | %s | %s |\n' "$tool" "$(stat -L -c %s "$(command -v "${binary[$tool]}")")" \
    "$(median ${rss[$tool]})" "${ms[$tool]}"
done
echo
# shellcheck disable=SC2086
echo "portier / nc: idle RSS $(echo "$(median ${rss[portier]}) $(median ${rss[nc]})" | awk '{printf "%.2f", $1 / $2}')x, send $(echo "${ms[portier]} ${ms[nc]}" | awk '{printf "%.2f", $1 / $2}')x"
