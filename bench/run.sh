#!/usr/bin/env bash
# Gatehouse gateway throughput, per core: 1 KiB GETs with a valid token, through the
# gateway (JWT, subscription and throttling on), through nginx as a plain reverse proxy,
# and directly to the backend, in one run.
#
#   bench/run.sh                      # 15 s per target, 64 connections
#   DURATION=30s CONNECTIONS=128 bench/run.sh
#   GATEWAY_ARGS="--worker-threads 1" bench/run.sh   # extra gateway flags
#   PROFILE=1 bench/run.sh            # also perf-profiles the gateway (bench/profile.txt)
#
# The proxy under test (gateway or nginx) is pinned to one core (PROXY_CPU, default 0);
# the load generator (wrk) and the backend (nginx serving a static 1 KiB file) share the
# other (LOAD_CPU, default 1), so the figures are per proxy core. NATS (the gateway's
# event log) also sits on LOAD_CPU and is idle during the measurement.
#
# Needs wrk, nginx, nats-server and taskset (Debian packages; installed when missing),
# and cargo (it builds the gateway and the seeding example in release mode).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-64}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BACKEND_PORT=${BACKEND_PORT:-18000}
NGINX_PORT=${NGINX_PORT:-18080}
GW_HTTP_PORT=${GW_HTTP_PORT:-18280}
GW_HTTPS_PORT=${GW_HTTPS_PORT:-18243}
NATS_PORT=${NATS_PORT:-18422}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for tool in wrk nginx nats-server taskset; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=("${missing[@]/taskset/util-linux}")
  echo "bench: installing ${pkgs[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

echo "bench: building the gateway (release)"
cargo build --release -q -p gatehouse-gateway --bin gateway --example bench_seed
cargo build --release -q -p gatehouse --bin gatehouse
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
gateway_bin="$target_dir/release/gateway"
seed_bin="$target_dir/release/examples/bench_seed"
gatehouse_bin="$target_dir/release/gatehouse"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: nothing listens on port $1" >&2
  exit 1
}

# The backend: nginx serving a static 1 KiB body.
mkdir -p "$work/www" "$work/nginx"
python3 -c 'import sys; sys.stdout.write("{\"data\":\"" + "x" * 1013 + "\"}")' > "$work/www/data"
[ "$(wc -c < "$work/www/data")" -eq 1024 ]
chmod 755 "$work" "$work/www" && chmod 644 "$work/www/data"  # nginx workers run as www-data
cat > "$work/backend.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/backend.pid;
error_log $work/nginx/backend.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:$BACKEND_PORT;
    location = /data { alias $work/www/data; default_type application/json; }
  }
}
EOF
taskset -c "$LOAD_CPU" nginx -c "$work/backend.conf" -p "$work/nginx" &
backend_pid=$!
pids+=($!)
wait_port "$BACKEND_PORT"

# nginx as a plain reverse proxy, one worker on the proxy core, pooled upstream.
cat > "$work/proxy.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/proxy.pid;
error_log $work/nginx/proxy.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location /bench/1.0.0/ {
      proxy_pass http://backend/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }
  }
}
EOF
taskset -c "$PROXY_CPU" nginx -c "$work/proxy.conf" -p "$work/nginx" &
nginx_pid=$!
pids+=($!)
wait_port "$NGINX_PORT"

# NATS, seeded as control and token-service would, then the gateway on the proxy core.
mkdir -p "$work/nats"
taskset -c "$LOAD_CPU" nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$work/nats" > "$work/nats.log" 2>&1 &
pids+=($!)
wait_port "$NATS_PORT"
token=$(taskset -c "$LOAD_CPU" "$seed_bin" "nats://127.0.0.1:$NATS_PORT" "http://127.0.0.1:$BACKEND_PORT")
# The gateway's node identity (control is absent: it follows NATS, reports nowhere).
"$gatehouse_bin" ca ensure --dir "$work/pki" --node gateway/bench > /dev/null
RUST_LOG=warn taskset -c "$PROXY_CPU" "$gateway_bin" \
  --cluster-ca "$work/pki/ca.crt" --node-cert "$work/pki/gateway-bench.crt" --node-key "$work/pki/gateway-bench.key" \
  --listen-http "127.0.0.1:$GW_HTTP_PORT" --listen-https "127.0.0.1:$GW_HTTPS_PORT" \
  --nats-url "nats://127.0.0.1:$NATS_PORT" --control-url "https://127.0.0.1:1" \
  --data-dir "$work/gateway" --access-log false ${GATEWAY_ARGS:-} > "$work/gateway.log" 2>&1 &
