import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Counter } from './counter.js';

test('counts from its start up to count, in batches of at most max', () => {
  const counter = new Counter(5, 2);
  assert.deepEqual(counter.take(2), [2, 3]);
  assert.deepEqual(counter.take(10), [4]);
  assert.ok(counter.done());
  assert.deepEqual(counter.take(10), []);
});

test('a count of 0 never ends', () => {
  const counter = new Counter(0, 0);
  assert.equal(counter.take(1000).length, 1000);
  assert.ok(!counter.done());
});
