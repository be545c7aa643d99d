#!/usr/bin/env bash
# Runs the benchmarks (benchmarks/README.md): component ceilings, end-to-end
# throughput of the mixed stream, event->view latency at 1K/10K/50K events/s,
# view GET vs per-request SQL, RSS and state size. Prints a table and writes
# benchmarks/results/<date>.json.
#
#   benchmarks/run.sh            full run (1M events, < 20 minutes on 2 cores)
#   benchmarks/run.sh --short    tiny sizes, < 2 minutes, for CI (no speed checks)
#   benchmarks/run.sh --perf     full run, plus a perf profile of the runtime
#                                during the end-to-end phase (results/<date>.perf.txt)
# Extra arguments after these go to tsbench (--events N, --seed S).
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
perf=0
for a in "$@"; do
  case "$a" in
    --perf) perf=1 ;;
    *) args+=("$a") ;;
  esac
done

scripts/setup.sh >/dev/null
cmake --build build --target tsbench -j"$(nproc 2>/dev/null || echo 2)" >/dev/null

mkdir -p benchmarks/results
date=$(date -u +%Y-%m-%dT%H%M%SZ)
short=0
for a in "${args[@]+"${args[@]}"}"; do [ "$a" = "--short" ] && short=1; done
# A short run is a smoke test: its figures are not worth committing.
if [ "$short" = 1 ]; then
  out=$(mktemp -d)/short.json
else
  out=benchmarks/results/$date.json
fi
if [ "$perf" = 1 ]; then
  if ! perf stat -e instructions true >/dev/null 2>&1; then
    echo "run.sh: perf cannot count here; profile with valgrind --tool=callgrind instead" >&2
    exit 2
  fi
  pdata=$(mktemp -d)/perf.data
  args+=(--perf "$pdata")
fi

build/tsbench "${args[@]+"${args[@]}"}" --out "$out"
echo "run.sh: results in $out"
if [ "$perf" = 1 ] && [ -s "$pdata" ]; then
  perf report -i "$pdata" --stdio --no-children --percent-limit 0.7 --sort symbol \
    -g none 2>/dev/null | grep -v '^$' | head -60 > "benchmarks/results/$date.perf.txt"
  echo "run.sh: profile in benchmarks/results/$date.perf.txt"
fi
