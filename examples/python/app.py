"""json-filter-sink: keeps the JSON records that match a filter, adds fields
to them and appends them as lines to a file. See README.md."""

import os
from typing import List, Optional

import danube_connect as dc
from enrich import Rules
from wit_world import exports
from wit_world.imports import types

CONFIG_EXAMPLE = """[json_filter_sink]
# Topic to consume and subscription name.
topic = "/default/events"
subscription = "json-filter"
# File the kept records are appended to, one JSON object per line; its
# directory must be granted in [sandbox] dirs.
path = "/var/lib/json-filter/out.jsonl"
# Keep only objects whose fields equal these values (all of them); {} keeps all.
where = { level = "error" }
# Fields added to every kept object.
add = { pipeline = "json-filter" }
"""


class Opened:
    """What `open` set up. componentize-py makes a new `SinkConnector` for
    every call, so this lives in the module, not in the instance."""

    def __init__(self, rules: Rules, out):
        self.rules = rules
        self.out = out


opened: Optional[Opened] = None


class SinkConnector(exports.SinkConnector):
    def describe(self) -> types.ConnectorInfo:
        return types.ConnectorInfo(
            "json-filter-sink",
            "0.1.0",
            "Keeps JSON records matching `where`, adds the `add` fields and appends them to a file.",
            CONFIG_EXAMPLE,
        )

    def open(self, config: str) -> List[types.ConsumerConfig]:
        global opened
        table = dc.parse_config(config)
        rules = Rules(table.get("where", {}), table.get("add", {}))
        path = dc.require(table, "path", str)
        try:
            opened = Opened(rules, open(path, "ab"))
        except OSError as e:
            raise dc.config_error(f"cannot open `path` {path}: {e}; grant its directory in [sandbox] dirs")
        dc.info("json-filter-sink writing", path=path)
        topic = dc.require(table, "topic", str)
        subscription = table.get("subscription", "json-filter")
        return [dc.consumer(topic, subscription)]

    def process_batch(self, records: List[types.SinkRecord]) -> List[types.RecordFailure]:
        failures = []
        lines = []
        for index, record in enumerate(records):
            try:
                line = opened.rules.apply(record.payload, record.topic, record.offset)
            except ValueError as e:
                failures.append(dc.failure(index, dc.invalid_data(str(e))))
                continue
            if line is not None:
                lines.append(line)
        try:
            opened.out.write(b"".join(lines))
            opened.out.flush()
            os.fsync(opened.out.fileno())
        except OSError as e:
            raise dc.retryable(f"cannot write: {e}")
        return failures

    def health(self) -> None:
        return None

    def close(self) -> None:
        # `close` may come without `open` (the host's contract).
        if opened is not None:
            opened.out.close()
