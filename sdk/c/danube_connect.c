#include "danube_connect.h"

#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#include "jsmn.h"

// Whether token `t` of `json` is the string `s`.
static int token_is(const char *json, const jsmntok_t *t, const char *s) {
    size_t n = (size_t)(t->end - t->start);
    return t->type == JSMN_STRING && strlen(s) == n && strncmp(json + t->start, s, n) == 0;
}

// The index of the token after token `i` and everything nested in it.
static int skip(const jsmntok_t *tokens, int count, int i) {
    int pending = 1;
    while (pending > 0 && i < count) {
        pending += tokens[i].size - 1;
        i++;
    }
    return i;
}

// Finds the value of the top-level `key` of the JSON object `json`: its
// token in `*value` (in `tokens`, of DC_CONFIG_MAX_TOKENS).
static dc_config_status find(const char *json, size_t len, const char *key, jsmntok_t *tokens,
                             const jsmntok_t **value) {
    jsmn_parser parser;
    jsmn_init(&parser);
    int count = jsmn_parse(&parser, json, len, tokens, DC_CONFIG_MAX_TOKENS);
    if (count < 1 || tokens[0].type != JSMN_OBJECT) {
        return DC_CONFIG_MALFORMED;
    }
    // Keys and values alternate among the object's direct children.
    for (int i = 1; i + 1 < count; i = skip(tokens, count, i + 1)) {
        if (token_is(json, &tokens[i], key)) {
            *value = &tokens[i + 1];
            return DC_CONFIG_OK;
        }
    }
    return DC_CONFIG_MISSING;
}

dc_config_status dc_config_string(const char *json, size_t len, const char *key, char **out) {
    jsmntok_t tokens[DC_CONFIG_MAX_TOKENS];
    const jsmntok_t *value;
    dc_config_status status = find(json, len, key, tokens, &value);
    if (status != DC_CONFIG_OK) {
        return status;
    }
    if (value->type != JSMN_STRING) {
        return DC_CONFIG_MISSING;
    }
    *out = strndup(json + value->start, (size_t)(value->end - value->start));
    return *out ? DC_CONFIG_OK : DC_CONFIG_MALFORMED;
}

dc_config_status dc_config_u64(const char *json, size_t len, const char *key, unsigned long long *out) {
    jsmntok_t tokens[DC_CONFIG_MAX_TOKENS];
    const jsmntok_t *value;
    dc_config_status status = find(json, len, key, tokens, &value);
    if (status != DC_CONFIG_OK) {
        return status;
    }
    const char *digits = json + value->start;
    size_t n = (size_t)(value->end - value->start);
    if (value->type != JSMN_PRIMITIVE || n == 0 || n > 19) {
        return DC_CONFIG_MISSING;
    }
    unsigned long long number = 0;
    for (size_t i = 0; i < n; i++) {
        if (digits[i] < '0' || digits[i] > '9') {
            return DC_CONFIG_MISSING;
        }
        number = number * 10 + (unsigned long long)(digits[i] - '0');
    }
    *out = number;
    return DC_CONFIG_OK;
}
