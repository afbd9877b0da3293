# Shared by the benchmark scripts. Sourced.
# shellcheck disable=SC2034  # sourced: the variables are for the scripts that source this
# shellcheck shell=bash
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/modelgate/target}"
PY="${MODELGATE_PYTHON:-$HOME/.cache/modelgate/venv/bin/python}"
RUNS="${RUNS:-5}"
work="$(mktemp -d -t modelgate-bench-XXXX)"
chmod 755 "$work" # nginx workers run unprivileged and must read the repository
cleanup() { [[ -n "${feeder:-}" ]] && kill "$feeder" 2>/dev/null; sleep 0.2; rm -rf "$work"; }
trap cleanup EXIT

prepare() {
  tests/setup >/dev/null
  cargo build -q --release -p modelgate
  MODELGATE="$CARGO_TARGET_DIR/release/modelgate"
}

# serve DIR: HTTPS on 127.0.0.1 with nginx (Debian's nginx-light, installed on first
# use) and a CA made here; sets PORT and CA. A fast server, so the clients are measured,
# not the server. It stops when the benchmark exits.
serve() {
  command -v nginx >/dev/null || { apt-get install -y -qq nginx-light >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }; }
  local pki="$work/pki"; mkdir -p "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=modelgate bench CA" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" -keyout "$pki/srv.key" -out "$pki/srv.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >"$pki/ext"
  openssl x509 -req -in "$pki/srv.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 1 \
    -out "$pki/srv.crt" -extfile "$pki/ext" 2>/dev/null
  PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  CA="$pki/ca.crt"
  cat >"$work/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events {}
http {
  log_format sent '\$status \$body_bytes_sent';
  access_log $work/access.log sent;
  sendfile on;
  client_body_temp_path $work/nginx-tmp;
  server {
    listen 127.0.0.1:$PORT ssl;
    ssl_certificate $pki/srv.crt;
    ssl_certificate_key $pki/srv.key;
    root $1;
  }
}
CONF
  nginx -c "$work/nginx.conf" -e "$work/nginx.err" &
  feeder=$!
  for _ in $(seq 50); do curl -s --cacert "$CA" "https://127.0.0.1:$PORT/" -o /dev/null && break; sleep 0.1; done
}

# timed CMD...: appends "seconds max_rss_kib cpu_seconds" of one run to $work/times
# (cpu = user + system)
timed() {
  /usr/bin/time -f "%e %M %U %S" -a -o "$work/times" "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; exit 1; }
  local last; last="$(tail -1 "$work/times")"
  sed -i '$d' "$work/times"
  awk '{printf "%s %s %.2f\n", $1, $2, $3 + $4}' <<<"$last" >>"$work/times"
}

# median COLUMN: median of a column of $work/times, then clears it
median() {
  sort -n -k"$1" "$work/times" | awk -v c="$1" '{v[NR]=$c} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}
maxcol() { sort -n -k"$1" "$work/times" | tail -1 | awk -v c="$1" '{print $c}'; }
reset_times() { : >"$work/times"; }
