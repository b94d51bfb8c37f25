// Native tests of line.c: `make test`.
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "line.h"

static void accepts_text_and_rejects_what_breaks_a_line(void) {
    assert(line_invalid((const uint8_t *)"hello", 5) == NULL);
    assert(strstr(line_invalid((const uint8_t *)"", 0), "empty"));
    assert(strstr(line_invalid((const uint8_t *)"a\nb", 3), "line break"));
    assert(strstr(line_invalid((const uint8_t *)"a\0b", 3), "NUL"));
}

static void writes_topic_offset_and_payload(void) {
    char buf[64] = {0};
    FILE *out = fmemopen(buf, sizeof buf, "w");
    assert(line_write(out, "/default/in", 11, 42, (const uint8_t *)"hi there", 8) == 0);
    fclose(out);
    assert(strcmp(buf, "/default/in 42 hi there\n") == 0);
}

int main(void) {
    accepts_text_and_rejects_what_breaks_a_line();
    writes_topic_offset_and_payload();
    puts("line tests passed");
    return 0;
}
