#!/usr/bin/env bash
# Gatehouse at scale: what a large configuration costs, each figure printed beside its
# target (issue 12). Runs the measurement examples in release mode, one after the other:
#
#   1. seeding through the public admin API (control's real gRPC server over mutual TLS,
#      admin tokens; calls in flight), on the embedded file log and on NATS — events/s;
#   2. the gateway's memory for the configuration (heap bytes per entity, RSS) and the
#      time to bring its table up to date after one change — examples/scale.rs;
#   3. route lookup on the request path at 10 APIs and at N — examples/lookups.rs;
#   4. a change's propagation to 3 gateway replicas on NATS beside the configuration
#      (p50/p99), and each fresh replica's time to ready — examples/propagation.rs;
#   5. replay of a 1M-event log, and control's and token-service's restart with and
#      without a snapshot, and a fresh gateway beside control — examples/restart.rs.
#
#   bench/scale.sh                         # 10k APIs, 10k applications, 100k subscriptions
#   APIS=10000 APPS=100000 SUBS=1000000 bench/scale.sh   # the 1M-subscription target
#   SEED_APIS=2000 SEED_APPS=2000 SEED_SUBS=20000 bench/scale.sh   # what is seeded via gRPC
#   REPLAY_EVENTS=1000000 bench/scale.sh
#
# Needs nats-server (Debian package; installed when missing) and cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"

APIS=${APIS:-10000}
APPS=${APPS:-10000}
SUBS=${SUBS:-100000}
SEED_APIS=${SEED_APIS:-2000}
SEED_APPS=${SEED_APPS:-2000}
SEED_SUBS=${SEED_SUBS:-20000}
IN_FLIGHT=${IN_FLIGHT:-64}
CHANGES=${CHANGES:-200}
REPLAY_EVENTS=${REPLAY_EVENTS:-1000000}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v nats-server > /dev/null; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nats-server > /dev/null
fi

echo "== building (release)"
cargo build --release -q -p gatehouse-control --example seed_rate
cargo build --release -q -p gatehouse-gateway --example scale --example lookups --example propagation
cargo build --release -q -p gatehouse --example restart
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
examples="$target_dir/release/examples"

work=$(mktemp -d)
nats_pid=""
cleanup() {
  [ -n "$nats_pid" ] && kill "$nats_pid" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r)"
echo "== load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

section() { printf '\n== %s\n   target: %s\n' "$1" "$2"; }

section "1. seeding through the admin API, file log ($SEED_APIS APIs, $SEED_APPS applications, $SEED_SUBS subscriptions, $IN_FLIGHT calls in flight)" ">= 5,000 events/s"
"$examples/seed_rate" --apis "$SEED_APIS" --applications "$SEED_APPS" \
  --subscriptions "$SEED_SUBS" --in-flight "$IN_FLIGHT" | sed 's/^/   /'

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nats-server -a 127.0.0.1 -p "$port" -js -sd "$work/nats" > "$work/nats.log" 2>&1 &
nats_pid=$!
for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2> /dev/null && break; sleep 0.1; done

section "1b. seeding through the admin API, NATS (same sizes)" ">= 5,000 events/s"
"$examples/seed_rate" --nats "nats://127.0.0.1:$port" --apis "$SEED_APIS" \
  --applications "$SEED_APPS" --subscriptions "$SEED_SUBS" --in-flight "$IN_FLIGHT" | sed 's/^/   /'

section "2. the gateway's memory for $APIS APIs, $APPS applications, $SUBS subscriptions" \
  "RSS <= 150 MiB at 10k/10k/100k, <= 1 GiB at 10k/100k/1M; one change applied in far less than 10 ms"
"$examples/scale" "$APIS" "$APPS" "$SUBS" | sed 's/^/   /'

section "3. route lookup on the request path, at 10 APIs and at $APIS" "the same at both sizes (a lookup does not grow with the configuration)"
"$examples/lookups" 10 10 100 | sed 's/^/   10 APIs: /'
"$examples/lookups" "$APIS" "$APPS" "$SUBS" | sed "s/^/   $APIS APIs: /"

section "4. a change's propagation to 3 replicas on NATS, beside $APIS APIs / $APPS applications / $SUBS subscriptions ($CHANGES changes)" \
  "p99 <= 10 ms; a fresh replica ready <= 1 s"
"$examples/propagation" "$CHANGES" "$APIS" "$APPS" "$SUBS" 3 | sed 's/^/   /'

section "5. replay of $REPLAY_EVENTS events; control and token-service restarting on them" \
  "replay <= 10 s; back in service <= 2 s after a restart (with a snapshot)"
"$examples/restart" --events "$REPLAY_EVENTS" --apis "$APIS" --applications "$APPS" \
  --subscriptions "$SUBS" | sed 's/^/   /'

echo
echo "== load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
