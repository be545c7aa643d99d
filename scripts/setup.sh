#!/usr/bin/env bash
# Installs what TasteSync Streams needs from Debian's packages (only what is
# missing, so it is quick the second time) and builds it.
#
#   scripts/setup.sh          release build in build/
#   scripts/setup.sh asan     also the AddressSanitizer + UBSan build in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config
  librdkafka-dev libavro-dev libhiredis-dev libuv1-dev librocksdb-dev libpq-dev
  libyaml-dev libjansson-dev uthash-dev libcriterion-dev libmicrohttpd-dev libjemalloc-dev
  libxxhash-dev
  redis-server postgresql kafkacat
  gdb  # a stalled runtime's stacks in a failing test's output
)
# The interop test produces events with another Avro implementation (Node's
# avsc); any Node.js with npm will do, Debian's is installed when there is none.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # The postgresql package may try to start a system cluster; we never use it.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -d tests/interop/node_modules/avsc ]; then
  npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error >/dev/null
fi

jobs=$(nproc 2>/dev/null || echo 2)
# Quiet when it works, the whole compiler output when it does not.
build() {
  local dir=$1; shift
  mkdir -p "$dir"
  if ! { cmake -S . -B "$dir" "$@" && cmake --build "$dir" -j"$jobs"; } >"$dir/setup.log" 2>&1; then
    cat "$dir/setup.log"
    echo "setup: build in $dir failed" >&2
    exit 1
  fi
}
build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "${1:-}" = "asan" ]; then
  build build-asan -DCMAKE_BUILD_TYPE=Debug -DTS_SANITIZE=ON
fi
echo "setup: built build/tastesync"
