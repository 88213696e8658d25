#!/usr/bin/env bash
# Builds the real etcd and kube-apiserver that mesh-control's tests run against, from the Go
# modules pinned in go.mod/go.sum, into a cache outside the clone keyed by version. Does
# nothing when both binaries are already there.
set -euo pipefail
cd "$(dirname "$0")"

version=1.37.2
# VCS stamping needs nothing from this module and fails in some checkouts.
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
out="${MESH_K8S_BIN:-$HOME/.cache/mesh/k8s-$version}"
if [ -x "$out/etcd" ] && [ -x "$out/kube-apiserver" ]; then
    echo "k8s $version: cached in $out"
    exit 0
fi
mkdir -p "$out"
echo "k8s $version: building etcd and kube-apiserver into $out (first time on this machine)"
# Static binaries, no debug info: smaller and quicker to link.
CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$version -X k8s.io/component-base/version.gitMajor=${version%%.*} -X k8s.io/component-base/version.gitMinor=$(echo $version | cut -d. -f2)" -o "$out/" ./etcd ./kube-apiserver
"$out/etcd" --version | head -n 1
"$out/kube-apiserver" --version