gateway_pid=$!
pids+=($!)
wait_port "$GW_HTTP_PORT"
for _ in $(seq 1 200); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$GW_HTTP_PORT/bench/1.0.0/data" || true)
  [ "$code" = 200 ] && break
  sleep 0.05
done
[ "$code" = 200 ] || { echo "bench: the gateway does not serve the bench API ($code)"; cat "$work/gateway.log"; exit 1; }
size=$(curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$GW_HTTP_PORT/bench/1.0.0/data" | wc -c)
[ "$size" -eq 1024 ] || { echo "bench: expected 1024 bytes through the gateway, got $size"; exit 1; }

# wrk's latency lines ("50%  1.23ms") in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v; sub(/[a-z]+$/, "", n); u = v; sub(/^[0-9.]+/, "", u);
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
    printf "%.3f", n }'
}

# CPU time (clock ticks) used so far by a process and its children (nginx workers).
cpu_ticks() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    [ -r "/proc/$pid/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)

declare -A rps p50 p99 busy
run() {
  local name=$1 url=$2 proxy_pid=$3 role=$4
  shift 4
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "$@" "$url" > /dev/null
  local before start end
  before=$(cpu_ticks "$proxy_pid")
  start=$(date +%s.%N)
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" > "$work/$name.txt"
  end=$(date +%s.%N)
  busy[$name]=$(awk -v t="$(( $(cpu_ticks "$proxy_pid") - before ))" -v hz="$hz" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f", 100 * t / hz / (e - s) }')
  if grep -q "Non-2xx" "$work/$name.txt"; then
    echo "bench: $name had non-2xx answers:"; cat "$work/$name.txt"; exit 1
  fi
  rps[$name]=$(awk '/^Requests\/sec/ {print $2}' "$work/$name.txt")
  p50[$name]=$(to_ms "$(awk '$1 == "50%" {print $2}' "$work/$name.txt")")
  p99[$name]=$(to_ms "$(awk '$1 == "99%" {print $2}' "$work/$name.txt")")
  printf '  %-14s %10s req/s   p50 %7s ms   p99 %7s ms   %-8s CPU %3s%%\n' "$name" "${rps[$name]}" "${p50[$name]}" "${p99[$name]}" "$role" "${busy[$name]}"
}

auth=(-H "Authorization: Bearer $token")
echo "bench: $CONNECTIONS connections, $DURATION per target (after $WARMUP warm-up); proxy on CPU $PROXY_CPU, wrk + backend on CPU $LOAD_CPU"
run direct "http://127.0.0.1:$BACKEND_PORT/data" "$backend_pid" backend "${auth[@]}"
run nginx "http://127.0.0.1:$NGINX_PORT/bench/1.0.0/data" "$nginx_pid" proxy "${auth[@]}"
run gateway "http://127.0.0.1:$GW_HTTP_PORT/bench/1.0.0/data" "$gateway_pid" proxy "${auth[@]}"
run gateway-https "https://127.0.0.1:$GW_HTTPS_PORT/bench/1.0.0/data" "$gateway_pid" proxy "${auth[@]}"
if [ "${PROFILE:-0}" = 1 ]; then
  # perf profile of the gateway under the same load (PROFILE=1).
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d12s "${auth[@]}" "http://127.0.0.1:$GW_HTTP_PORT/bench/1.0.0/data" > /dev/null &
  wrk_pid=$!
  sleep 1
  perf record -F 2000 -g -p "$gateway_pid" -o "$work/perf.data" -- sleep 10 2> /dev/null
  wait "$wrk_pid"
  perf report -i "$work/perf.data" --stdio --no-children --percent-limit 0.7 2>/dev/null | grep -E '^ +[0-9]' > "${PROFILE_OUT:-bench/profile.txt}" || true
  echo "bench: profile of the gateway (self time, top symbols) in ${PROFILE_OUT:-bench/profile.txt}"
fi
echo "(CPU: share of one core used by the proxy under test — or by the backend for 'direct' — during the run;"
echo " below 100% the proxy was not the bottleneck: wrk and the backend share the other core)"

awk -v g="${rps[gateway]}" -v n="${rps[nginx]}" -v d="${rps[direct]}" -v gb="${busy[gateway]}" -v nb="${busy[nginx]}" 'BEGIN {
  printf "ratios: gateway/nginx %.2f   gateway/direct %.2f\n", g / n, g / d
  if (gb > 0 && nb > 0) printf "per busy proxy core: gateway %.0f req/s, nginx %.0f req/s (ratio %.2f)\n", g * 100 / gb, n * 100 / nb, (g / gb) / (n / nb)
  printf "targets: gateway/nginx >= 0.80: %s   gateway >= 25000 req/s on one core: %s\n", (g / n >= 0.8 ? "met" : "NOT met"), (g >= 25000 ? "met" : "NOT met")
}'
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
