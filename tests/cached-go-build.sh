#!/usr/bin/env bash
# Builds Go programs the test fixtures run into a cache outside the clone, keyed by name and
# version, and does nothing when every one of them is already there. Shared by k8s/build.sh and
# spire/build.sh.
#
# usage: cached-go-build.sh NAME VERSION OUT "BINARY..." GO-BUILD-ARGUMENT...
# Runs `go build -mod=readonly -trimpath -o OUT/ GO-BUILD-ARGUMENT...` in the caller's
# directory (the Go module pinning the programs' versions in go.mod and go.sum).
set -euo pipefail

name=$1 version=$2 out=$3 binaries=$4
shift 4
# VCS stamping needs nothing from these modules and fails in some checkouts.
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
missing=0
for binary in $binaries; do
    [ -x "$out/$binary" ] || missing=1
done
if [ "$missing" -eq 0 ]; then
    echo "$name $version: cached in $out"
    exit 0
fi
mkdir -p "$out"
echo "$name $version: building $binaries into $out (first time on this machine)"
go build -mod=readonly -trimpath -o "$out/" "$@"
# sed, not head: head exits after one line and a binary printing more dies of SIGPIPE, which
# pipefail turns into a failed build.
for binary in $binaries; do
    "$out/$binary" --version 2>&1 | sed -n 1p
done
