#!/usr/bin/env bash
# Installs what building and testing danube-connect needs on a Debian machine
# with rustup: the wasm32-wasip2 target, protoc (for danube-client), and the
# external systems the tests start (mosquitto). Safe to run again.
set -euo pipefail

"$(dirname "$0")/apt-install-missing.sh" protobuf-compiler mosquitto mosquitto-clients

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi

# Toolchains for connectors in Python, JavaScript and C (into .polyglot/).
"$(dirname "$0")/setup-polyglot.sh"
