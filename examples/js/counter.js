// What the source counts, apart from the bindings so that plain Node can
// test it (`node --test`).

/** Hands out the numbers start, start+1, ... below `count` (0: no end). */
export class Counter {
  constructor(count, start) {
    this.count = count;
    this.next = start;
  }

  done() {
    return this.count > 0 && this.next >= this.count;
  }

  /** Up to `max` next numbers. */
  take(max) {
    const numbers = [];
    while (numbers.length < max && !this.done()) {
      numbers.push(this.next++);
    }
    return numbers;
  }
}
