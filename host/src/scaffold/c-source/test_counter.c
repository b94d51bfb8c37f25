// Native tests of counter.c: `make test`.
#include <assert.h>
#include <stdio.h>

#include "counter.h"

static void hands_out_numbers_up_to_count(void) {
    counter_t counter = {.count = 5, .next = 0};
    uint64_t out[3];
    assert(counter_take(&counter, 3, out) == 3 && out[0] == 0 && out[2] == 2);
    assert(counter_take(&counter, 3, out) == 2 && out[1] == 4);
    assert(counter_done(&counter));
    assert(counter_take(&counter, 3, out) == 0);
}

static void resumes_where_it_is_told(void) {
    counter_t counter = {.count = 0, .next = 7};
    uint64_t out[2];
    assert(counter_take(&counter, 2, out) == 2 && out[0] == 7 && out[1] == 8);
}

int main(void) {
    hands_out_numbers_up_to_count();
    resumes_where_it_is_told();
    puts("counter tests passed");
    return 0;
}
