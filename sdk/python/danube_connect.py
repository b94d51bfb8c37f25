"""A thin Python layer over the componentize-py bindings of danube:connect.

The generated `wit_world` modules are the contract; this module only spares
connectors the boilerplate: JSON configuration, error constructors, logging
with keyword fields, JSON state, and the configs a connector returns from
`open`. Copy it next to your connector (`danube-host new --lang python` does).
"""

import json
from typing import Any, Optional

from componentize_py_types import Err
from wit_world.imports import log, state, types


def parse_config(text: str) -> dict:
    """The connector's configuration table (the host hands it over as JSON)."""
    try:
        config = json.loads(text)
    except ValueError as e:
        raise config_error(f"configuration is not JSON: {e}")
    if not isinstance(config, dict):
        raise config_error("configuration must be a table")
    return config


def require(config: dict, key: str, kind: type) -> Any:
    """`config[key]`, which must exist and be of `kind`."""
    value = config.get(key)
    if not isinstance(value, kind):
        raise config_error(f"`{key}` must be set to a {kind.__name__}")
    return value


# Errors, raised from `open`, `poll`, `commit` or `process_batch`: the host
# retries, dead-letters, stops or reports a configuration error accordingly.
def retryable(message: str) -> Err:
    return Err(types.ConnectorError_Retryable(message))


def invalid_data(message: str) -> types.ConnectorError:
    """An error for one record (a `failure`), or raised for a whole batch."""
    return types.ConnectorError_InvalidData(message)


def fatal(message: str) -> Err:
    return Err(types.ConnectorError_Fatal(message))


def config_error(message: str) -> Err:
    return Err(types.ConnectorError_Config(message))


def failure(index: int, error: types.ConnectorError) -> types.RecordFailure:
    """Record `index` of a batch could not be written."""
    return types.RecordFailure(index, error)


def consumer(
    topic: str,
    subscription: str,
    shared: bool = False,
    expected_schema_subject: Optional[str] = None,
    avro_bytes: bool = False,
) -> types.ConsumerConfig:
    """A subscription for `open` of a sink (exclusive unless `shared`).

    Only records of `expected_schema_subject` reach the sink, if given. Avro
    payloads arrive decoded to JSON unless `avro_bytes`.
    """
    kind = types.SubscriptionType.SHARED if shared else types.SubscriptionType.EXCLUSIVE
    return types.ConsumerConfig(topic, subscription, kind, expected_schema_subject, not avro_bytes)


def producer(topic: str, partitions: int = 0, reliable: bool = True) -> types.ProducerConfig:
    """A topic for `open` of a source."""
    return types.ProducerConfig(topic, partitions, reliable, None)


def info(message: str, **fields: Any) -> None:
    _log_at(log.Level.INFO, message, fields)


def warn(message: str, **fields: Any) -> None:
    _log_at(log.Level.WARN, message, fields)


def _log_at(level: log.Level, message: str, fields: dict) -> None:
    log.log(level, message, [(k, str(v)) for k, v in fields.items()])


def get_json(key: str) -> Optional[Any]:
    """The value stored under `key` as JSON, if any."""
    value = state.get(key)
    return None if value is None else json.loads(value)


def put_json(key: str, value: Any) -> None:
    """Stores `value` as JSON; a full store is a retryable error."""
    try:
        state.put(key, json.dumps(value).encode())
    except Err as e:
        raise retryable(f"cannot store `{key}`: {e.value}")
