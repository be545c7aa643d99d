#!/usr/bin/env bash
# The main job on the embedded default: builds, starts Kafka (mock cluster),
# Redis and PostgreSQL privately, produces the sample events, prints the views
# and rows they produced, stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec build/tastesync demo topology.yaml
