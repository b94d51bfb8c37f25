// log-sink: writes each record to the host's log, with its JSON fields, and
// counts the records per topic. See README.md.

import * as dc from './danube-connect.js';
import { counterAdd } from 'danube:connect/metrics@0.1.0';
import { summarize } from './summary.js';

const CONFIG_EXAMPLE = `[log_sink]
# Topic to consume and subscription name.
topic = "/default/events"
subscription = "log-sink"
`;

export const sinkConnector = {
  describe() {
    return {
      name: 'log-sink',
      version: '0.1.0',
      description: 'Writes each JSON record to the host log with its fields, and counts them.',
      configExample: CONFIG_EXAMPLE,
    };
  },

  open(text) {
    const config = dc.parseConfig(text);
    const topic = dc.require(config, 'topic', 'string');
    const subscription = config.subscription ?? 'log-sink';
    dc.info('log-sink starting', { topic, subscription });
    return [dc.consumer(topic, subscription)];
  },

  processBatch(records) {
    const failures = [];
    records.forEach((record, index) => {
      try {
        dc.info('record', summarize(record.payload, record.topic, record.offset));
        counterAdd('log_sink_records_total', 1n, [['topic', record.topic]]);
      } catch (e) {
        // Not a JSON object: it can never be logged as fields.
        failures.push({ index, error: { tag: 'invalid-data', val: e.message } });
      }
    });
    return failures;
  },

  health() {},

  close() {},
};
