#!/usr/bin/env bash
# Installs what building and testing danube-connect needs on a Debian machine
# with rustup: the wasm32-wasip2 target, protoc (for danube-client), and the
# external systems the tests start (mosquitto). Safe to run again.
set -euo pipefail

packages=(protobuf-compiler mosquitto mosquitto-clients)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi

# Toolchains for connectors in Python, JavaScript and C (into .polyglot/).
"$(dirname "$0")/setup-polyglot.sh"
