#!/usr/bin/env bash
# Load harness for the reference proxy: one proxy hop and the whole meshed path, side by side in
# one run with nginx and haproxy doing the same hop, under wrk (HTTP/1.1, keep-alive).
#
#   bash benches/load/proxy.sh            # 10 s per target, 32 connections
#   DURATION=30s CONNS=64 bash benches/load/proxy.sh
#
# Targets (all on 127.0.0.1; the app is nginx answering 200 "ok" itself):
#   direct       wrk -> app
#   nginx hop    wrk -> nginx proxy_pass (keep-alive upstream) -> app
#   haproxy hop  wrk -> haproxy (http mode) -> app
#   hyper hop    wrk -> a bare hyper proxy (benches/src/bin/bare_hop.rs, no mesh layer) -> app
#   mesh hop     wrk -> mesh-proxy inbound (permissive, plaintext) -> app
#   mesh path    wrk -> mesh-proxy outbound -> mTLS, HTTP/2 -> mesh-proxy inbound -> app
#
# Everything shares this machine's cores with wrk, so read the figures as ratios within one run.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
if [ "${#need[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

cargo build --release -q -p examples --example mesh-proxy --example mesh-ca
cargo build --release -q -p benches --bin bare_hop
bin=target/release/examples
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

APP=127.0.0.1:18080 NGINX=127.0.0.1:18081 HAPROXY=127.0.0.1:18082
MESH_HOP=127.0.0.1:18083 MESH_OUT=127.0.0.1:18084 MESH_IN=127.0.0.1:18085
HYPER=127.0.0.1:18086

# The app and the nginx hop: one nginx, one worker each way round.
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    upstream app { server $APP; keepalive 64; }
    server { listen $APP; location / { return 200 "ok\n"; } }
    server {
        listen $NGINX;
        location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CONF
nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)

cat > "$work/haproxy.cfg" <<CONF
global
    nbthread 2
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend hop
    bind $HAPROXY
    default_backend app
backend app
    http-reuse always
    server app $APP
CONF
haproxy -f "$work/haproxy.cfg" & pids+=($!)
target/release/bare_hop "$HYPER" "$APP" & pids+=($!)

# Certificates from the development CA, then three proxies.
"$bin/mesh-ca" init --dir "$work/ca" >/dev/null
"$bin/mesh-ca" issue spiffe://mesh.local/ns/load/sa/app --dir "$work/ca" --out "$work/app" >/dev/null
"$bin/mesh-ca" issue spiffe://mesh.local/ns/load/sa/client --dir "$work/ca" --out "$work/client" >/dev/null
cat > "$work/hop.toml" <<CONF
[identity]
dir = "$work/app"
[admin]
listen = "127.0.0.1:0"
[inbound]
listen = "$MESH_HOP"
app = "$APP"
mode = "permissive"
allow_unauthenticated = true
CONF
cat > "$work/server.toml" <<CONF
[identity]
dir = "$work/app"
[admin]
listen = "127.0.0.1:0"
[inbound]
listen = "$MESH_IN"
app = "$APP"
authorize = ["spiffe://mesh.local/ns/load/sa/client"]
CONF
cat > "$work/client.toml" <<CONF
[identity]
dir = "$work/client"
[admin]
listen = "127.0.0.1:0"
[outbound]
listen = "$MESH_OUT"
[[service]]
name = "app"
authorities = ["app"]
identity = "spiffe://mesh.local/ns/load/sa/app"
endpoints = ["$MESH_IN"]
CONF
for config in hop server client; do
    MESH_LOG=warn TOKIO_WORKER_THREADS=${MESH_THREADS:-2} "$bin/mesh-proxy" --config "$work/$config.toml" >/dev/null & pids+=($!)
done
sleep 1

run() {
    local name=$1 addr=$2
    # Warm up (connection pools, TLS sessions), then measure.
    wrk -t "$THREADS" -c "$CONNS" -d 2s -H "Host: app" "http://$addr/" >/dev/null
    local out
    out=$(wrk -t "$THREADS" -c "$CONNS" -d "$DURATION" --latency -H "Host: app" "http://$addr/")
    local rps p50 p99 errors
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    printf '| %-12s | %10s | %8s | %8s | %s\n' "$name" "$rps" "$p50" "$p99" "${errors:-}"
}

echo "wrk: $THREADS thread(s), $CONNS connections, $DURATION per target, $(nproc) cores shared by all"
echo "| target       |      req/s |      p50 |      p99 | errors"
echo "|---|---|---|---|---|"
run direct "$APP"
run "nginx hop" "$NGINX"
run "haproxy hop" "$HAPROXY"
run "hyper hop" "$HYPER"
run "mesh hop" "$MESH_HOP"
run "mesh path" "$MESH_OUT"
