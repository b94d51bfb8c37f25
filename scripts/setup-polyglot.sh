#!/usr/bin/env bash
# Installs the toolchains for connectors in Python, JavaScript and C, each
# only if missing, into .polyglot/ (a directory CI can cache between runs):
#   .polyglot/venv   componentize-py (PyPI)
#   .polyglot/js     componentize-js (npm)
#   .polyglot/bin    componentize-py, componentize-js, wit-bindgen, wasm-tools
#                    (unless on PATH) and the WASI preview1 adapter that C
#                    modules need (wasi_snapshot_preview1.reactor.wasm)
# plus clang, lld, wasi-libc and jsmn (libjsmn-dev) from Debian, and Node if
# missing. Put .polyglot/bin on PATH to build the examples by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

COMPONENTIZE_PY=0.25.1
COMPONENTIZE_JS=0.23.0
WIT_BINDGEN=0.63.0
WASM_TOOLS=1.263.0
# The adapter is released with wasmtime; this is the host's wasmtime version.
WASMTIME=48.0.8

root=$PWD/.polyglot
bin=$root/bin
mkdir -p "$bin"

scripts/apt-install-missing.sh clang lld wasi-libc libclang-rt-14-dev-wasm32 libjsmn-dev python3-venv
command -v npm >/dev/null || scripts/apt-install-missing.sh nodejs npm

if [[ "$("$root/venv/bin/componentize-py" --version 2>/dev/null)" != *"$COMPONENTIZE_PY"* ]]; then
    echo "setup-polyglot: installing componentize-py $COMPONENTIZE_PY"
    python3 -m venv "$root/venv"
    "$root/venv/bin/pip" install -q "componentize-py==$COMPONENTIZE_PY"
fi
ln -sf ../venv/bin/componentize-py "$bin/componentize-py"

if [[ "$("$root/js/node_modules/.bin/componentize-js" --version 2>/dev/null)" != "$COMPONENTIZE_JS" ]]; then
    echo "setup-polyglot: installing componentize-js $COMPONENTIZE_JS"
    mkdir -p "$root/js"
    npm install --prefix "$root/js" --no-audit --no-fund --silent \
        "@bytecodealliance/componentize-js@$COMPONENTIZE_JS"
fi
ln -sf ../js/node_modules/.bin/componentize-js "$bin/componentize-js"

if [[ "$("$bin/wit-bindgen" --version 2>/dev/null)" != *"$WIT_BINDGEN"* ]]; then
    echo "setup-polyglot: building wit-bindgen-cli $WIT_BINDGEN"
    # Only the C generator: the CLI's other languages multiply the build time.
    cargo install --quiet --locked --root "$root" wit-bindgen-cli --version "$WIT_BINDGEN" \
        --no-default-features --features c
fi

if ! command -v wasm-tools >/dev/null && ! [[ -x $bin/wasm-tools ]]; then
    echo "setup-polyglot: building wasm-tools $WASM_TOOLS"
    # `component new` is all the C build needs.
    cargo install --quiet --locked --root "$root" wasm-tools --version "$WASM_TOOLS" \
        --no-default-features --features component
fi

adapter=$bin/wasi_snapshot_preview1.reactor.wasm
if [[ ! -f $adapter ]]; then
    # The adapter ships inside this crate; cargo fetches it like any dependency.
    echo "setup-polyglot: fetching the WASI preview1 adapter $WASMTIME"
    fetch=$(mktemp -d)
    cat >"$fetch/Cargo.toml" <<TOML
[package]
name = "adapter-fetch"
version = "0.0.0"
edition = "2021"
[lib]
path = "lib.rs"
[dependencies]
wasi-preview1-component-adapter-provider = "=$WASMTIME"
TOML
    touch "$fetch/lib.rs"
    crate=$(cargo metadata --quiet --format-version 1 --manifest-path "$fetch/Cargo.toml" |
        python3 -c 'import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "wasi-preview1-component-adapter-provider":
        print(p["manifest_path"].rsplit("/", 1)[0])')
    cp "$crate/artefacts/wasi_snapshot_preview1.reactor.wasm" "$adapter"
    rm -rf "$fetch"
fi
