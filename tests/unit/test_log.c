/* test_log.c - log lines: key=value by default, JSON lines on request, and a
 * message can never break a line's structure. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ts_log.h"

/* Runs one ts_log call with stderr redirected, returning what it wrote. */
static void capture(char *out, size_t cap, const char *comp, const char *msg) {
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    ts_log(TS_LOG_WARN, comp, "%s", msg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[1]);
    ssize_t n = read(fds[0], out, cap - 1);
    close(fds[0]);
    out[n > 0 ? n : 0] = '\0';
}

Test(log, key_value_lines_escape_quotes_and_newlines) {
    ts_log_set_level(TS_LOG_DEBUG);
    ts_log_set_json(0);
    char out[1024];
    capture(out, sizeof(out), "task x/1", "said \"hi\"\nand left");
    cr_assert(strstr(out, "level=warn comp=\"task x/1\" msg=\"said \\\"hi\\\"\\nand left\"\n"),
              "%s", out);
    cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1, "one line: %s", out);
}

Test(log, json_lines_parse_back) {
    ts_log_set_level(TS_LOG_DEBUG);
    ts_log_set_json(1);
    char out[1024];
    capture(out, sizeof(out), "source", "a \"quoted\" word\nand a newline");
    json_error_t err;
    json_t *line = json_loads(out, 0, &err);
    cr_assert_not_null(line, "%s: %s", out, err.text);
    cr_assert_str_eq(json_string_value(json_object_get(line, "level")), "warn");
    cr_assert_str_eq(json_string_value(json_object_get(line, "comp")), "source");
    cr_assert_str_eq(json_string_value(json_object_get(line, "msg")),
                     "a \"quoted\" word\nand a newline");
    json_decref(line);
}

Test(log, below_the_level_prints_nothing) {
    ts_log_set_level(TS_LOG_ERROR);
    ts_log_set_json(0);
    char out[256];
    capture(out, sizeof(out), "x", "quiet");
    cr_assert_str_eq(out, "");
}
