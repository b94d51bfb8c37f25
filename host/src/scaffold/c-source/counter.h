// What the source counts, apart from the bindings so that a native compiler
// can test it (`make test`).
#ifndef COUNTER_H
#define COUNTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Hands out the numbers next, next+1, ... below `count` (0: no end).
typedef struct {
    uint64_t count;
    uint64_t next;
} counter_t;

bool counter_done(const counter_t *counter);

// Writes up to `max` next numbers to `out`; returns how many.
size_t counter_take(counter_t *counter, size_t max, uint64_t *out);

#endif
