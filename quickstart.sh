#!/usr/bin/env bash
# Sets everything up and runs a real pipeline end to end:
#   datagen-source -> danube-host -> Danube (the in-memory test broker)
#   -> danube-host -> file-sink -> a JSON-lines file
# then prints what flowed. Usage: ./quickstart.sh [RECORDS]
# (KEEP_WORKDIR=1 keeps the configurations, logs and output for a look.)
set -euo pipefail
cd "$(dirname "$0")"
records=${1:-1000}
topic=/default/quickstart

scripts/setup.sh
scripts/build.sh

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n "${KEEP_WORKDIR:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        if ((SECONDS >= deadline)); then
            echo "quickstart: timed out waiting for $what; logs are below" >&2
            tail -n 20 "$work"/*.log >&2
            exit 1
        fi
        sleep 0.2
    done
}

echo "== starting the test broker (in memory, for development only)"
target/debug/danube-testkit --port 0 --topic "$topic:3" >"$work/broker.url" 2>"$work/broker.log" &
pids+=($!)
wait_for 10 "the broker" test -s "$work/broker.url"
url=$(head -n1 "$work/broker.url")
echo "   $url"

mkdir -p "$work/out"
cat >"$work/sink.toml" <<TOML
danube_service_url = "$url"
connector_name = "quickstart-sink"

[sandbox]
dirs = ["$work/out"]

[metrics]
port = 0   # any free port; see the log line "serving /metrics"

[state]
dir = "$work/state"

[file]
path = "$work/out"
topics = ["$topic"]
subscription = "quickstart"
TOML
cat >"$work/source.toml" <<TOML
danube_service_url = "$url"
connector_name = "quickstart-source"

[state]
dir = "$work/state"

[metrics]
port = 0

[datagen]
topics = ["$topic"]
partitions = 3
keys = 8
count = $records
payload_size = 64
TOML

echo "== starting file-sink (consumes $topic, writes $work/out/records.jsonl)"
target/debug/danube-host --log-format text \
    --module target/wasm32-wasip2/release/file_sink.wasm --config "$work/sink.toml" 2>"$work/sink.log" &
sink=$!
pids+=($sink)
wait_for 30 "the sink to subscribe" grep -qs "subscribed" "$work/sink.log"

echo "== starting datagen-source ($records records over 3 partitions, 8 keys)"
target/debug/danube-host --log-format text \
    --module target/wasm32-wasip2/release/datagen_source.wasm --config "$work/source.toml" 2>"$work/source.log" &
source=$!
pids+=($source)

lines() { [[ -f "$work/out/records.jsonl" ]] && wc -l <"$work/out/records.jsonl" || echo 0; }
all_written() { test "$(lines)" -ge "$records"; }
wait_for 120 "$records records in the sink" all_written

echo "== draining both connectors (SIGTERM)"
kill -TERM "$source" "$sink"
wait "$source" && wait "$sink"

out="$work/out/records.jsonl"
distinct=$(grep -o '"seq":[0-9][0-9]*' "$out" | sort -u | wc -l)
echo
echo "records written by file-sink: $(lines)  (distinct sequence numbers: $distinct)"
for p in 0 1 2; do
    echo "  from $topic-part-$p: $(grep -c "\"topic\":\"$topic-part-$p\"" "$out")"
done
echo "source's committed position (state store): $(cat "$work/state/quickstart-source.state.json")"
echo "first record:"
head -n1 "$out"
if [[ $distinct -ne $records ]]; then
    echo "quickstart: expected $records distinct records" >&2
    exit 1
fi
echo
echo "quickstart: OK"
