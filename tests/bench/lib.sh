# Shared by the benchmark scripts. Sourced.
# shellcheck shell=bash
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/modelgate/target}"
PY="${MODELGATE_PYTHON:-$HOME/.cache/modelgate/venv/bin/python}"
RUNS="${RUNS:-5}"
work="$(mktemp -d -t modelgate-bench-XXXX)"
cleanup() { [[ -n "${feeder:-}" ]] && kill "$feeder" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

prepare() {
  tests/setup >/dev/null
  cargo build -q --release -p modelgate
  MODELGATE="$CARGO_TARGET_DIR/release/modelgate"
}

# serve DIR: HTTPS on 127.0.0.1; sets PORT and CA. The server stops when we exit.
serve() {
  mkfifo "$work/feed"
  sleep 100000 >"$work/feed" &
  feeder=$!
  "$PY" tests/tuf/serve.py "$1" <"$work/feed" >"$work/server.json" &
  for _ in $(seq 100); do [[ -s "$work/server.json" ]] && break; sleep 0.1; done
  PORT="$(jq -r .port "$work/server.json")"
  CA="$(jq -r .ca "$work/server.json")"
}

# timed CMD...: appends "seconds max_rss_kib" of one run to $work/times
timed() { /usr/bin/time -f "%e %M" -a -o "$work/times" "$@" >/dev/null; }

# median COLUMN: median of a column of $work/times, then clears it
median() {
  sort -n -k"$1" "$work/times" | awk -v c="$1" '{v[NR]=$c} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}
maxcol() { sort -n -k"$1" "$work/times" | tail -1 | awk -v c="$1" '{print $c}'; }
reset_times() { : >"$work/times"; }
