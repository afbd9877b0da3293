# Shared settings for the test control plane scripts. Sourced, not executed.
# shellcheck disable=SC2034  # sourced: the variables are for the scripts that source this
# shellcheck shell=bash

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.22.0
CONTAINERD_VERSION=v2.4.2
# CNCF Distribution, the OCI registry the node pulls model images from.
REGISTRY_VERSION=v3.1.1

TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tools" && pwd)"
CACHE_ROOT="${MODELGATE_CACHE:-$HOME/.cache/modelgate}"
# One Rust build cache for the scripts, the tests and CI, outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE_ROOT/target}"
# One target directory serves every clone and run: incremental state there only grows
# (it reached 24 GiB and filled this machine's disk) and a fresh clone gains nothing.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Binaries are keyed by the pinned versions and the Go toolchain, so a version bump
# rebuilds and an unchanged pin reuses the cache.
GO_VERSION="$(go env GOVERSION)"
BIN_DIR="$CACHE_ROOT/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-$GO_VERSION"
# The real node: kubelet, kube-proxy, kube-scheduler (same Kubernetes module), containerd.
NODE_BIN_DIR="$CACHE_ROOT/bin/node-k8s-$K8S_VERSION-containerd-$CONTAINERD_VERSION-$GO_VERSION"
STATE_DIR="${MODELGATE_CLUSTER_DIR:-$CACHE_ROOT/cluster}"
KUBECONFIG_PATH="$STATE_DIR/admin.kubeconfig"
PKI="$STATE_DIR/pki"

# Ports on 127.0.0.1 only.
ETCD_CLIENT_PORT="${MODELGATE_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${MODELGATE_ETCD_PEER_PORT:-23800}"
APISERVER_PORT="${MODELGATE_APISERVER_PORT:-16443}"
KCM_PORT="${MODELGATE_KCM_PORT:-10257}"
SCHEDULER_PORT="${MODELGATE_SCHEDULER_PORT:-10259}"
KUBELET_PORT="${MODELGATE_KUBELET_PORT:-10250}"
KUBELET_HEALTHZ_PORT="${MODELGATE_KUBELET_HEALTHZ_PORT:-10248}"
PROXY_HEALTHZ_PORT="${MODELGATE_PROXY_HEALTHZ_PORT:-10256}"
PROXY_METRICS_PORT="${MODELGATE_PROXY_METRICS_PORT:-10249}"
REGISTRY_PORT="${MODELGATE_REGISTRY_PORT:-5443}"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

# --- helpers for up, node and down --------------------------------------------------
ca() { # name cn
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$2" \
    -keyout "$PKI/$1.key" -out "$PKI/$1.crt" 2>/dev/null
}
cert() { # name ca subject [san] [usage]
  openssl req -newkey rsa:2048 -nodes -subj "$3" -keyout "$PKI/$1.key" -out "$PKI/$1.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n%s\n' \
    "${5:-clientAuth}" "${4:+subjectAltName=$4}" >"$PKI/$1.ext"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$2.crt" -CAkey "$PKI/$2.key" -CAcreateserial \
    -days 30 -out "$PKI/$1.crt" -extfile "$PKI/$1.ext" 2>"$PKI/$1.err" || { cat "$PKI/$1.err" >&2; die "cannot sign $1"; }
  rm -f "$PKI/$1.csr" "$PKI/$1.ext" "$PKI/$1.err"
}
kubeconfig() { # file user
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: modelgate-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: modelgate-test
  context: {cluster: modelgate-test, user: $2, namespace: default}
current-context: modelgate-test
KC
}
launch() { # name cmd...
  local name=$1; shift
  setsid "$@" >"$STATE_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE_DIR/pids/$name.pid"
}
wait_for() { # what seconds cmd...
  local what=$1 limit=$2; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    local pidfile
    for pidfile in "$STATE_DIR"/pids/*.pid; do
      if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        log "$(basename "$pidfile" .pid) exited while waiting for $what; its last log lines:"
        tail -n 20 "$STATE_DIR/logs/$(basename "$pidfile" .pid).log" >&2 || true
        exit 1
      fi
    done
    if (( $(date +%s) > deadline )); then
      log "timed out waiting for $what; last log lines:"
      tail -n 30 "$STATE_DIR"/logs/*.log >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

stop() { # name
  local pidfile="$STATE_DIR/pids/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

