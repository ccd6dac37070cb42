#!/usr/bin/env bash
# Tokens per second from token-service's /oauth2/token, beside the signing limit of the
# same core (`openssl speed`), for RS256 and ES256, in one run.
#
#   bench/tokens.sh                 # 10 s per algorithm, 16 keep-alive connections
#   DURATION=20s CONNECTIONS=32 bench/tokens.sh
#
# token-service (embedded log, its own node identity) is pinned to one core (SERVICE_CPU,
# default 0), wrk to the other (LOAD_CPU, default 1); openssl speed runs on SERVICE_CPU
# too. The client is the configured admin client: its secret is checked with argon2 once,
# then remembered, so what is measured is what every token costs: the claims, the JSON,
# the signature. Needs wrk, openssl and taskset (Debian; installed when missing) and
# cargo (release build).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
SERVICE_CPU=${SERVICE_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
HTTPS_PORT=${HTTPS_PORT:-19443}
GRPC_PORT=${GRPC_PORT:-19052}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for tool in wrk openssl taskset; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=("${missing[@]/taskset/util-linux}")
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

echo "bench: building gatehouse (release)"
cargo build --release -q -p gatehouse --bin gatehouse
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/gatehouse"

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin" ca ensure --dir "$work/pki" --node token-service/token-service > /dev/null
secret=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
cat > "$work/token.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $(printf 'bench:%s' "$secret" | base64 -w0)"
LUA

declare -A rate
for alg in RS256 ES256; do
  rm -rf "$work/data"
  RUST_LOG=warn taskset -c "$SERVICE_CPU" "$bin" token-service \
    --data-dir "$work/data" --signing-alg "$alg" \
    --listen-https "127.0.0.1:$HTTPS_PORT" --listen-grpc "127.0.0.1:$GRPC_PORT" \
    --admin-client-id bench --admin-client-secret "$secret" \
    --cluster-ca "$work/pki/ca.crt" --node-cert "$work/pki/token-service-token-service.crt" \
    --node-key "$work/pki/token-service-token-service.key" > "$work/ts-$alg.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 200); do
    curl -sk -o /dev/null -u "bench:$secret" -d grant_type=client_credentials "https://127.0.0.1:$HTTPS_PORT/oauth2/token" && break
    sleep 0.1
  done
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d3s -s "$work/token.lua" "https://127.0.0.1:$HTTPS_PORT/oauth2/token" > /dev/null
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s "$work/token.lua" "https://127.0.0.1:$HTTPS_PORT/oauth2/token" > "$work/wrk-$alg.txt"
  if grep -q "Non-2xx" "$work/wrk-$alg.txt"; then echo "bench: non-2xx answers"; cat "$work/wrk-$alg.txt"; exit 1; fi
  rate[$alg]=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk-$alg.txt")
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
done

speed=$(taskset -c "$SERVICE_CPU" openssl speed -seconds 5 rsa2048 ecdsap256 2>/dev/null)
rsa_sign=$(echo "$speed" | awk '/^rsa 2048 bits/ {print $(NF-1)}')
ec_sign=$(echo "$speed" | awk '/nistp256/ {print $(NF-1)}')
printf 'token-service on one core, %s connections, %s:\n' "$CONNECTIONS" "$DURATION"
printf '  RS256 %10s tokens/s   openssl rsa2048 sign %8s/s   ratio %s   (target >= 0.70)\n' \
  "${rate[RS256]}" "$rsa_sign" "$(awk -v a="${rate[RS256]}" -v b="$rsa_sign" 'BEGIN {printf "%.2f", a / b}')"
printf '  ES256 %10s tokens/s   openssl p256 sign    %8s/s   (target >= 10000 tokens/s)\n' \
  "${rate[ES256]}" "$ec_sign"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
