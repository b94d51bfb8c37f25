#!/usr/bin/env bash
# Builds the host, the test broker and every connector component.
set -euo pipefail
cd "$(dirname "$0")/.."
# Built as `cargo test --workspace` builds them (the dev profile optimises
# dependencies such as wasmtime and tonic): the host and the test broker the
# quick start runs are the binaries the tests use, and dependencies are not
# compiled a second time with the test build's features.
cargo test --workspace --no-run
# Every workspace member that is a connector (a cdylib) is built for wasm.
guests=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if any("cdylib" in t["crate_types"] for t in p["targets"]):
        print("-p", p["name"])
')
cargo build --release --target wasm32-wasip2 $guests
# The Python, JavaScript and C examples, with the toolchains setup-polyglot.sh
# installed; make rebuilds only what changed.
export PATH=$PWD/.polyglot/bin:$PATH
for example in examples/*/Makefile; do
    make -s -C "$(dirname "$example")"
done
