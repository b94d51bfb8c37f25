#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ (on the danube-host library) and runs each
# for SECONDS (default 60): `scripts/fuzz.sh 20`. A crash stops the run and
# leaves its input under fuzz/artifacts/. cargo-fuzz comes from
# scripts/setup.sh; RUSTC_BOOTSTRAP lets it build on the stable toolchain,
# without a sanitizer (`-s none`) and without optimisation (`--dev`: a short
# run spends more time building than fuzzing).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none --dev
for target in $(cargo fuzz list); do
    echo "fuzz: $target for ${seconds}s"
    cargo fuzz run -s none --dev "$target" -- -max_total_time="$seconds" 2>&1 | tail -n 3
done
