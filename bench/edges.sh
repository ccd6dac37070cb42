#!/usr/bin/env bash
# The token endpoint under abuse (issue 11), in figures, against the all-in-one
# (`gatehouse up`, release build) — figures only, nothing asserted:
#
#  (a) a valid client's token latency (p50/p99; MyPythonApp by HTTP Basic, one client
#      sending a request every PROBE_INTERVAL_MS on one connection) alone, then during a flood of wrong secrets for its client id (FLOOD_CONNECTIONS
#      connections), at the default limits and again with the failure budgets out of
#      reach (every attempt asks for argon2: the bounded pool alone holds), with the
#      process's peak RSS and what the flood was answered;
#  (b) the gateway's p99 for GET /client/1.0.0/users (same process, the same paced
#      probe: below the demo subscription's Gold limit of 5000 a minute) alone, then during
#      a barrage of oversized forms to /oauth2/token (the measured 150,000-parameter,
#      1.2 MB form, BARRAGE_CONNECTIONS connections), at the default limits (413 on the
#      Content-Length) and with --max-body-bytes raised to 4 MiB (read, then refused at
#      the parameter cap: the linear parse).
#
#   bench/edges.sh                         # 10 s per measurement
#   DURATION=20s FLOOD_CONNECTIONS=400 BARRAGE_CONNECTIONS=16 PROBE_INTERVAL_MS=10 bench/edges.sh
#
# Everything shares the machine's cores (the all-in-one, the flood and the measuring
# wrk): the figures compare the same measurement with and without the attack.
# Needs wrk and curl (Debian packages; installed when missing) and cargo (it builds
# gatehouse in release mode).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-400}
BARRAGE_CONNECTIONS=${BARRAGE_CONNECTIONS:-16}
PROBE_INTERVAL_MS=${PROBE_INTERVAL_MS:-20}
BASE_PORT=${BASE_PORT:-19400}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for tool in wrk curl; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "edges: installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "edges: building gatehouse (release)"
cargo build --release -q -p gatehouse --bin gatehouse
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
gatehouse_bin="$target_dir/release/gatehouse"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

seconds() { local d=$1; d=${d%s}; echo "$d"; }
secs=$(seconds "$DURATION")

control_port=$BASE_PORT
token_port=$((BASE_PORT + 1))
keys_port=$((BASE_PORT + 2))
gw_https_port=$((BASE_PORT + 3))
gw_http_port=$((BASE_PORT + 4))
token_url="https://127.0.0.1:$token_port/oauth2/token"
users_url="https://127.0.0.1:$gw_https_port/client/1.0.0/users"

# The all-in-one with extra environment ($@: NAME=value ...), on a fresh data
# directory; sets up_pid, basic (MyPythonApp's Basic credentials) and token.
up_pid=""
start_up() {
  local name=$1
  shift
  rm -rf "$work/data"
  env "$@" RUST_LOG=warn "$gatehouse_bin" up --data-dir "$work/data" \
    --control-listen "127.0.0.1:$control_port" --token-https-listen "127.0.0.1:$token_port" \
    --token-grpc-listen "127.0.0.1:$keys_port" --gateway-https-listen "127.0.0.1:$gw_https_port" \
    --gateway-http-listen "127.0.0.1:$gw_http_port" > "$work/$name.log" 2>&1 &
  up_pid=$!
  pids+=("$up_pid")
  for _ in $(seq 1 600); do
    grep -q "Gatehouse is up." "$work/$name.log" && break
    kill -0 "$up_pid" 2>/dev/null || { echo "edges: gatehouse up exited"; cat "$work/$name.log"; exit 1; }
    sleep 0.1
  done
  grep -q "Gatehouse is up." "$work/$name.log" || { echo "edges: gatehouse up is not up"; cat "$work/$name.log"; exit 1; }
  local key secret
  key=$(sed -n 's/^ *consumer key: *//p' "$work/$name.log" | head -1)
  secret=$(sed -n 's/^ *consumer secret: *//p' "$work/$name.log" | head -1)
  basic=$(printf '%s:%s' "$key" "$secret" | base64 -w0)
  wrong=$(printf '%s:%s' "$key" "not-the-secret" | base64 -w0)
  token=$(curl -sk -d grant_type=client_credentials -u "$key:$secret" "$token_url" | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  local code
  code=$(curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$users_url")
  [ "$code" = 200 ] || { echo "edges: the gateway does not serve the demo ($code)"; cat "$work/$name.log"; exit 1; }
}

stop_up() {
  kill -INT "$up_pid" 2>/dev/null || true
  wait "$up_pid" 2>/dev/null || true
}

# wrk scripts: the paced probes (a valid token request; a gateway call), the flood's
# form POST with a wrong secret (counting the answers' statuses), and the
# 150,000-parameter form.
write_scripts() {
  cat > "$work/token.lua" <<EOF
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $basic"
function delay() return $PROBE_INTERVAL_MS end
EOF
  cat > "$work/gateway.lua" <<EOF
wrk.headers["Authorization"] = "Bearer $token"
function delay() return $PROBE_INTERVAL_MS end
EOF
  cat > "$work/wrong.lua" <<EOF
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $wrong"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("counts")) do total[s] = (total[s] or 0) + n end
  end
  local line = {}
  for s, n in pairs(total) do table.insert(line, s .. ": " .. n) end
  table.sort(line)
  io.write("answers " .. table.concat(line, ", ") .. "\n")
end
EOF
  cat > "$work/huge.lua" <<EOF
wrk.method = "POST"
local t = {}
for i = 0, 149999 do t[#t + 1] = "p" .. i .. "=v" end
wrk.body = table.concat(t, "&")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $basic"
EOF
}

# wrk's latency lines ("50%  1.23ms") in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v; sub(/[a-z]+$/, "", n); u = v; sub(/^[0-9.]+/, "", u);
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
    printf "%.2f", n }'
}

# A paced probe with wrk, one connection ($1: name, $2: script, $3: URL); prints p50,
# p99, the requests made and the non-2xx answers.
measure() {
  local name=$1 script=$2 url=$3
  wrk -t1 -c1 -d"$DURATION" --latency -s "$script" "$url" > "$work/$name.txt" 2>&1 || true
  local p50 p99 requests bad
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$work/$name.txt")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$work/$name.txt")")
  requests=$(awk '/requests in/ {print $1}' "$work/$name.txt")
  bad=$(awk '/Non-2xx/ {print $NF}' "$work/$name.txt")
  printf 'p50 %8s ms   p99 %8s ms   (%s requests, non-2xx %s)' "$p50" "$p99" "$requests" "${bad:-0}"
}

