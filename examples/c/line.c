#include "line.h"

#include <inttypes.h>
#include <string.h>

const char *line_invalid(const uint8_t *payload, size_t len) {
    if (len == 0) {
        return "payload is empty";
    }
    if (memchr(payload, '\n', len) || memchr(payload, '\r', len)) {
        return "payload contains a line break";
    }
    if (memchr(payload, '\0', len)) {
        return "payload contains a NUL byte";
    }
    return NULL;
}

int line_write(FILE *out, const char *topic, size_t topic_len, uint64_t offset,
               const uint8_t *payload, size_t len) {
    if (fprintf(out, "%.*s %" PRIu64 " ", (int)topic_len, topic, offset) < 0 ||
        fwrite(payload, 1, len, out) != len || fputc('\n', out) == EOF) {
        return -1;
    }
    return 0;
}
