#!/usr/bin/env bash
# Fuzzes what the outside world feeds the runtime (message bytes -> Avro
# decoding -> processor) with libFuzzer under ASan + UBSan, for N seconds.
#
#   scripts/fuzz.sh [seconds]      default 60; the corpus grows in build-fuzz/corpus
#
# libFuzzer's per-input leak check is off: it reports the buffers a decoder
# keeps for the next message as leaks. LeakSanitizer's check at exit stays on
# (the target frees everything then), as in every test of the ASan suite.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
# clang with its sanitizer and libFuzzer runtimes (Debian 12: libclang-rt-14-dev).
need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q "install ok installed" ||
  need+=(libclang-rt-14-dev)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
scripts/setup.sh
mkdir -p build-fuzz
if ! { CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTS_FUZZ=ON &&
       cmake --build build-fuzz -j"$(nproc)" --target fuzz_events; } >build-fuzz/setup.log 2>&1; then
  cat build-fuzz/setup.log; exit 1
fi
mkdir -p build-fuzz/corpus
rm -rf build-fuzz/seeds
cd build-fuzz
TS_FUZZ_SEEDS=seeds ./fuzz_events -runs=0 >/dev/null 2>&1 || true
echo "fuzz: ${seconds} s over decode + process"
status=0
ASAN_OPTIONS=detect_leaks=1 ./fuzz_events -max_total_time="$seconds" -detect_leaks=0 \
  -rss_limit_mb=2048 -print_final_stats=1 corpus seeds >fuzz.log 2>&1 || status=$?
grep -E "^Done|stat::number_of_executed_units|stat::peak_rss" fuzz.log || true
if [ "$status" -ne 0 ] || grep -qE "ERROR: [A-Za-z]+Sanitizer|runtime error:" fuzz.log; then
  grep -E -A30 "ERROR: |runtime error:" fuzz.log | head -60
  ls crash-* leak-* oom-* timeout-* 2>/dev/null || true
  echo "fuzz: FAILED (build-fuzz/fuzz.log)"
  exit 1
fi
echo "fuzz: no crash, no leak"
