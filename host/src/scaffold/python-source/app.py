"""counter-source: publishes the JSON records {"n": 0}, {"n": 1}, ... to one
topic and resumes after the last number the broker acknowledged. See
README.md."""

import json
import time
from typing import List, Optional

import danube_connect as dc
from counter import Counter
from wit_world import exports
from wit_world.imports import types

CONFIG_EXAMPLE = """[counter_source]
# Topic to publish to.
topic = "/default/counter"
# How many numbers to publish (0..count-1); 0 = no end.
count = 100
"""

# Offset stream of the numbers, and the state key of the last one committed.
STREAM = "counter"
COMMITTED = "committed"


class Opened:
    """What `open` set up. componentize-py makes a new `SourceConnector` for
    every call, so this lives in the module, not in the instance."""

    def __init__(self, topic: str, counter: Counter):
        self.topic = topic
        self.counter = counter


opened: Optional[Opened] = None


class SourceConnector(exports.SourceConnector):
    def describe(self) -> types.ConnectorInfo:
        return types.ConnectorInfo(
            "counter-source",
            "0.1.0",
            'Publishes {"n": 0}, {"n": 1}, ... and resumes after the last acknowledged number.',
            CONFIG_EXAMPLE,
        )

    def open(self, config: str) -> List[types.ProducerConfig]:
        global opened
        table = dc.parse_config(config)
        unknown = set(table) - {"topic", "count"}
        if unknown:
            raise dc.config_error(f"unknown key `{sorted(unknown)[0]}`; it takes topic, count")
        topic = dc.require(table, "topic", str)
        count = table.get("count", 0)
        if not isinstance(count, int) or count < 0:
            raise dc.config_error("`count` must be a whole number >= 0")
        committed = dc.get_json(COMMITTED)
        opened = Opened(topic, Counter(count, 0 if committed is None else committed + 1))
        dc.info("counter-source starting", next=opened.counter.next, count=count)
        return [dc.producer(topic)]

    def poll(self, max: int, timeout_ms: int) -> List[types.SourceRecord]:
        counter = opened.counter
        if counter.done():
            # Nothing more will come: wait, so that the host does not spin.
            time.sleep(timeout_ms / 1000)
            return []
        return [
            types.SourceRecord(
                opened.topic,
                json.dumps({"n": n}).encode(),
                [],
                None,
                types.Offset(STREAM, n),
            )
            for n in counter.take(max)
        ]

    def commit(self, offsets: List[types.Offset]) -> None:
        for offset in offsets:
            if offset.stream == STREAM:
                dc.put_json(COMMITTED, offset.position)

    def health(self) -> None:
        return None

    def close(self) -> None:
        return None
