#!/usr/bin/env bash
# Gatehouse gateway throughput, per core: 1 KiB GETs with a valid RS256 token, through the
# gateway (JWT, subscription and throttling on), through its peers — nginx as a plain
# reverse proxy, HAProxy plain, HAProxy verifying the same token (`jwt_verify`, `alg`, `exp`
# and `iss` checks, a stick-table rate limit) — and directly to the backend, in one run;
# then HTTPS and HTTP/2 rows, and the latency each proxy adds at a fixed rate.
#
#   bench/run.sh                      # 3 interleaved rounds of 8 s per target, 64 connections
#   ROUNDS=5 DURATION=10s CONNECTIONS=128 bench/run.sh
#   GATEWAY_ARGS="--worker-threads 1" bench/run.sh   # extra gateway flags
#   GATEWAY_BIN=/tmp/gateway-a bench/run.sh   # another gateway build (A/B against the tree's)
#   PROFILE=1 bench/run.sh            # also perf-profiles the gateway (bench/profile.txt)
#   LATENCY=0 bench/run.sh            # skip the fixed-rate latency section (needs oha)
#
# The proxy under test is pinned to one core (PROXY_CPU, default 0); the load generator
# (wrk, h2load, oha) and the backend (nginx serving a static 1 KiB file) share the other
# (LOAD_CPU, default 1), so the figures are per proxy core. NATS (the gateway's event log)
# also sits on LOAD_CPU and is idle during the measurement. Each HTTP/1 target runs once
# per round, rounds interleaved so that a noisy minute hits every target alike; a
# target's figure is its median over the rounds.
#
# Needs wrk, nginx, haproxy, h2load, nats-server, openssl and taskset (Debian packages;
# installed when missing), oha (crates.io; installed with cargo when missing and LATENCY
# is on), and cargo (it builds the gateway and the seeding example in release mode).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}
H2_CONNECTIONS=${H2_CONNECTIONS:-16}
H2_STREAMS=${H2_STREAMS:-4}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
LATENCY=${LATENCY:-1}
BACKEND_PORT=${BACKEND_PORT:-18000}
NGINX_PORT=${NGINX_PORT:-18080}
NGINX_HTTPS_PORT=${NGINX_HTTPS_PORT:-18443}
HAPROXY_PORT=${HAPROXY_PORT:-18180}
HAPROXY_JWT_PORT=${HAPROXY_JWT_PORT:-18181}
GW_HTTP_PORT=${GW_HTTP_PORT:-18280}
GW_HTTPS_PORT=${GW_HTTPS_PORT:-18243}
NATS_PORT=${NATS_PORT:-18422}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for tool in wrk nginx haproxy h2load nats-server openssl taskset; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=("${missing[@]/taskset/util-linux}")
  pkgs=("${pkgs[@]/h2load/nghttp2-client}")
  echo "bench: installing ${pkgs[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
if [ "$LATENCY" = 1 ] && ! command -v oha >/dev/null; then
  echo "bench: installing oha (cargo install)"
  cargo install -q --locked oha
fi

