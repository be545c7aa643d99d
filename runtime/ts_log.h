/* ts_log.h - structured log lines on stderr.
 *
 * One line per noteworthy thing: `ts=<iso time> level=<lvl> comp=<component>
 * msg="<text>"`, so both people and log shippers can read it. The level and
 * format are process settings (the only process-wide state in the runtime:
 * logging must work before any object exists).
 * Thread-safe: each line is written with one write(2).
 */
#ifndef TS_LOG_H
#define TS_LOG_H

typedef enum ts_log_level {
    TS_LOG_DEBUG = 0,
    TS_LOG_INFO,
    TS_LOG_WARN,
    TS_LOG_ERROR,
} ts_log_level;

/** Sets the lowest level printed (default INFO; env TASTESYNC_LOG_LEVEL). */
void ts_log_set_level(ts_log_level level);

/** Chooses JSON lines (non-zero) or key=value lines (zero, the default; env
 * TASTESYNC_LOG_FORMAT=json chooses JSON). */
void ts_log_set_json(int json);

/** Writes one log line. `comp` names the component and instance, e.g. "task storybook.events/3". */
void ts_log(ts_log_level level, const char *comp, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define ts_log_debug(comp, ...) ts_log(TS_LOG_DEBUG, comp, __VA_ARGS__)
#define ts_log_info(comp, ...) ts_log(TS_LOG_INFO, comp, __VA_ARGS__)
#define ts_log_warn(comp, ...) ts_log(TS_LOG_WARN, comp, __VA_ARGS__)
#define ts_log_error(comp, ...) ts_log(TS_LOG_ERROR, comp, __VA_ARGS__)

#endif
