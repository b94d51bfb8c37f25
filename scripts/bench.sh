#!/usr/bin/env bash
# Builds the host, the test broker, the bench (release) and the guests it
# runs, then runs danube-bench: the host beside the raw danube-client, in the
# same run, against danube-testkit and, when DANUBE_BROKER_BIN names a
# danube-broker binary (or --broker gives a running one), the real broker.
# Results: printed, and written to target/bench/results.md.
#   scripts/bench.sh [--quick] [--broker http://HOST:6650] [--brokers test,real]
#                    [--repeat N] [--only source,sink,boundary,startup,latency,webhook]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${DANUBE_BROKER_BIN:-}" ] && [ ! -x "$DANUBE_BROKER_BIN" ]; then
    echo "bench.sh: DANUBE_BROKER_BIN=$DANUBE_BROKER_BIN is not an executable file" >&2
    exit 2
fi
cargo build --release -p danube-host -p danube-testkit -p danube-bench
cargo build --release --target wasm32-wasip2 -p datagen-source -p probe-connector -p webhook-source -p delta-lake-sink
exec target/release/danube-bench "$@"
