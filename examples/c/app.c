// line-sink: appends every record as one line "<topic> <offset> <payload>" to
// a file. See README.md.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "danube_connect.h"
#include "line.h"
#include "sink.h"

typedef exports_danube_connect_sink_connector_connector_error_t connector_error_t;

static const char CONFIG_EXAMPLE[] =
    "[line_sink]\n"
    "# Topic to consume and subscription name.\n"
    "topic = \"/default/lines\"\n"
    "subscription = \"line-sink\"\n"
    "# File the lines are appended to; its directory must be granted in [sandbox] dirs.\n"
    "path = \"/var/lib/line-sink/lines.txt\"\n";

// The file `open` opened.
static FILE *out;

// Sets `err` to the error class `tag` with a message.
static void set_error(connector_error_t *err, uint8_t tag, const char *message) {
    err->tag = tag;
    sink_string_dup(&err->val.retryable, message);
}

void exports_danube_connect_sink_connector_describe(
    exports_danube_connect_sink_connector_connector_info_t *ret) {
    sink_string_dup(&ret->name, "line-sink");
    sink_string_dup(&ret->version, "0.1.0");
    sink_string_dup(&ret->description,
                    "Appends every record as one line \"<topic> <offset> <payload>\" to a file.");
    sink_string_dup(&ret->config_example, CONFIG_EXAMPLE);
}

bool exports_danube_connect_sink_connector_open(
    sink_string_t *config, exports_danube_connect_sink_connector_list_consumer_config_t *ret,
    connector_error_t *err) {
    char message[512];
    char *topic = NULL, *subscription = NULL, *path = NULL;
    const char *json = (const char *)config->ptr;
    bool ok = false;
    if (dc_config_string(json, config->len, "topic", &topic) != DC_CONFIG_OK ||
        dc_config_string(json, config->len, "path", &path) != DC_CONFIG_OK) {
        set_error(err, DANUBE_CONNECT_TYPES_CONNECTOR_ERROR_CONFIG,
                  "`topic` and `path` must be set to strings");
        goto done;
    }
    if (dc_config_string(json, config->len, "subscription", &subscription) != DC_CONFIG_OK) {
        subscription = strdup("line-sink");
    }
    out = fopen(path, "a");
    if (!out) {
        snprintf(message, sizeof message,
                 "cannot open `path` %s: %s; grant its directory in [sandbox] dirs", path,
                 strerror(errno));
        set_error(err, DANUBE_CONNECT_TYPES_CONNECTOR_ERROR_CONFIG, message);
        goto done;
    }
    ret->len = 1;
    ret->ptr = calloc(1, sizeof *ret->ptr);
    sink_string_dup(&ret->ptr[0].topic, topic);
    sink_string_dup(&ret->ptr[0].subscription, subscription);
    ret->ptr[0].subscription_type = DANUBE_CONNECT_TYPES_SUBSCRIPTION_TYPE_EXCLUSIVE;
    ret->ptr[0].expected_schema_subject.is_some = false;
    ret->ptr[0].decode_avro = true;
    ok = true;
done:
    free(topic);
    free(subscription);
    free(path);
    sink_string_free(config);
    return ok;
}

bool exports_danube_connect_sink_connector_process_batch(
    exports_danube_connect_sink_connector_list_sink_record_t *records,
    exports_danube_connect_sink_connector_list_record_failure_t *ret, connector_error_t *err) {
    bool ok = true;
    ret->len = 0;
    ret->ptr = calloc(records->len ? records->len : 1, sizeof *ret->ptr);
    for (size_t i = 0; i < records->len && ok; i++) {
        exports_danube_connect_sink_connector_sink_record_t *record = &records->ptr[i];
        const char *why = line_invalid(record->payload.ptr, record->payload.len);
        if (why) {
            exports_danube_connect_sink_connector_record_failure_t *failure = &ret->ptr[ret->len++];
            failure->index = (uint32_t)i;
            set_error(&failure->error, DANUBE_CONNECT_TYPES_CONNECTOR_ERROR_INVALID_DATA, why);
        } else if (line_write(out, (const char *)record->topic.ptr, record->topic.len,
                              record->offset, record->payload.ptr, record->payload.len) != 0) {
            ok = false;
        }
    }
    if (ok && (fflush(out) != 0 || fsync(fileno(out)) != 0)) {
        ok = false;
    }
    if (!ok) {
        char message[256];
        snprintf(message, sizeof message, "cannot write: %s", strerror(errno));
        exports_danube_connect_sink_connector_list_record_failure_free(ret);
        set_error(err, DANUBE_CONNECT_TYPES_CONNECTOR_ERROR_RETRYABLE, message);
    }
    exports_danube_connect_sink_connector_list_sink_record_free(records);
    return ok;
}

bool exports_danube_connect_sink_connector_health(sink_string_t *err) {
    (void)err;
    return true;
}

void exports_danube_connect_sink_connector_close(void) {
    if (out) {
        fclose(out);
        out = NULL;
    }
}
