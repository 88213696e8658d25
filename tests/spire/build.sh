#!/usr/bin/env bash
# Builds the real spire-server and spire-agent that the SPIFFE tests run against, from SPIRE's
# own release as pinned in go.mod/go.sum (added with `go get -tool`), into a cache outside the
# clone keyed by version ($HOME/.cache/mesh/spire-<version>, or $MESH_SPIRE_BIN). Does nothing
# when both are there. Keep the version in step with mesh_tls::test_util::SPIRE_VERSION.
set -euo pipefail
cd "$(dirname "$0")"

version=1.13.3
# The server's sqlite datastore is mattn/go-sqlite3, which needs cgo (and a C compiler); no
# debug info: smaller and quicker to link.
CGO_ENABLED=1 exec ../cached-go-build.sh spire "$version" \
    "${MESH_SPIRE_BIN:-$HOME/.cache/mesh/spire-$version}" "spire-server spire-agent" \
    -ldflags="-s -w" github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent
