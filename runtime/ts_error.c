/* ts_error.c - names and strings of the project's error codes, from one table. */
#include "ts_error.h"

static const char *const ts_err_names[] = {
#define TS_ERR_NAME(name, str) #name,
    TS_ERRNO_MAP(TS_ERR_NAME)
#undef TS_ERR_NAME
};

static const char *const ts_err_strs[] = {
#define TS_ERR_STR(name, str) str,
    TS_ERRNO_MAP(TS_ERR_STR)
#undef TS_ERR_STR
};

const char *ts_err_name(ts_err err) {
    if ((unsigned)err >= TS_E__COUNT)
        return "UNKNOWN";
    return ts_err_names[err];
}

const char *ts_err_str(ts_err err) {
    if ((unsigned)err >= TS_E__COUNT)
        return "unknown error";
    return ts_err_strs[err];
}

int ts_err_is_retriable(ts_err err) {
    return err == TS_E_RETRY || err == TS_E_IO;
}
