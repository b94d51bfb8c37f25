#!/usr/bin/env bash
# Builds the host, the test broker, the bench and the guests it runs, then
# runs danube-bench: the host beside the raw danube-client, same run.
#   scripts/bench.sh [--quick] [--broker http://HOST:6650] [--only source,sink,...]
# The workspace crates are optimised (opt-level 3) on top of the dev profile,
# whose dependencies are already optimised (opt-level 2): release-grade code
# without rebuilding wasmtime and the gRPC stack for another profile.
set -euo pipefail
cd "$(dirname "$0")/.."
optimised=()
for package in danube-host danube-testkit danube-bench; do
    optimised+=(--config "profile.dev.package.$package.opt-level=3")
    optimised+=(--config "profile.dev.package.$package.debug-assertions=false")
    optimised+=(--config "profile.dev.package.$package.overflow-checks=false")
done
cargo build "${optimised[@]}" -p danube-host -p danube-testkit -p danube-bench
cargo build --release --target wasm32-wasip2 -p datagen-source -p probe-connector
exec target/debug/danube-bench "$@"
