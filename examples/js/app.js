// counter-source: publishes the JSON records {"n": 0}, {"n": 1}, ... to one
// topic and resumes after the last number the broker acknowledged. See README.md.

import * as dc from './danube-connect.js';
import { Counter } from './counter.js';

const CONFIG_EXAMPLE = `[counter_source]
# Topic to publish to.
topic = "/default/counter"
# How many numbers to publish (0..count-1); 0 = no end.
count = 100
`;

/** Offset stream of the numbers, and the state key of the last one committed. */
const STREAM = 'counter';
const COMMITTED = 'committed';

let topic;
let counter;

export const sourceConnector = {
  describe() {
    return {
      name: 'counter-source',
      version: '0.1.0',
      description: 'Publishes {"n": 0}, {"n": 1}, ... and resumes after the last acknowledged number.',
      configExample: CONFIG_EXAMPLE,
    };
  },

  open(text) {
    const config = dc.parseConfig(text);
    topic = dc.require(config, 'topic', 'string');
    const count = config.count ?? 0;
    if (!Number.isSafeInteger(count) || count < 0) {
      throw dc.configError('`count` must be a whole number >= 0');
    }
    const committed = dc.getJson(COMMITTED);
    counter = new Counter(count, committed === undefined ? 0 : committed + 1);
    dc.info('counter-source starting', { next: counter.next, count });
    return [dc.producer(topic)];
  },

  poll(max, timeoutMs) {
    if (counter.done()) {
      idle(timeoutMs);
      return [];
    }
    return counter
      .take(max)
      .map((n) => dc.jsonRecord(topic, { n }, { stream: STREAM, position: n }));
  },

  commit(offsets) {
    for (const offset of offsets) {
      if (offset.stream === STREAM) {
        dc.putJson(COMMITTED, Number(offset.position));
      }
    }
  },

  health() {},

  close() {},
};

/** Waits `ms` so that the host does not spin on empty polls. The JS engine
 *  has no blocking sleep (no Atomics.wait), so this watches the clock; a
 *  source that reads a socket waits on its I/O instead. */
function idle(ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    // waiting
  }
}
