/* ts_log.c - structured log lines (see ts_log.h). */
#include "ts_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int ts_log_level_min = -1; /* -1: not read from the environment yet */
static int ts_log_json_lines;

static const char *const ts_log_level_names[] = {"debug", "info", "warn", "error"};

void ts_log_set_level(ts_log_level level) { ts_log_level_min = (int)level; }

void ts_log_set_json(int json) { ts_log_json_lines = json; }

static int ts_log_level_from_env(void) {
    const char *env = getenv("TASTESYNC_LOG_LEVEL");
    if (env)
        for (int i = 0; i < 4; i++)
            if (strcasecmp(env, ts_log_level_names[i]) == 0)
                return i;
    return TS_LOG_INFO;
}

/* Appends `s` to `out` with quotes and backslashes escaped, so a message can
 * never break the line's structure. */
static size_t ts_log_escape(char *out, size_t cap, size_t at, const char *s) {
    for (; *s && at + 3 < cap; s++) {
        if (*s == '"' || *s == '\\') {
            out[at++] = '\\';
            out[at++] = *s;
        } else if (*s == '\n') {
            out[at++] = '\\';
            out[at++] = 'n';
        } else {
            out[at++] = *s;
        }
    }
    return at;
}

void ts_log(ts_log_level level, const char *comp, const char *fmt, ...) {
    if (ts_log_level_min < 0) {
        ts_log_level_min = ts_log_level_from_env();
        const char *format = getenv("TASTESYNC_LOG_FORMAT");
        if (format && strcasecmp(format, "json") == 0)
            ts_log_json_lines = 1;
    }
    if ((int)level < ts_log_level_min)
        return;

    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char when[96];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(tv.tv_usec / 1000));

    char line[4096];
    size_t at;
    if (ts_log_json_lines) {
        at = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"comp\":\"", when,
                              ts_log_level_names[level]);
        at = ts_log_escape(line, sizeof(line), at, comp ? comp : "");
        at += (size_t)snprintf(line + at, sizeof(line) - at, "\",\"msg\":\"");
        at = ts_log_escape(line, sizeof(line), at, msg);
        at += (size_t)snprintf(line + at, sizeof(line) - at, "\"}\n");
    } else {
        at = (size_t)snprintf(line, sizeof(line), "ts=%s level=%s comp=\"", when,
                              ts_log_level_names[level]);
        at = ts_log_escape(line, sizeof(line), at, comp ? comp : "");
        at += (size_t)snprintf(line + at, sizeof(line) - at, "\" msg=\"");
        at = ts_log_escape(line, sizeof(line), at, msg);
        at += (size_t)snprintf(line + at, sizeof(line) - at, "\"\n");
    }
    if (at >= sizeof(line))
        at = sizeof(line) - 1;
    ssize_t ignored = write(STDERR_FILENO, line, at);
    (void)ignored;
}
