/* ts_modelrun.h - running a model stream through a pipeline and checking the
 * outcome: the steps every whole-pipeline model test shares (the 100k stream,
 * scale-out, chaos). Blocking; test code only. */
#ifndef TS_MODELRUN_H
#define TS_MODELRUN_H

#include <stddef.h>

#include "ts_model.h"
#include "ts_testpipe.h"

/** Produces events [from, to) of `s`. @returns 0 or -1. */
int ts_modelrun_produce(ts_testpipe *tp, const ts_model_stream *s, size_t from, size_t to);

/** Waits until the group has committed every input topic of `families` to its
 * end, then the downstream stages' topics. @returns 0, or -1 naming the topic
 * on stderr. */
int ts_modelrun_wait(ts_testpipe *tp, unsigned families, double seconds);

/** Reads every view, row, output topic and DLQ and compares them with the
 * model of `families`; prints "<label>: compared N views, ... : D differences"
 * and the first differences. @returns the number of differences, or
 * (size_t)-1 when something could not be read. */
size_t ts_modelrun_compare(ts_testpipe *tp, ts_model *m, unsigned families, const char *label);

#endif
