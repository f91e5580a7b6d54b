#!/usr/bin/env bash
# Compare moat's proxy with direct HTTPS, Squid (ssl-bump +
# request_header_add) and mitmproxy on the same machine, same upstream, same
# load generator (crates/moat-proxy/benches/throughput.rs). Each scenario's
# time is split into ROUNDS interleaved rounds (routes take turns); besides
# the totals, the bench prints each route's throughput ratio to direct as the
# median of the rounds with their min and max.
#
# Usage: scripts/bench-proxy.sh [SECONDS [BENCH ARGS...]]   (needs root for apt/pip on first run)
#   SECONDS per scenario and route (default 10); BENCH ARGS go to the bench,
#   e.g. `--scenario keep-alive-32` for the c=32 scenario alone.
# Env:   ROUNDS (default 5), MOAT_BENCH_DIR (default /tmp/moat-bench-peers),
#        SKIP_SQUID=1, SKIP_MITM=1
set -euo pipefail

SECONDS_PER_SCENARIO="${1:-10}"
shift || true
ROUNDS="${ROUNDS:-5}"
DIR="${MOAT_BENCH_DIR:-/tmp/moat-bench-peers}"
UPSTREAM_PORT=18443
SQUID_PORT=13128
MITM_PORT=18089
FRESH_HOSTS=20000
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_for_port() {
  local port=$1 name=$2
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "$name did not start listening on port $port" >&2
  return 1
}

mkdir -p "$DIR"
chmod 755 "$DIR"
cd "$ROOT"
cargo bench -p moat-proxy --bench throughput --no-run
BENCH=(cargo bench -q -p moat-proxy --bench throughput --)
UPSTREAM_CA="$("${BENCH[@]}" --prepare-upstream --upstream-dir "$DIR/upstream")"
chmod -R a+rX "$DIR/upstream"
EXTERNAL=()

start_squid() {
  command -v squid >/dev/null || { apt-get update -qq && apt-get install -y -qq squid-openssl >/dev/null; }
  local d="$DIR/squid"
  rm -rf "$d" && mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=squid bench CA" -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  {
    echo "127.0.0.1 bench.example.test"
    for n in $(seq 0 $((FRESH_HOSTS - 1))); do echo "127.0.0.1 h$n.bench.example.test"; done
  } >"$d/hosts"
  /usr/lib/squid/security_file_certgen -c -s "$d/ssl_db" -M 16MB >/dev/null
  cat >"$d/squid.conf" <<CONF
http_port 127.0.0.1:$SQUID_PORT ssl-bump cert=$d/ca.pem key=$d/ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=64MB
sslcrtd_program /usr/lib/squid/security_file_certgen -s $d/ssl_db -M 16MB
sslcrtd_children 8 startup=2 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile=$UPSTREAM_CA
request_header_add x-api-key "bench-value" all
acl bench_port port $UPSTREAM_PORT
acl CONNECT method CONNECT
http_access allow localhost
http_access deny all
cache deny all
hosts_file $d/hosts
access_log none
cache_log $d/cache.log
pid_filename $d/squid.pid
coredump_dir $d
shutdown_lifetime 1 seconds
CONF
  chown -R proxy:proxy "$d"
  squid -f "$d/squid.conf" -N &
  PIDS+=($!)
  wait_for_port "$SQUID_PORT" squid
  EXTERNAL+=(--external "squid=http://127.0.0.1:$SQUID_PORT,$d/ca.pem")
}

start_mitmproxy() {
  local venv="$DIR/venv" d="$DIR/mitm"
  [ -x "$venv/bin/mitmdump" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q mitmproxy; }
  rm -rf "$d" && mkdir -p "$d"
  cat >"$d/addon.py" <<'PY'
"""Point every bench host at loopback and inject the bench credential."""


def server_connect(data):
    data.server.address = ("127.0.0.1", data.server.address[1])


def request(flow):
    flow.request.headers["x-api-key"] = "bench-value"
PY
  "$venv/bin/mitmdump" -q --listen-host 127.0.0.1 --listen-port "$MITM_PORT" \
    --set confdir="$d" --set ssl_verify_upstream_trusted_ca="$UPSTREAM_CA" -s "$d/addon.py" &
  PIDS+=($!)
  wait_for_port "$MITM_PORT" mitmproxy
  EXTERNAL+=(--external "mitmproxy=http://127.0.0.1:$MITM_PORT,$d/mitmproxy-ca-cert.pem")
}

[ "${SKIP_SQUID:-0}" = 1 ] || start_squid
[ "${SKIP_MITM:-0}" = 1 ] || start_mitmproxy

"${BENCH[@]}" --seconds "$SECONDS_PER_SCENARIO" --rounds "$ROUNDS" --upstream-dir "$DIR/upstream" \
  --upstream-port "$UPSTREAM_PORT" "${EXTERNAL[@]}" "$@"
