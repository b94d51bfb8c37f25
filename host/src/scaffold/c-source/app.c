// counter-source: publishes the JSON records {"n": 0}, {"n": 1}, ... to one
// topic and resumes after the last number the broker acknowledged. See
// README.md.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "counter.h"
#include "danube_connect.h"
#include "source.h"

typedef exports_danube_connect_source_connector_connector_error_t connector_error_t;

static const char CONFIG_EXAMPLE[] =
    "[counter_source]\n"
    "# Topic to publish to.\n"
    "topic = \"/default/counter\"\n"
    "# How many numbers to publish (0..count-1); 0 = no end.\n"
    "count = 100\n";

// Offset stream of the numbers, and the state key of the last one committed.
static const char STREAM[] = "counter";
static const char COMMITTED[] = "committed";

static char *topic;
static counter_t counter;

static void set_error(connector_error_t *err, uint8_t tag, const char *message) {
    err->tag = tag;
    source_string_dup(&err->val.retryable, message);
}

// The last committed number from the state store, if any.
static bool committed(uint64_t *number) {
    source_string_t key;
    source_list_u8_t value;
    source_string_set(&key, COMMITTED);
    if (!danube_connect_state_get(&key, &value)) {
        return false;
    }
    char text[24] = {0};
    memcpy(text, value.ptr, value.len < sizeof text - 1 ? value.len : sizeof text - 1);
    source_list_u8_free(&value);
    *number = strtoull(text, NULL, 10);
    return true;
}

void exports_danube_connect_source_connector_describe(
    exports_danube_connect_source_connector_connector_info_t *ret) {
    source_string_dup(&ret->name, "counter-source");
    source_string_dup(&ret->version, "0.1.0");
    source_string_dup(&ret->description,
                      "Publishes {\"n\": 0}, {\"n\": 1}, ... and resumes after the last "
                      "acknowledged number.");
    source_string_dup(&ret->config_example, CONFIG_EXAMPLE);
}

bool exports_danube_connect_source_connector_open(
    source_string_t *config, exports_danube_connect_source_connector_list_producer_config_t *ret,
    connector_error_t *err) {
    const char *json = (const char *)config->ptr;
    unsigned long long count = 0;
    bool ok = false;
    free(topic);
    topic = NULL;
    if (dc_config_string(json, config->len, "topic", &topic) != DC_CONFIG_OK) {
        set_error(err, DANUBE_CONNECT_TYPES_CONNECTOR_ERROR_CONFIG, "`topic` must be set to a string");
        goto done;
    }
    if (dc_config_u64(json, config->len, "count", &count) == DC_CONFIG_MALFORMED) {
        set_error(err, DANUBE_CONNECT_TYPES_CONNECTOR_ERROR_CONFIG, "the configuration is not a table");
        goto done;
    }
    uint64_t last;
    counter = (counter_t){.count = count, .next = committed(&last) ? last + 1 : 0};
    ret->len = 1;
    ret->ptr = calloc(1, sizeof *ret->ptr);
    source_string_dup(&ret->ptr[0].topic, topic);
    ret->ptr[0].partitions = 0;
    ret->ptr[0].reliable = true;
    ret->ptr[0].schema_subject.is_some = false;
    ok = true;
done:
    source_string_free(config);
    return ok;
}

bool exports_danube_connect_source_connector_poll(
    uint32_t max, uint32_t timeout_ms,
    exports_danube_connect_source_connector_list_source_record_t *ret, connector_error_t *err) {
    (void)err;
    uint64_t *numbers = calloc(max ? max : 1, sizeof *numbers);
    size_t taken = counter_take(&counter, max, numbers);
    if (taken == 0) {
        // Nothing more will come: wait, so that the host does not spin.
        struct timespec wait = {.tv_sec = timeout_ms / 1000, .tv_nsec = (timeout_ms % 1000) * 1000000L};
        nanosleep(&wait, NULL);
    }
    ret->len = taken;
    ret->ptr = calloc(taken ? taken : 1, sizeof *ret->ptr);
    for (size_t i = 0; i < taken; i++) {
        danube_connect_types_source_record_t *record = &ret->ptr[i];
        char payload[40];
        int len = snprintf(payload, sizeof payload, "{\"n\": %llu}", (unsigned long long)numbers[i]);
        source_string_dup(&record->topic, topic);
        record->payload.len = (size_t)len;
        record->payload.ptr = malloc((size_t)len);
        memcpy(record->payload.ptr, payload, (size_t)len);
        record->key.is_some = false;
        record->offset.is_some = true;
        source_string_dup(&record->offset.val.stream, STREAM);
        record->offset.val.position = numbers[i];
    }
    free(numbers);
    return true;
}

bool exports_danube_connect_source_connector_commit(
    exports_danube_connect_source_connector_list_offset_t *offsets, connector_error_t *err) {
    bool ok = true;
    for (size_t i = 0; i < offsets->len && ok; i++) {
        danube_connect_types_offset_t *offset = &offsets->ptr[i];
        if (offset->stream.len != strlen(STREAM) ||
            memcmp(offset->stream.ptr, STREAM, offset->stream.len) != 0) {
            continue;
        }
        char text[24];
        int len = snprintf(text, sizeof text, "%llu", (unsigned long long)offset->position);
        source_string_t key, why;
        source_list_u8_t value = {.ptr = (uint8_t *)text, .len = (size_t)len};
        source_string_set(&key, COMMITTED);
        if (!danube_connect_state_put(&key, &value, &why)) {
            char message[256];
            snprintf(message, sizeof message, "cannot store the position: %.*s", (int)why.len,
                     (const char *)why.ptr);
            source_string_free(&why);
            set_error(err, DANUBE_CONNECT_TYPES_CONNECTOR_ERROR_RETRYABLE, message);
            ok = false;
        }
    }
    exports_danube_connect_source_connector_list_offset_free(offsets);
    return ok;
}

bool exports_danube_connect_source_connector_health(source_string_t *err) {
    (void)err;
    return true;
}

void exports_danube_connect_source_connector_close(void) {}
