#!/usr/bin/env bash
# Builds the real etcd and kube-apiserver that mesh-control's tests run against, from the Go
# modules pinned in go.mod/go.sum, into a cache outside the clone keyed by version
# ($HOME/.cache/mesh/k8s-<version>, or $MESH_K8S_BIN). Does nothing when both are there.
set -euo pipefail
cd "$(dirname "$0")"

version=1.37.2
minor=$(echo "$version" | cut -d. -f2)
# Static binaries, no debug info (smaller and quicker to link), stamped with the version.
CGO_ENABLED=0 exec ../cached-go-build.sh k8s "$version" \
    "${MESH_K8S_BIN:-$HOME/.cache/mesh/k8s-$version}" "etcd kube-apiserver" \
    -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$version -X k8s.io/component-base/version.gitMajor=${version%%.*} -X k8s.io/component-base/version.gitMinor=$minor" \
    ./etcd ./kube-apiserver
