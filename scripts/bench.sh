#!/usr/bin/env bash
# Builds the host, the test broker, the bench (release) and the guests it
# runs, then runs danube-bench: the host beside the raw danube-client, in the
# same run. Results: printed, and written to target/bench/results.md.
#   scripts/bench.sh [--quick] [--broker http://HOST:6650] [--only source,sink,boundary,startup,latency]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p danube-host -p danube-testkit -p danube-bench
cargo build --release --target wasm32-wasip2 -p datagen-source -p probe-connector
exec target/release/danube-bench "$@"
