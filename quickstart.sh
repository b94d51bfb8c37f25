#!/usr/bin/env bash
# Sets everything up and runs a real pipeline end to end:
#   datagen-source -> danube-host -> Danube -> danube-host -> file-sink
#   -> a JSON-lines file
# then prints what flowed. Usage: ./quickstart.sh [--real-broker|--test-broker] [RECORDS]
# Danube is the real broker when DANUBE_BROKER_BIN names its binary (or with
# --real-broker, which needs it), otherwise danube-testkit, the in-memory
# test broker; --test-broker picks the test broker either way.
# (KEEP_WORKDIR=1 keeps the configurations, logs and output for a look.)
set -euo pipefail
cd "$(dirname "$0")"
broker_kind=test
[[ -n "${DANUBE_BROKER_BIN:-}" ]] && broker_kind=real
records=1000
for arg in "$@"; do
    case $arg in
    --real-broker) broker_kind=real ;;
    --test-broker) broker_kind=test ;;
    [0-9]*) records=$arg ;;
    *)
        echo "usage: $0 [--real-broker|--test-broker] [RECORDS]" >&2
        exit 2
        ;;
    esac
done
if [[ $broker_kind == real && ! -x "${DANUBE_BROKER_BIN:-}" ]]; then
    echo "quickstart: --real-broker needs DANUBE_BROKER_BIN, the path of a danube-broker" \
        "binary (v0.15.1: docker cp it out of ghcr.io/danube-messaging/danube-broker, or" \
        "build it from danube-messaging/danube; README, \"Testing against the real broker\")" >&2
    exit 2
fi
topic=/default/quickstart
partitions=3

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

# free_ports N: N free loopback ports, bound together so that they differ.
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
' "$1"
}

# broker_ready PORT...: the broker runs and every port accepts a TCP connection.
broker_ready() {
    if ! kill -0 "$broker" 2>/dev/null; then
        echo "quickstart: the broker exited; its log:" >&2
        tail -n 20 "$work/broker.log" >&2
        exit 1
    fi
    answers "$@"
}

# answers PORT...: every port accepts a TCP connection.
answers() {
    local port
    for port in "$@"; do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 1
    done
}

broker_table=
rate=0 # records/s, 0: as fast as the broker takes them
pace=
if [[ $broker_kind == real ]]; then
    broker_name="the real Danube broker ($DANUBE_BROKER_BIN)"
    echo "== starting $broker_name, standalone, on a fresh data directory"
    for attempt in 1 2 3 4 5; do
        read -r port admin raft prom < <(free_ports 4)
        rm -rf "$work/broker-data"
        NO_COLOR=1 "$DANUBE_BROKER_BIN" --mode standalone --data-dir "$work/broker-data" \
            --broker-addr "127.0.0.1:$port" --admin-addr "127.0.0.1:$admin" \
            --raft-addr "127.0.0.1:$raft" --prom-exporter "127.0.0.1:$prom" \
            >"$work/broker.log" 2>&1 &
        broker=$!
        pids+=($broker)
        # Ready when its client, admin and metrics ports answer. A port taken
        # in between by another process shows in its log: then new ports.
        wait_for 30 "the broker" broker_ready "$port" "$admin" "$prom"
        if grep -q "Address already in use" "$work/broker.log"; then
            kill "$broker" 2>/dev/null || true
            wait "$broker" 2>/dev/null || true
            continue
        fi
        break
    done
    url=http://127.0.0.1:$port
    echo "   $url (admin 127.0.0.1:$admin, metrics http://127.0.0.1:$prom/metrics)"
    # The sink subscribes before the first record, and Danube starts a new
    # subscription at the latest message: the topic must exist first.
    target/debug/danube-testkit create-topics --admin-url "http://127.0.0.1:$admin" \
        --topic "$topic:$partitions" 2>"$work/create-topic.log" || {
        echo "quickstart: creating $topic through the admin API failed:" >&2
        cat "$work/create-topic.log" >&2
        exit 1
    }
    echo "   created $topic with $partitions partitions (admin API)"
    # The sink reports on /health any messages the broker skips.
    broker_table=$'[broker]\n'"metrics_url = \"http://127.0.0.1:$prom/metrics\""
    # The real broker drops messages of a reliable subscription that falls
    # 256 behind its producers: the source keeps to a rate the sink sustains.
    rate=500
    pace=", $rate/s"
else
    broker_name="danube-testkit, the in-memory test broker (for development only)"
    echo "== starting $broker_name"
    target/debug/danube-testkit --port 0 --topic "$topic:$partitions" >"$work/broker.url" 2>"$work/broker.log" &
    pids+=($!)
    wait_for 10 "the broker" test -s "$work/broker.url"
    url=$(head -n1 "$work/broker.url")
    echo "   $url"
fi

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

$broker_table
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
partitions = $partitions
keys = 8
count = $records
payload_size = 64
rate = $rate
TOML

echo "== starting file-sink (consumes $topic, writes $work/out/records.jsonl)"
target/debug/danube-host --log-format text \
    --module target/wasm32-wasip2/release/file_sink.wasm --config "$work/sink.toml" 2>"$work/sink.log" &
sink=$!
pids+=($sink)
wait_for 30 "the sink to subscribe" grep -qs "subscribed" "$work/sink.log"

echo "== starting datagen-source ($records records over $partitions partitions, 8 keys$pace)"
target/debug/danube-host --log-format text \
    --module target/wasm32-wasip2/release/datagen_source.wasm --config "$work/source.toml" 2>"$work/source.log" &
source=$!
pids+=($source)

lines() { [[ -f "$work/out/records.jsonl" ]] && wc -l <"$work/out/records.jsonl" || echo 0; }
all_written() { test "$(lines)" -ge "$records"; }
wait_for $((120 + (rate > 0 ? records / rate : 0))) "$records records in the sink" all_written

echo "== draining both connectors (SIGTERM)"
kill -TERM "$source" "$sink"
wait "$source" && wait "$sink"

out="$work/out/records.jsonl"
distinct=$(grep -o '"seq":[0-9][0-9]*' "$out" | sort -u | wc -l)
echo
echo "broker: $broker_name"
echo "records written by file-sink: $(lines)  (distinct sequence numbers: $distinct)"
for ((p = 0; p < partitions; p++)); do
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
echo "quickstart: OK, through $broker_name"
