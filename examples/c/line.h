// What the sink writes for each record, apart from the bindings so that a
// native compiler can test it (`make test`).
#ifndef LINE_H
#define LINE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// Why a payload cannot be a line, or NULL if it can: it must be non-empty,
// without line breaks or NUL bytes.
const char *line_invalid(const uint8_t *payload, size_t len);

// Writes "<topic> <offset> <payload>\n" to `out`; returns 0 or -1 (errno set).
int line_write(FILE *out, const char *topic, size_t topic_len, uint64_t offset,
               const uint8_t *payload, size_t len);

#endif
