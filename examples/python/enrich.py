"""What the sink does to each record, apart from the bindings so that plain
Python can test it (`python3 -m unittest`)."""

import json
from typing import Optional


class Rules:
    """Keep a JSON object when every `where` field equals its value; add the
    `add` fields to what is kept."""

    def __init__(self, where: dict, add: dict):
        self.where = where
        self.add = add

    def apply(self, payload: bytes, topic: str, offset: int) -> Optional[bytes]:
        """The line to write for `payload`, or None to skip it. Raises
        ValueError for a payload that is not a JSON object."""
        doc = json.loads(payload)
        if not isinstance(doc, dict):
            raise ValueError("payload is not a JSON object")
        if any(doc.get(k) != v for k, v in self.where.items()):
            return None
        doc.update(self.add)
        doc["_topic"] = topic
        doc["_offset"] = offset
        return json.dumps(doc, separators=(",", ":")).encode() + b"\n"
