#!/usr/bin/env bash
# Compares the end-to-end throughput of two builds on this machine: the
# working tree (built in build/) against another commit (built in a
# temporary git worktree), in interleaved runs of `tsbench --only
# throughput`. This host's speed drifts between runs by more than most
# changes gain, so one run of each proves nothing: the runs alternate
# (base, new, new, base, ...) so that a drift hits both alike, and the
# medians are printed with every run.
#
#   benchmarks/compare.sh <base commit> [pairs] [events]
#       pairs   interleaved pairs (default 3)
#       events  events of the mixed stream (default 1000000: ~1 minute a run)
#
# Prints per run: events/s end to end and the runtime's CPU per event.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
  echo "usage: benchmarks/compare.sh <base commit> [pairs] [events]" >&2
  exit 2
fi
base=$(git rev-parse --verify "$1^{commit}")
pairs=${2:-3}
events=${3:-1000000}

scripts/setup.sh >/dev/null
jobs=$(nproc 2>/dev/null || echo 2)
cmake --build build --target tastesync tsbench -j"$jobs" >/dev/null

tmp=$(mktemp -d)
cleanup() {
  git worktree remove --force "$tmp/base" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
git worktree add --detach "$tmp/base" "$base" >/dev/null 2>&1
echo "compare.sh: building $(git log -1 --format='%h %s' "$base" | cut -c1-70)"
cmake -S "$tmp/base" -B "$tmp/base/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$tmp/base/build" --target tastesync tsbench -j"$jobs" >/dev/null

# One run of the build in `dir`: sets rate (events/s end to end) and cpu (us
# of the runtime's CPU per event) from tsbench's table.
run() {
  local dir=$1 out=$tmp/run.txt
  if ! (cd "$dir" && build/tsbench --events "$events" --only throughput --out "$tmp/run.json") \
    >"$out" 2>&1; then
    tail -20 "$out" >&2
    echo "compare.sh: a run of $dir failed" >&2
    exit 1
  fi
  rate=$(awk '$1 == "pipeline" && $2 == "end_to_end" { print $3 }' "$out")
  cpu=$(awk '$1 == "pipeline" && $2 == "runtime_cpu_per_event" { print $3 }' "$out")
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

base_rates=() new_rates=() base_cpu=() new_cpu=()
for i in $(seq 1 "$pairs"); do
  order="base new"
  [ $((i % 2)) = 0 ] && order="new base"
  for which in $order; do
    if [ "$which" = base ]; then
      run "$tmp/base"
      base_rates+=("$rate") base_cpu+=("$cpu")
    else
      run .
      new_rates+=("$rate") new_cpu+=("$cpu")
    fi
    printf 'pair %d  %-4s  %8s events/s  %7s us/event\n' "$i" "$which" "$rate" "$cpu"
  done
done
printf 'median base  %8s events/s  %7s us/event\n' \
  "$(printf '%s\n' "${base_rates[@]}" | median)" "$(printf '%s\n' "${base_cpu[@]}" | median)"
printf 'median new   %8s events/s  %7s us/event\n' \
  "$(printf '%s\n' "${new_rates[@]}" | median)" "$(printf '%s\n' "${new_cpu[@]}" | median)"
