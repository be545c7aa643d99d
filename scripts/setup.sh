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
  libyaml-dev libjansson-dev uthash-dev libcriterion-dev
  redis-server postgresql kafkacat
)
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

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs" >/dev/null
if [ "${1:-}" = "asan" ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTS_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs" >/dev/null
fi
echo "setup: built build/tastesync"
