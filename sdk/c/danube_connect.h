// A thin C layer for connectors built with `wit-bindgen c`: reading the
// configuration table the host hands over as JSON (with jsmn, Debian's
// libjsmn-dev). The generated bindings (`<world>.h`) are the contract and
// carry everything else; this adds only what every C connector would
// otherwise write itself. Copy it next to your connector
// (`danube-host new --lang c` does).
#ifndef DANUBE_CONNECT_H
#define DANUBE_CONNECT_H

#include <stddef.h>

// What `dc_config_string` found.
typedef enum {
    DC_CONFIG_OK,
    // The key is absent or its value is not a string.
    DC_CONFIG_MISSING,
    // The text is not a JSON object (or has more than DC_CONFIG_MAX_TOKENS tokens).
    DC_CONFIG_MALFORMED,
} dc_config_status;

#define DC_CONFIG_MAX_TOKENS 256

// Reads the top-level string `key` of the JSON object `json` (`len` bytes)
// into a new NUL-terminated string `*out` (free it). Escape sequences are
// kept as written.
dc_config_status dc_config_string(const char *json, size_t len, const char *key, char **out);

// Reads the top-level whole number `key` (0 or more) into `*out`;
// DC_CONFIG_MISSING when it is absent or not such a number.
dc_config_status dc_config_u64(const char *json, size_t len, const char *key, unsigned long long *out);

#endif
