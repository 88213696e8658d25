#!/usr/bin/env bash
# The load harness: mesh-proxy beside nginx and HAProxy, one hop and the meshed pair (mTLS
# between the two proxies of each pair), at full load and at fixed rates, with each proxy's CPU
# time per request and RSS read from /proc, a full mTLS handshake's server CPU, and the RSS with
# idle client connections. Everything runs on this machine: the app (nginx answering 200 itself)
# and the proxies on CPU 0, one worker each; the load generators (wrk, h2load) on CPU 1.
#
#   bash benches/load/proxy.sh                        # 10 s per run, medians of 3
#   DURATION=5 REPS=5 bash benches/load/proxy.sh
#   ROWS=hop,memory bash benches/load/proxy.sh        # some rows only (hop,pair,rate,scale,memory,handshake)
#
# The configurations of every target are in benches/load/conf/; benches/load/harness.py says
# how runs are measured, interleaved and dropped when the machine was disturbed.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v taskset >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
if [ "${#need[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ "$(nproc)" -lt 2 ]; then
    echo "the harness needs 2 cores: one for the servers, one for the load generator" >&2
    exit 1
fi

cargo build --release -q -p examples --example mesh-proxy --example mesh-ca
cargo build --release -q -p benches --bin bare_hop
exec python3 benches/load/harness.py
