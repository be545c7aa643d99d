#!/usr/bin/env bash
# The whole test suite: unit and integration tests (real Redis and PostgreSQL,
# Kafka through librdkafka's mock cluster), once in the release build and once
# under AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   scripts/test.sh           everything
#   scripts/test.sh quick     unit tests only, release build
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-all}"
if [ "$mode" = quick ]; then scripts/setup.sh; else scripts/setup.sh asan; fi

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
status=0
dirs=(build)
[ "$mode" = quick ] || dirs+=(build-asan)
for dir in "${dirs[@]}"; do
  echo "== tests in $dir =="
  args=(--output-on-failure)
  [ "$mode" = quick ] && args+=(-L unit)
  (cd "$dir" && ctest "${args[@]}") || status=1
  log="$dir/Testing/Temporary/LastTest.log"
  # A sanitizer report inside a Criterion worker does not fail its test, so
  # read every test's output for one.
  if [ -f "$log" ] && grep -nE "ERROR: (Leak|Address)Sanitizer|runtime error:" "$log" >/dev/null; then
    echo "sanitizer reports in $dir:"
    grep -nE -A20 "ERROR: (Leak|Address)Sanitizer|runtime error:" "$log" | head -80
    status=1
  fi
  # Criterion's own summary, summed over every test executable of this build.
  if [ -f "$log" ]; then
    awk '/Synthesis: Tested:/ {
           for (i = 1; i <= NF; i++) {
             if ($i == "Tested:") t += $(i+1); if ($i == "Passing:") p += $(i+1);
             if ($i == "Failing:") f += $(i+1); if ($i == "Crashing:") c += $(i+1) }
         }
         END { printf "[====] Synthesis (%s): Tested: %d | Passing: %d | Failing: %d | Crashing: %d\n", dir, t, p, f, c }' \
      dir="$dir" "$log"
  fi
done
exit $status
