# Shared settings for the test control plane scripts. Sourced, not executed.
# shellcheck shell=bash

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.22.0

TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tools" && pwd)"
CACHE_ROOT="${MODELGATE_CACHE:-$HOME/.cache/modelgate}"
# Binaries are keyed by the pinned versions and the Go toolchain, so a version bump
# rebuilds and an unchanged pin reuses the cache.
GO_VERSION="$(go env GOVERSION)"
BIN_DIR="$CACHE_ROOT/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-$GO_VERSION"
STATE_DIR="${MODELGATE_CLUSTER_DIR:-$CACHE_ROOT/cluster}"
KUBECONFIG_PATH="$STATE_DIR/admin.kubeconfig"

# Ports on 127.0.0.1 only.
ETCD_CLIENT_PORT="${MODELGATE_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${MODELGATE_ETCD_PEER_PORT:-23800}"
APISERVER_PORT="${MODELGATE_APISERVER_PORT:-16443}"
KCM_PORT="${MODELGATE_KCM_PORT:-10257}"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }
