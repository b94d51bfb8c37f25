// A thin JavaScript layer over the danube:connect imports, for connectors
// built with componentize-js. The WIT is the contract; this module spares
// connectors the boilerplate: JSON configuration, typed errors, logging with
// fields, JSON state, and the records and configs the host expects. Copy it
// next to your connector (`danube-host new --lang js` does).

import { log } from 'danube:connect/log@0.1.0';
import { get, put } from 'danube:connect/state@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Thrown from open, poll, commit or processBatch: the host retries,
 *  dead-letters, stops or reports a configuration error according to `kind`. */
export class ConnectorError extends Error {
  constructor(kind, message) {
    super(message);
    // componentize-js returns a thrown error's `payload` as the `err` value.
    this.payload = { tag: kind, val: message };
  }
}

export const retryable = (message) => new ConnectorError('retryable', message);
export const invalidData = (message) => new ConnectorError('invalid-data', message);
export const fatal = (message) => new ConnectorError('fatal', message);
export const configError = (message) => new ConnectorError('config', message);

/** The connector's configuration table (the host hands it over as JSON). */
export function parseConfig(text) {
  let config;
  try {
    config = JSON.parse(text);
  } catch (e) {
    throw configError(`configuration is not JSON: ${e.message}`);
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw configError('configuration must be a table');
  }
  return config;
}

/** `config[key]`, which must be set and of `type` (a `typeof` name). */
export function require(config, key, type) {
  const value = config[key];
  if (typeof value !== type) {
    throw configError(`\`${key}\` must be set to a ${type}`);
  }
  return value;
}

export const info = (message, fields = {}) => logAt('info', message, fields);
export const warn = (message, fields = {}) => logAt('warn', message, fields);

function logAt(level, message, fields) {
  log(level, message, Object.entries(fields).map(([k, v]) => [k, String(v)]));
}

/** The value stored under `key` as JSON, or undefined. */
export function getJson(key) {
  const value = get(key);
  return value === undefined ? undefined : JSON.parse(decoder.decode(value));
}

/** Stores `value` as JSON; a full store is a retryable error. */
export function putJson(key, value) {
  try {
    put(key, encoder.encode(JSON.stringify(value)));
  } catch (e) {
    throw retryable(`cannot store \`${key}\`: ${e.payload ?? e}`);
  }
}

/** A subscription for a sink's `open` (exclusive unless `shared`); Avro
 *  payloads arrive decoded to JSON. */
export function consumer(topic, subscription, { shared = false } = {}) {
  return {
    topic,
    subscription,
    subscriptionType: shared ? 'shared' : 'exclusive',
    expectedSchemaSubject: undefined,
    decodeAvro: true,
  };
}

/** A topic for a source's `open`. */
export function producer(topic, { partitions = 0, reliable = true } = {}) {
  return { topic, partitions, reliable, schemaSubject: undefined };
}

/** A record for a source's `poll`: `value` as JSON, committed as
 *  `position` of `stream`. */
export function jsonRecord(topic, value, { key, stream, position, attributes = [] } = {}) {
  const offset = stream === undefined ? undefined : { stream, position: BigInt(position) };
  return { topic, payload: encoder.encode(JSON.stringify(value)), attributes, key, offset };
}
