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

dc_config_status dc_config_string(const char *json, size_t len, const char *key, char **out) {
    jsmn_parser parser;
    jsmntok_t tokens[DC_CONFIG_MAX_TOKENS];
    jsmn_init(&parser);
    int count = jsmn_parse(&parser, json, len, tokens, DC_CONFIG_MAX_TOKENS);
    if (count < 1 || tokens[0].type != JSMN_OBJECT) {
        return DC_CONFIG_MALFORMED;
    }
    // Keys and values alternate among the object's direct children.
    for (int i = 1; i + 1 < count; i = skip(tokens, count, i + 1)) {
        if (token_is(json, &tokens[i], key)) {
            const jsmntok_t *value = &tokens[i + 1];
            if (value->type != JSMN_STRING) {
                return DC_CONFIG_MISSING;
            }
            *out = strndup(json + value->start, (size_t)(value->end - value->start));
            return *out ? DC_CONFIG_OK : DC_CONFIG_MALFORMED;
        }
    }
    return DC_CONFIG_MISSING;
}