echo "bench: building the gateway (release)"
cargo build --release -q -p gatehouse-gateway --bin gateway --example bench_seed
cargo build --release -q -p gatehouse --bin gatehouse
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
gateway_bin="${GATEWAY_BIN:-$target_dir/release/gateway}"
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
  echo "bench: nothing listens on port $1" >&2; tail -n 20 "$work"/*.log >&2 || true
  exit 1
}

# One server certificate (ECDSA P-256; TLS 1.3 everywhere) for every HTTPS listener.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null

# The backend: nginx serving a static 1 KiB body.
mkdir -p "$work/www" "$work/nginx"
python3 -c 'import sys; sys.stdout.write("{\"data\":\"" + "x" * 1013 + "\"}")' > "$work/www/data"
[ "$(wc -c < "$work/www/data")" -eq 1024 ]
chmod 755 "$work" "$work/www" && chmod 644 "$work/www/data" "$work/tls.key"  # nginx workers run as www-data
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

# nginx as a plain reverse proxy, one worker on the proxy core, pooled upstream; HTTP, and
# HTTPS offering HTTP/2 by ALPN.
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
    listen 127.0.0.1:$NGINX_HTTPS_PORT ssl http2;
    ssl_certificate $work/tls.crt;
    ssl_certificate_key $work/tls.key;
    ssl_protocols TLSv1.3;
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

# NATS, seeded as control and token-service would; the signing key's public half goes to
# HAProxy, so that it verifies the very token the gateway verifies.
mkdir -p "$work/nats"
taskset -c "$LOAD_CPU" nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$work/nats" > "$work/nats.log" 2>&1 &
pids+=($!)
wait_port "$NATS_PORT"
token=$(taskset -c "$LOAD_CPU" "$seed_bin" "nats://127.0.0.1:$NATS_PORT" "http://127.0.0.1:$BACKEND_PORT" "$work/jwt.key")
openssl pkey -in "$work/jwt.key" -pubout -out "$work/jwt.pub"
issuer=$(python3 -c 'import base64,json,sys; p=sys.argv[1].split(".")[1]; print(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["iss"])' "$token")

# HAProxy, one thread on the proxy core: plain, and verifying the token on every request
# (signature, alg, exp, iss) with a per-client stick-table rate limit set high enough
# never to refuse: it counts every call, as the gateway's throttling does.
cat > "$work/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 300s
  option http-keep-alive
  http-reuse always
frontend plain
  bind 127.0.0.1:$HAPROXY_PORT
  http-request replace-path /bench/1\.0\.0(/.*) \1
  default_backend backend
frontend jwt
  bind 127.0.0.1:$HAPROXY_JWT_PORT
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request deny deny_status 401 unless { var(txn.alg) -m str RS256 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$work/jwt.pub") -m int 1 }
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.iss') -m str "$issuer" }
  http-request set-var(txn.client) var(txn.bearer),jwt_payload_query('\$.client_id')
  http-request track-sc0 var(txn.client) table ratelimit
  http-request deny deny_status 429 if { sc_http_req_rate(0,ratelimit) gt 1000000000 }
  http-request replace-path /bench/1\.0\.0(/.*) \1
  default_backend backend
backend ratelimit
  stick-table type string len 64 size 100k expire 60s store http_req_rate(60s)
backend backend
  server b1 127.0.0.1:$BACKEND_PORT
EOF
haproxy -c -q -f "$work/haproxy.cfg"
taskset -c "$PROXY_CPU" haproxy -db -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 &
haproxy_pid=$!
pids+=($!)
wait_port "$HAPROXY_JWT_PORT"

# The gateway on the proxy core, with its node identity (control is absent: it follows
# NATS, reports nowhere).
"$gatehouse_bin" ca ensure --dir "$work/pki" --node gateway/bench > /dev/null
RUST_LOG=warn taskset -c "$PROXY_CPU" "$gateway_bin" \
  --cluster-ca "$work/pki/ca.crt" --node-cert "$work/pki/gateway-bench.crt" --node-key "$work/pki/gateway-bench.key" \
  --listen-http "127.0.0.1:$GW_HTTP_PORT" --listen-https "127.0.0.1:$GW_HTTPS_PORT" \
  --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" \
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

# Every target answers the same 1 KiB to the token; both verifying targets refuse it once
# its signature is broken.
for url in "http://127.0.0.1:$NGINX_PORT" "https://127.0.0.1:$NGINX_HTTPS_PORT" "http://127.0.0.1:$HAPROXY_PORT" \
  "http://127.0.0.1:$HAPROXY_JWT_PORT" "http://127.0.0.1:$GW_HTTP_PORT" "https://127.0.0.1:$GW_HTTPS_PORT"; do
  size=$(curl -sk -H "Authorization: Bearer $token" "$url/bench/1.0.0/data" | wc -c)
  [ "$size" -eq 1024 ] || { echo "bench: expected 1024 bytes from $url, got $size"; exit 1; }
done
broken="${token%??????}AAAAAA"
for url in "http://127.0.0.1:$HAPROXY_JWT_PORT" "http://127.0.0.1:$GW_HTTP_PORT"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $broken" "$url/bench/1.0.0/data")
  [ "$code" = 401 ] || { echo "bench: $url accepted a token with a broken signature ($code)"; exit 1; }
done

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

# The median of the numbers given as arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Each measurement appends to its target's lists (one value per round).
declare -A rps_of core_of busy_of p50_of p99_of
record() {  # name rps busy% p50 p99
  rps_of[$1]+="$2 "
  busy_of[$1]+="$3 "
  core_of[$1]+="$(awk -v r="$2" -v b="$3" 'BEGIN { printf "%.0f", (b > 0 ? r * 100 / b : 0) }') "
  p50_of[$1]+="$4 "
  p99_of[$1]+="$5 "
}

# A load generator's command, timed, with the CPU the measured process used meanwhile.
timed() {  # proxy_pid out command...
  local proxy_pid=$1 out=$2 before start end
  shift 2
  before=$(cpu_ticks "$proxy_pid")
  start=$(date +%s.%N)
  taskset -c "$LOAD_CPU" "$@" > "$out"
  end=$(date +%s.%N)
  awk -v t="$(( $(cpu_ticks "$proxy_pid") - before ))" -v hz="$hz" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f", 100 * t / hz / (e - s) }'
}

auth=(-H "Authorization: Bearer $token")
wrk_row() {  # name url proxy_pid
  local name=$1 url=$2 proxy_pid=$3 out="$work/$1.txt" busy
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "${auth[@]}" "$url" > /dev/null
  busy=$(timed "$proxy_pid" "$out" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${auth[@]}" "$url")
  if grep -q "Non-2xx" "$out"; then echo "bench: $name had non-2xx answers:"; cat "$out"; exit 1; fi
  record "$name" "$(awk '/^Requests\/sec/ {print $2}' "$out")" "$busy" \
    "$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")" "$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")"
}
h2_row() {  # name url proxy_pid — h2load over TLS (ALPN h2); it prints no percentiles
  local name=$1 url=$2 proxy_pid=$3 out="$work/$1.txt" busy
  busy=$(timed "$proxy_pid" "$out" h2load -t1 -c"$H2_CONNECTIONS" -m"$H2_STREAMS" --warm-up-time="$WARMUP" -D"$DURATION" "${auth[@]}" "$url")
  grep -q ' 0 failed, 0 errored, 0 timeout' "$out" && grep -q ' 0 3xx, 0 4xx, 0 5xx' "$out" \
    || { echo "bench: $name had failures:"; cat "$out"; exit 1; }
  grep -q 'Application protocol: h2' "$out" || { echo "bench: $name did not negotiate HTTP/2:"; cat "$out"; exit 1; }
  record "$name" "$(awk '/^finished in/ {print $4}' "$out")" "$busy" - -
}

row() {  # name [note]
  local name=$1
  # shellcheck disable=SC2086
  printf '  %-14s %10s req/s   p50 %7s ms   p99 %7s ms   CPU %3s%%   per busy core %7s req/s\n' "$name" \
    "$(median ${rps_of[$name]})" "$(median ${p50_of[$name]})" "$(median ${p99_of[$name]})" \
    "$(median ${busy_of[$name]})" "$(median ${core_of[$name]})"
}
core() { median ${core_of[$1]}; }  # shellcheck disable=SC2086
rps() { median ${rps_of[$1]}; }    # shellcheck disable=SC2086

gw="127.0.0.1:$GW_HTTP_PORT"
echo "bench: $CONNECTIONS connections, $ROUNDS rounds of $DURATION per target (each after $WARMUP warm-up); proxy on CPU $PROXY_CPU, load + backend on CPU $LOAD_CPU"
for round in $(seq 1 "$ROUNDS"); do
  echo "  round $round/$ROUNDS"
  wrk_row direct "http://127.0.0.1:$BACKEND_PORT/data" "$backend_pid"
  wrk_row nginx "http://127.0.0.1:$NGINX_PORT/bench/1.0.0/data" "$nginx_pid"
  wrk_row haproxy "http://127.0.0.1:$HAPROXY_PORT/bench/1.0.0/data" "$haproxy_pid"
  wrk_row haproxy-jwt "http://127.0.0.1:$HAPROXY_JWT_PORT/bench/1.0.0/data" "$haproxy_pid"
  wrk_row gateway "http://$gw/bench/1.0.0/data" "$gateway_pid"
done
echo "  HTTPS (wrk, HTTP/1.1 over TLS 1.3) and HTTP/2 over TLS (h2load, $H2_CONNECTIONS connections x $H2_STREAMS streams), one round"
wrk_row nginx-https "https://127.0.0.1:$NGINX_HTTPS_PORT/bench/1.0.0/data" "$nginx_pid"
wrk_row gateway-https "https://127.0.0.1:$GW_HTTPS_PORT/bench/1.0.0/data" "$gateway_pid"
h2_row nginx-h2 "https://127.0.0.1:$NGINX_HTTPS_PORT/bench/1.0.0/data" "$nginx_pid"
h2_row gateway-h2 "https://127.0.0.1:$GW_HTTPS_PORT/bench/1.0.0/data" "$gateway_pid"

echo
echo "median of $ROUNDS rounds (HTTPS and HTTP/2: one round):"
for name in direct nginx haproxy haproxy-jwt gateway nginx-https gateway-https nginx-h2 gateway-h2; do row "$name"; done
echo "(CPU: share of one core used by the proxy under test — by the backend for 'direct' — during the run;"
echo " per busy core = req/s divided by that share; below 100% the proxy was not the bottleneck)"
awk -v g="$(core gateway)" -v n="$(core nginx)" -v h="$(core haproxy)" -v j="$(core haproxy-jwt)" \
  -v gs="$(core gateway-https)" -v ns="$(core nginx-https)" -v g2="$(core gateway-h2)" -v n2="$(core nginx-h2)" \
  -v gr="$(rps gateway)" -v nr="$(rps nginx)" -v dr="$(rps direct)" 'BEGIN {
  printf "ratios per busy core: gateway/nginx %.2f   gateway/haproxy %.2f   gateway/haproxy-jwt %.2f\n", g / n, g / h, g / j
  printf "                      gateway-https/nginx-https %.2f   gateway-h2/nginx-h2 %.2f\n", gs / ns, g2 / n2
  printf "ratios of req/s:      gateway/nginx %.2f   gateway/direct %.2f\n", gr / nr, gr / dr
  printf "target: gateway >= 0.90 x nginx per busy core: %s\n", (g / n >= 0.9 ? "met" : "NOT met")
}'

if [ "$LATENCY" = 1 ]; then
  # Added latency at a fixed rate, half of the gateway's peak (oha paces the requests and
  # corrects for coordinated omission: a late answer delays no later request's clock).
  rate=$(awk -v r="$(rps gateway)" 'BEGIN { printf "%d", r / 2 }')
  echo
  echo "latency at a fixed $rate req/s (half the gateway's peak), oha, $CONNECTIONS connections, $DURATION:"
  declare -A lat50 lat99
  for target in "direct http://127.0.0.1:$BACKEND_PORT/data" "nginx http://127.0.0.1:$NGINX_PORT/bench/1.0.0/data" \
    "haproxy-jwt http://127.0.0.1:$HAPROXY_JWT_PORT/bench/1.0.0/data" "gateway http://$gw/bench/1.0.0/data"; do
    name=${target%% *}
    url=${target#* }
    taskset -c "$LOAD_CPU" oha --no-tui --output-format json --latency-correction -q "$rate" -c "$CONNECTIONS" \
      -z "$DURATION" "${auth[@]}" "$url" > "$work/oha-$name.json"
    read -r lat50[$name] lat99[$name] ok < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
codes = r.get("statusCodeDistribution", {})
errors = {e: n for e, n in r.get("errorDistribution", {}).items() if e != "aborted due to deadline"}
bad = sum(n for c, n in codes.items() if c != "200") + sum(errors.values())
p = r["latencyPercentiles"]
print("%.3f %.3f %d" % (p["p50"] * 1000, p["p99"] * 1000, bad == 0))' "$work/oha-$name.json")
    [ "$ok" = 1 ] || { echo "bench: $name had errors at a fixed rate"; cat "$work/oha-$name.json"; exit 1; }
    printf '  %-14s p50 %7s ms   p99 %7s ms\n' "$name" "${lat50[$name]}" "${lat99[$name]}"
  done
  awk -v g="${lat99[gateway]}" -v d="${lat99[direct]}" -v n="${lat99[nginx]}" 'BEGIN {
    printf "added p99: gateway %+.3f ms, nginx %+.3f ms over the direct path; target gateway <= 1 ms: %s\n", g - d, n - d, (g - d <= 1 ? "met" : "NOT met")
  }'
fi

if [ "${PROFILE:-0}" = 1 ]; then
  # perf profile of the gateway under the same load (PROFILE=1).
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d12s "${auth[@]}" "http://$gw/bench/1.0.0/data" > /dev/null &
  wrk_pid=$!
  sleep 1
  perf record -F 2000 -g -p "$gateway_pid" -o "$work/perf.data" -- sleep 10 2> /dev/null
  wait "$wrk_pid"
  profile_out=${PROFILE_OUT:-bench/profile.txt}
  {
    echo "# self time by where the code comes from (kernel, libc, or the crate of a Rust symbol)"
    perf report -i "$work/perf.data" --stdio --no-children --sort dso,sym 2>/dev/null | python3 -c '
import re, sys
share = {}
for line in sys.stdin:
    m = re.match(r"\s+([0-9.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
    if not m:
        continue
    pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()
    if kind == "k":
        group = "kernel"
    elif not dso.startswith("gateway"):
        group = dso
    else:
        sym = re.sub(r"^<", "", sym)
        group = re.split(r"::|<| ", sym)[0] or sym
    share[group] = share.get(group, 0) + pct
for group, pct in sorted(share.items(), key=lambda kv: -kv[1])[:20]:
    print("%6.2f%%  %s" % (pct, group))'
    echo
    echo "# self time, top symbols"
    perf report -i "$work/perf.data" --stdio --no-children --percent-limit 0.7 2>/dev/null | grep -E '^ +[0-9]'
  } > "$profile_out" || true
  echo "bench: profile of the gateway (self time by origin, then top symbols) in $profile_out"
fi
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
