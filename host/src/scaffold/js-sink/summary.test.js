import { test } from 'node:test';
import assert from 'node:assert/strict';
import { summarize } from './summary.js';

const bytes = (text) => new TextEncoder().encode(text);

test('fields of a JSON object, with where it came from', () => {
  assert.deepEqual(summarize(bytes('{"level":"error","n":1}'), '/default/e', 7n), {
    topic: '/default/e',
    offset: '7',
    level: 'error',
    n: '1',
  });
});

test('anything else is refused', () => {
  assert.throws(() => summarize(bytes('[1, 2]'), '/default/e', 0n));
  assert.throws(() => summarize(bytes('not json'), '/default/e', 0n));
  assert.throws(() => summarize(new Uint8Array([0xff]), '/default/e', 0n));
});
