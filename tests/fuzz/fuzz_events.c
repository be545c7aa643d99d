/* fuzz_events.c - libFuzzer target over what the outside world feeds a task:
 * message bytes -> Avro decoding -> the processor of the input topic.
 *
 * The first byte picks the input topic (every processor of topology.yaml);
 * the rest is the message value. Decoding must reject garbage with a reason,
 * and a processor must reject or apply whatever decodes, never crash. State
 * accumulates across inputs (deeper paths) and is reset every few thousand
 * inputs to bound memory. LLVMFuzzerInitialize writes a seed corpus (every
 * processor's samples, encoded) into $TS_FUZZ_SEEDS when that is set. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ts_avro.h"
#include "ts_driver.h"
#include "ts_log.h"
#include "ts_topology.h"

#define TS_FUZZ_MAX_PROCS 16
#define TS_FUZZ_RESET_EVERY 5000

static ts_topology *ts_fuzz_topo;
static ts_driver *ts_fuzz_drivers[TS_FUZZ_MAX_PROCS];
static size_t ts_fuzz_n, ts_fuzz_inputs;

static void ts_fuzz_drivers_make(void) {
    ts_fuzz_n = 0;
    for (size_t i = 0; i < ts_fuzz_topo->n_processors && ts_fuzz_n < TS_FUZZ_MAX_PROCS; i++) {
        const ts_processor_conf *pc = &ts_fuzz_topo->processors[i];
        const ts_topic_conf *in = ts_topology_topic(ts_fuzz_topo, pc->input);
        const ts_processor_def *def = ts_processor_find(ts_processor_registry, pc->name);
        char *params = json_dumps(pc->params, JSON_COMPACT);
        ts_driver *d = def && in ? ts_driver_create(def, params, in->schema) : NULL;
        free(params);
        if (!d)
            abort(); /* the fuzzer must start from a working topology */
        if (in->key_field)
            ts_driver_set_key_field(d, in->key_field);
        ts_fuzz_drivers[ts_fuzz_n++] = d;
    }
}

/* Encodes every processor's sample events into files of `dir`. */
static void ts_fuzz_write_seeds(const char *dir) {
    mkdir(dir, 0755);
    ts_schemas *schemas = NULL;
    char err[512];
    if (ts_schemas_load(ts_fuzz_topo->schemas_dir, &schemas, err, sizeof(err)) != TS_OK)
        return;
    for (size_t i = 0; i < ts_fuzz_topo->n_processors; i++) {
        const ts_processor_conf *pc = &ts_fuzz_topo->processors[i];
        const ts_topic_conf *in = ts_topology_topic(ts_fuzz_topo, pc->input);
        FILE *f = pc->samples ? fopen(pc->samples, "r") : NULL;
        ts_encoder *enc = f ? ts_encoder_create(schemas, in->schema) : NULL;
        char line[8192];
        for (int n = 0; enc && fgets(line, sizeof(line), f); n++) {
            json_t *ev = json_loads(line, 0, NULL);
            char *bytes = NULL;
            size_t len = 0;
            if (ev && ts_encoder_from_json(enc, ev, &bytes, &len, err, sizeof(err)) == TS_OK) {
                char path[4096];
                snprintf(path, sizeof(path), "%s/%s-%03d", dir, pc->name, n);
                FILE *out = fopen(path, "wb");
                if (out) {
                    unsigned char which = (unsigned char)i;
                    fwrite(&which, 1, 1, out);
                    fwrite(bytes, 1, len, out);
                    fclose(out);
                }
            }
            free(bytes);
            json_decref(ev);
        }
        ts_encoder_destroy(enc);
        if (f)
            fclose(f);
    }
    ts_schemas_destroy(schemas);
}

/* Frees everything at exit, so LeakSanitizer's final check sees only real
 * leaks. */
__attribute__((destructor)) static void ts_fuzz_cleanup(void) {
    for (size_t i = 0; i < ts_fuzz_n; i++)
        ts_driver_destroy(ts_fuzz_drivers[i]);
    ts_fuzz_n = 0;
    ts_topology_destroy(ts_fuzz_topo);
    ts_fuzz_topo = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    ts_log_set_level(TS_LOG_ERROR);
    char err[1024];
    if (ts_topology_load(TS_SOURCE_DIR "/topology.yaml", &ts_fuzz_topo, err, sizeof(err)) !=
        TS_OK) {
        fprintf(stderr, "fuzz: %s\n", err);
        abort();
    }
    ts_fuzz_drivers_make();
    const char *seeds = getenv("TS_FUZZ_SEEDS");
    if (seeds)
        ts_fuzz_write_seeds(seeds);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || ts_fuzz_n == 0)
        return 0;
    if (++ts_fuzz_inputs % TS_FUZZ_RESET_EVERY == 0) {
        for (size_t i = 0; i < ts_fuzz_n; i++)
            ts_driver_destroy(ts_fuzz_drivers[i]);
        ts_fuzz_drivers_make();
    }
    ts_driver *d = ts_fuzz_drivers[data[0] % ts_fuzz_n];
    ts_err rc = ts_driver_send_bytes(d, "fuzz-key", data + 1, size - 1);
    /* Anything else than applied, rejected or undecodable is a bug. */
    if (rc != TS_OK && rc != TS_E_REJECT && rc != TS_E_DECODE)
        abort();
    return 0;
}
