#include "counter.h"

bool counter_done(const counter_t *counter) {
    return counter->count > 0 && counter->next >= counter->count;
}

size_t counter_take(counter_t *counter, size_t max, uint64_t *out) {
    size_t taken = 0;
    while (taken < max && !counter_done(counter)) {
        out[taken++] = counter->next++;
    }
    return taken;
}