# The resident set of up_pid, in MiB, sampled every 100 ms into $work/rss until killed.
sample_rss() {
  while kill -0 "$up_pid" 2>/dev/null; do
    awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$up_pid/status" >> "$work/rss" 2>/dev/null || true
    sleep 0.1
  done
}
rss_now() { awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$up_pid/status"; }

# Runs an attack ($1: name, then wrk's arguments) in the background for the measurement
# and a 2 s lead; sets attack_pid.
attack() {
  local name=$1
  shift
  wrk -t1 -d"$((secs + 3))s" "$@" > "$work/$name.txt" 2>&1 &
  attack_pid=$!
  pids+=("$attack_pid")
  sleep 2
}
end_attack() { wait "$attack_pid" 2>/dev/null || true; }

flood_row() {
  local name=$1 label=$2
  : > "$work/rss"
  local before
  before=$(rss_now)
  sample_rss &
  local sampler=$!
  attack "$name-flood" -c"$FLOOD_CONNECTIONS" -s "$work/wrong.lua" "$token_url"
  printf '  %-34s %s\n' "$label" "$(measure "$name-token" "$work/token.lua" "$token_url")"
  end_attack
  kill "$sampler" 2>/dev/null || true
  local peak
  peak=$(sort -n "$work/rss" | tail -1)
  printf '  %-34s RSS %s MiB before, peak %s MiB; flood %s (%s req/s)\n' "" "$before" "${peak:-?}" \
    "$(grep '^answers' "$work/$name-flood.txt" | sed 's/^answers //')" \
    "$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$work/$name-flood.txt")"
}

echo "edges: $DURATION per measurement, probes paced at one request per $PROBE_INTERVAL_MS ms; flood $FLOOD_CONNECTIONS connections, barrage $BARRAGE_CONNECTIONS"
echo
echo "(a) a valid client's token latency (MyPythonApp by HTTP Basic)"
start_up defaults
write_scripts
printf '  %-34s %s\n' "alone" "$(measure alone-token "$work/token.lua" "$token_url")"
flood_row defaults "during a wrong-secret flood"
# (b) on the same process.
echo
echo "(b) the gateway's GET /client/1.0.0/users (MyPythonApp's token, same process)"
printf '  %-34s %s\n' "alone" "$(measure alone-gw "$work/gateway.lua" "$users_url")"
attack barrage -c"$BARRAGE_CONNECTIONS" -s "$work/huge.lua" "$token_url"
printf '  %-34s %s\n' "during 1.2 MB forms (413)" "$(measure barrage-gw "$work/gateway.lua" "$users_url")"
end_attack
printf '  %-34s %s\n' "" "barrage: $(awk '/^Requests\/sec/ {printf "%.0f forms/s refused", $2}' "$work/barrage.txt")"
stop_up

start_up large GATEHOUSE_TOKEN_MAX_BODY_BYTES=4194304
write_scripts
attack barrage-large -c"$BARRAGE_CONNECTIONS" -s "$work/huge.lua" "$token_url"
printf '  %-34s %s\n' "during 1.2 MB forms (400, parsed)" "$(measure barrage-large-gw "$work/gateway.lua" "$users_url")"
end_attack
printf '  %-34s %s\n' "" "barrage: $(awk '/^Requests\/sec/ {printf "%.0f forms/s read and refused at the parameter cap", $2}' "$work/barrage-large.txt")"
stop_up

echo
echo "(a') the same flood with the failure budgets out of reach (every attempt asks argon2)"
start_up unbudgeted GATEHOUSE_TOKEN_FAILURE_BUDGET_PER_CLIENT=1000000000 GATEHOUSE_TOKEN_FAILURE_BUDGET_PER_ADDRESS=1000000000
write_scripts
printf '  %-34s %s\n' "alone" "$(measure unbudgeted-alone "$work/token.lua" "$token_url")"
flood_row unbudgeted "during a wrong-secret flood"
stop_up

echo
echo "(the valid client's secret is remembered after its first token, so during a flood it"
echo " needs no argon2; the flood's answers: 401 invalid_client, checked; 429 slow_down,"
echo " refused by a failure budget; 503 temporarily_unavailable, refused by the full argon2 pool)"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
