/* bench_pipeline.c - the runtime as a whole: throughput, latency, reads, size.
 *
 * `tastesync run benchmarks/topology.yaml` runs as a child process against the
 * run's servers (addresses by environment, as tests/support/ts_testpipe does).
 * 1. Throughput: the whole pre-encoded stream is produced before the runtime
 *    starts; the clock runs from its first task start ("started at" in its log,
 *    polled every 2 ms) until the group's committed offsets reach the end of
 *    every input topic and then of the second-stage topics. A commit follows
 *    the batch's views, rows and output events being acknowledged, so this is
 *    "last view, row and output acknowledged" with every guarantee on.
 * 2. Latency: probe events (BookCreated of a new user and book) are produced
 *    at a fixed rate; a subscriber to Redis keyspace notifications records when
 *    each probe's `storybook:book:<id>` view is written, i.e. readable; the
 *    machine's busy cores while each rate is offered, split per process.
 * 3. Reads: 4 client threads read a user's book list, once as the view (one
 *    GET) and once computed from PostgreSQL by SQL as the old apps did.
 * 4. Size: the runtime's RSS (peak sampled during the run, and VmHWM), and the
 *    state folder's bytes per million RocksDB keys after a clean stop.
 */
#include <dirent.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "ts_httpget.h"
#include "ts_kconf.h"
#include "ts_redis_url.h"
#include "ts_testpipe.h"

typedef struct bench_rt {
    pid_t pid;
    int http_port; /* its /metrics, for the latency phase's stages; -1: none */
    char log[256];
    char state[256];
} bench_rt;

static json_t *bench_section(bench_ctx *b) { return json_object_get(b->results, "pipeline"); }

/* ---- the runtime process ------------------------------------------------------ */

static int bench_rt_start(bench_ctx *b, bench_rt *rt) {
    snprintf(rt->log, sizeof(rt->log), "%s/runtime.log", b->dir);
    snprintf(rt->state, sizeof(rt->state), "%s/state", b->dir);
    /* Its HTTP endpoint on a free port, through the environment the child
     * inherits (the topology says 0: none). */
    rt->http_port = ts_httpget_free_port();
    char port[16];
    snprintf(port, sizeof(port), "%d", rt->http_port > 0 ? rt->http_port : 0);
    setenv("TASTESYNC_HTTP_PORT", port, 1);
    pid_t pid = bench_spawn_runtime(b, TS_SOURCE_DIR "/benchmarks/topology.yaml", BENCH_GROUP,
                                    rt->state, rt->log, NULL);
    unsetenv("TASTESYNC_HTTP_PORT");
    if (pid < 0)
        return -1;
    rt->pid = pid;
    return 0;
}

/* Sends `sig` and waits up to 60 s (then SIGKILL). @returns the exit status. */
static int bench_rt_stop(bench_rt *rt, int sig) {
    if (rt->pid <= 0)
        return -1;
    kill(rt->pid, sig);
    int status = 0;
    double deadline = bench_now() + 60;
    while (waitpid(rt->pid, &status, WNOHANG) == 0) {
        if (bench_now() > deadline) {
            kill(rt->pid, SIGKILL);
            waitpid(rt->pid, &status, 0);
            break;
        }
        usleep(20000);
    }
    rt->pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int bench_rt_alive(bench_rt *rt) {
    int status;
    if (rt->pid > 0 && waitpid(rt->pid, &status, WNOHANG) == rt->pid) {
        fprintf(stderr, "bench: the runtime exited (status %d); see %s\n", status, rt->log);
        rt->pid = 0;
    }
    return rt->pid > 0;
}

static int bench_file_has(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/* A field of /proc/<pid>/status in kB, or -1. */
static long bench_proc_kb(pid_t pid, const char *field) {
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    size_t fl = strlen(field);
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, field, fl) && line[fl] == ':')
            v = strtol(line + fl + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

/* Fields of /proc/<pid>/stat: the parent's pid, and user + system CPU
 * seconds of the process itself and of its waited-for children. @returns 0,
 * or -1 when the process is gone. */
static int bench_proc_stat(pid_t pid, pid_t *ppid, double *cpu, double *children_cpu) {
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    int parent = 0;
    unsigned long ut = 0, st = 0;
    long cut = 0, cst = 0;
    /* After ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime stime cutime cstime (fields 3..17). */
    if (!p || sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %ld %ld",
                     &parent, &ut, &st, &cut, &cst) != 5)
        return -1;
    double tick = (double)sysconf(_SC_CLK_TCK);
    *ppid = parent;
    *cpu = (double)(ut + st) / tick;
    *children_cpu = (double)(cut + cst) / tick;
    return 0;
}

/* User + system CPU seconds of `pid`, or -1. */
static double bench_proc_cpu(pid_t pid) {
    pid_t ppid;
    double cpu, children;
    return bench_proc_stat(pid, &ppid, &cpu, &children) == 0 ? cpu : -1;
}

/* CPU seconds of `root` and of every process under it (PostgreSQL's
 * backends and workers), those that ended included (their time moves to
 * `root`'s children time when it waits for them). */
static double bench_tree_cpu(pid_t root) {
    pid_t ppid;
    double cpu, children, total = 0;
    if (bench_proc_stat(root, &ppid, &cpu, &children) != 0)
        return -1;
    total = cpu + children;
    DIR *d = opendir("/proc");
    struct dirent *de;
    while (d && (de = readdir(d))) {
        pid_t pid = (pid_t)strtol(de->d_name, NULL, 10);
        if (pid <= 0 || pid == root || bench_proc_stat(pid, &ppid, &cpu, &children) != 0)
            continue;
        double own = cpu;
        for (int depth = 0; depth < 8 && ppid > 1 && ppid != root; depth++)
            if (bench_proc_stat(ppid, &ppid, &cpu, &children) != 0)
                ppid = 0;
        if (ppid == root)
            total += own;
    }
    if (d)
        closedir(d);
    return total;
}

/* CPU seconds so far of each process sharing the machine's cores in the
 * end-to-end phase. */
typedef struct bench_cpu {
    double runtime, postgres, redis, self;
    double machine; /* busy CPU seconds of all cores, from /proc/stat */
} bench_cpu;

/* Seconds all cores spent busy so far (everything but idle and iowait). */
static double bench_machine_busy(void) {
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    int n = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                       &v[3], &v[4], &v[5], &v[6], &v[7])
              : 0;
    if (f)
        fclose(f);
    if (n != 8)
        return -1;
    /* user nice system idle iowait irq softirq steal: steal is time the
     * hypervisor gave to others, not work done here. */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / (double)sysconf(_SC_CLK_TCK);
}

static bench_cpu bench_cpu_now(const bench_ctx *b, pid_t runtime) {
    return (bench_cpu){bench_proc_cpu(runtime), bench_tree_cpu(ts_servers_pg_pid(b->srv)),
                       bench_proc_cpu(ts_servers_redis_pid(b->srv)), bench_proc_cpu(getpid()),
                       bench_machine_busy()};
}

/* ---- committed offsets -------------------------------------------------------- */

/* An assign-only consumer of the runtime's group that only asks for committed
 * offsets (one for the whole run: the 2.0.2 mock cluster dislikes many). */
static rd_kafka_t *bench_reader(bench_ctx *b) {
    char err[512];
    rd_kafka_conf_t *conf = ts_kconf_create(ts_cluster_bootstraps(b->cluster), NULL, err,
                                            sizeof(err));
    if (!conf)
        return NULL;
    rd_kafka_conf_set(conf, "group.id", BENCH_GROUP, NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk)
        rd_kafka_conf_destroy(conf);
    return rk;
}

/* @returns 1 when every partition of `topic` is committed up to its end. */
static int bench_committed(bench_ctx *b, rd_kafka_t *rk, const char *topic) {
    const ts_topic_conf *tc = ts_topology_topic(b->topo, topic);
    int64_t committed, end;
    int done = 0;
    ts_testpipe_group_progress(rk, topic, tc->partitions, &committed, &end, &done);
    return done;
}

static const char *const bench_stage1[] = {"storybook.events", "user.events",
                                           "inventory.events", "beacon.detections"};
static const char *const bench_stage2[] = {"customer-events", "beacon.store-visits"};

/* Waits until the group has committed everything (first stage, then second).
 * Samples the runtime's RSS meanwhile. @returns 0 or -1 on timeout/exit. */
static int bench_wait_all(bench_ctx *b, rd_kafka_t *rk, bench_rt *rt, double timeout,
                          long *rss_peak_kb) {
    double deadline = bench_now() + timeout;
    size_t stage = 0;
    while (bench_now() < deadline && bench_rt_alive(rt)) {
        long rss = bench_proc_kb(rt->pid, "VmRSS");
        if (rss_peak_kb && rss > *rss_peak_kb)
            *rss_peak_kb = rss;
        int done = 1;
        const char *const *topics = stage == 0 ? bench_stage1 : bench_stage2;
        size_t n = stage == 0 ? 4 : 2;
        for (size_t i = 0; i < n && done; i++)
            done = bench_committed(b, rk, topics[i]);
        if (done && ++stage == 2)
            return 0;
        if (!done)
            usleep(50000);
    }
    return -1;
}

/* ---- perf --------------------------------------------------------------------- */

static pid_t bench_perf_start(const char *out, pid_t target) {
    char p[32];
    snprintf(p, sizeof(p), "%d", (int)target);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGINT);
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        /* DWARF unwinding: the libraries have no frame pointers, and without
         * them the time spent in libc and jansson has no caller. */
        /* TS_BENCH_PERF_EVENT samples another event instead of CPU time
         * (e.g. page-faults, to find who touches fresh memory). */
        const char *event = getenv("TS_BENCH_PERF_EVENT");
        execlp("perf", "perf", "record", "-q", "-F", "199", "--call-graph", "dwarf,16384", "-e",
               event ? event : "cpu-clock", "-p", p, "-o", out, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void bench_perf_stop(pid_t pid) {
    if (pid <= 0)
        return;
    kill(pid, SIGINT);
    int status;
    waitpid(pid, &status, 0);
}

/* ---- 1. throughput ------------------------------------------------------------ */

static int bench_preload(bench_ctx *b) {
    rd_kafka_t *prod = bench_producer(b, 50);
    if (!prod)
        return -1;
    double t0 = bench_now();
    for (size_t i = 0; i < b->n_msgs; i++) {
        const bench_msg *m = &b->msgs[i];
        while (rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(m->topic),
                                 RD_KAFKA_V_KEY(m->key, strlen(m->key)),
                                 RD_KAFKA_V_VALUE(m->val, m->len),
                                 RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(prod, 10);
        rd_kafka_poll(prod, 0);
    }
    int ok = rd_kafka_flush(prod, 300000) == RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_destroy(prod);
    double dt = bench_now() - t0;
    fprintf(stderr, "bench: pre-loaded %zu events in %.1f s\n", b->n_msgs, dt);
    json_object_set_new(bench_section(b), "preload", bench_rate(b->n_msgs, dt));
    return ok ? 0 : -1;
}

/* The processes a phase's busy CPU is split over, in bench_cpu_split's order. */
static const char *const bench_cpu_names[] = {"runtime", "postgres", "redis", "tsbench", "other"};
enum { BENCH_CPU_PARTS = 5 };

/* Where the machine's cores went between `before` and `after` (`seconds`,
 * `events` events): each process's CPU seconds in `used` (the rest of the
 * machine's busy time as "other"), and {cpu_us_per_event, cpu_cores} objects
 * set on `into`. @returns the sum of `used`. */
static double bench_cpu_split(const bench_cpu *before, const bench_cpu *after, double seconds,
                              size_t events, double used[BENCH_CPU_PARTS], json_t *into) {
    used[0] = after->runtime - before->runtime;
    used[1] = after->postgres - before->postgres;
    used[2] = after->redis - before->redis;
    used[3] = after->self - before->self;
    double busy = after->machine - before->machine;
    used[4] = busy - used[0] - used[1] - used[2] - used[3];
    if (used[4] < 0)
        used[4] = 0; /* clock ticks are coarse: never below nothing */
    json_t *per_event = json_object(), *cores = json_object();
    double total = 0;
    for (size_t i = 0; i < BENCH_CPU_PARTS; i++) {
        total += used[i];
        json_object_set_new(per_event, bench_cpu_names[i],
                            json_real(round(used[i] * 1e7 / (double)events) / 10));
        json_object_set_new(cores, bench_cpu_names[i],
                            json_real(round(used[i] / seconds * 100) / 100));
    }
    json_object_set_new(per_event, "total", json_real(round(total * 1e7 / (double)events) / 10));
    json_object_set_new(cores, "total", json_real(round(total / seconds * 100) / 100));
    json_object_set_new(cores, "machine_busy", json_real(round(busy / seconds * 100) / 100));
    json_object_set_new(into, "cpu_us_per_event", per_event);
    json_object_set_new(into, "cpu_cores", cores);
    return total;
}

/* The end-to-end phase's split as rows: CPU per event and cores used by each
 * process (the runtime's own figure is the row above). */
static void bench_cpu_report(bench_ctx *b, json_t *tp, const bench_cpu *before,
                             const bench_cpu *after, double seconds) {
    const char *notes[] = {"", "postmaster and backends", "redis-server",
                           "this process: the mock Kafka cluster",
                           "the rest of the machine's busy time (kernel threads, ...)"};
    double used[BENCH_CPU_PARTS];
    double total = bench_cpu_split(before, after, seconds, b->n_msgs, used, tp);
    for (size_t i = 1; i < BENCH_CPU_PARTS; i++) {
        char name[64], note[128];
        snprintf(name, sizeof(name), "%s_cpu_per_event", bench_cpu_names[i]);
        snprintf(note, sizeof(note), "%s, %.2f cores", notes[i], used[i] / seconds);
        bench_row(b, "pipeline", name, used[i] * 1e6 / (double)b->n_msgs, "us", note);
    }
    char note[128];
    snprintf(note, sizeof(note), "all of the machine's busy time: %.2f of %ld cores",
             total / seconds, sysconf(_SC_NPROCESSORS_ONLN));
    bench_row(b, "pipeline", "all_cpu_per_event", total * 1e6 / (double)b->n_msgs, "us", note);
}

static int bench_throughput(bench_ctx *b, bench_rt *rt, rd_kafka_t *rk) {
    double t_exec = bench_now();
    if (bench_rt_start(b, rt) != 0)
        return -1;
    double t0 = 0;
    while (bench_now() - t_exec < 120 && bench_rt_alive(rt)) {
        if (bench_file_has(rt->log, "started at")) {
            t0 = bench_now();
            break;
        }
        usleep(2000);
    }
    if (t0 == 0) {
        fprintf(stderr, "bench: the runtime never started a task; see %s\n", rt->log);
        return -1;
    }
    pid_t perf = b->perf_out ? bench_perf_start(b->perf_out, rt->pid) : 0;
    bench_cpu before = bench_cpu_now(b, rt->pid);
    long rss_peak = 0;
    int rc = bench_wait_all(b, rk, rt, 120 + (double)b->n_msgs / 1000, &rss_peak);
    double t1 = bench_now();
    bench_perf_stop(perf);
    if (rc != 0) {
        fprintf(stderr, "bench: the stream was not processed in time; see %s\n", rt->log);
        return -1;
    }
    bench_cpu after = bench_cpu_now(b, rt->pid);
    double cpu = after.runtime - before.runtime;
    json_t *tp = bench_rate(b->n_msgs, t1 - t0);
    double per_s = json_real_value(json_object_get(tp, "per_s"));
    json_object_set_new(tp, "startup_s", json_real(round((t0 - t_exec) * 1000) / 1000));
    json_object_set_new(tp, "runtime_cpu_s", json_real(round(cpu * 100) / 100));
    json_object_set_new(tp, "runtime_cpu_us_per_event",
                        json_real(round(cpu * 1e6 / (double)b->n_msgs * 10) / 10));
    json_object_set_new(tp, "rss_peak_mb", json_real(round((double)rss_peak / 1024 * 10) / 10));
    json_object_set_new(tp, "rss_hwm_mb",
                        json_real(round((double)bench_proc_kb(rt->pid, "VmHWM") / 1024 * 10) /
                                  10));
    double slow = json_real_value(json_object_get(
        json_object_get(json_object_get(b->results, "components"), "slowest"), "per_s"));
    json_object_set_new(tp, "of_slowest_component",
                        json_real(slow > 0 ? round(per_s / slow * 1000) / 1000 : 0));
    json_object_set_new(bench_section(b), "end_to_end", tp);
    char note[160];
    snprintf(note, sizeof(note), "%zu mixed events, first consume -> last commit (startup %.1f s)",
             b->n_msgs, t0 - t_exec);
    bench_row(b, "pipeline", "end_to_end", per_s, "events/s", note);
    if (slow > 0) /* not with --only throughput: no component measured */
        bench_row(b, "pipeline", "end_to_end_of_slowest_component", per_s / slow * 100, "%",
                  json_string_value(json_object_get(
                      json_object_get(json_object_get(b->results, "components"), "slowest"),
                      "name")));
    bench_row(b, "pipeline", "runtime_cpu_per_event", cpu * 1e6 / (double)b->n_msgs, "us",
              "user+system CPU of the runtime process");
    bench_row(b, "pipeline", "runtime_rss_peak", (double)rss_peak / 1024, "MiB",
              "sampled every ~50 ms during the run");
    bench_cpu_report(b, tp, &before, &after, t1 - t0);
    return 0;
}

/* ---- 2. latency ----------------------------------------------------------------- */

typedef struct bench_lat {
    redisContext *sub;
    _Atomic int64_t *arrived_ns; /* per probe, 0 until its view is written */
    size_t n;
    atomic_size_t count;
} bench_lat;

#define BENCH_LAT_PREFIX "__keyspace@0__:storybook:book:lat-"

static void *bench_lat_thread(void *arg) {
    bench_lat *l = arg;
    size_t plen = strlen(BENCH_LAT_PREFIX);
    for (;;) {
        redisReply *r = NULL;
        if (redisGetReply(l->sub, (void **)&r) != REDIS_OK || !r)
            break;
        int stop = 0;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
            r->element[2]->type == REDIS_REPLY_STRING) {
            int64_t t = bench_now_ns();
            const char *ch = r->element[2]->str;
            if (strncmp(ch, BENCH_LAT_PREFIX, plen) == 0) {
                if (!strcmp(ch + plen, "stop")) {
                    stop = 1;
                } else {
                    size_t i = strtoul(ch + plen, NULL, 10);
                    int64_t zero = 0;
                    if (i < l->n && atomic_compare_exchange_strong(&l->arrived_ns[i], &zero, t))
                        atomic_fetch_add(&l->count, 1);
                }
            }
        }
        freeReplyObject(r);
        if (stop)
            break;
    }
    return NULL;
}

/* Asks for `topic`'s metadata (and so connects) within 5 s. @returns 0 or -1 (logged). */
static int bench_topic_known(rd_kafka_t *prod, const char *topic) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(prod, topic, NULL);
    rd_kafka_resp_err_t err = rkt ? rd_kafka_metadata(prod, 0, rkt, &md, 5000)
                                  : rd_kafka_last_error();
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (err)
        fprintf(stderr, "bench: metadata of %s: %s\n", topic, rd_kafka_err2str(err));
    return err ? -1 : 0;
}

/* Encodes probe `i`: a new book of a new user, so its view appears once. */
static int bench_probe(bench_ctx *b, ts_encoder *enc, size_t i, bench_msg *m) {
    json_t *ev = json_pack("{s:{s:s%, s:s%, s:s%, s:s%, s:s}}", "BookCreated", "event_id", "", 0,
                           "book_id", "", 0, "user_id", "", 0, "title", "", 0, "created_at",
                           "2026-03-01T00:00:00.000Z");
    char s[64];
    json_t *body = json_object_get(ev, "BookCreated");
    snprintf(s, sizeof(s), "lat-ev-%zu", i);
    json_object_set_new(body, "event_id", json_string(s));
    snprintf(s, sizeof(s), "lat-%zu", i);
    json_object_set_new(body, "book_id", json_string(s));
    snprintf(s, sizeof(s), "lat-user-%zu", i);
    json_object_set_new(body, "user_id", json_string(s));
    snprintf(s, sizeof(s), "Latency probe %zu", i);
    json_object_set_new(body, "title", json_string(s));
    char err[256];
    int rc = ts_encoder_from_json(enc, ev, &m->val, &m->len, err, sizeof(err)) == TS_OK ? 0 : -1;
    if (rc)
        fprintf(stderr, "bench: probe: %s\n", err);
    snprintf(s, sizeof(s), "lat-user-%zu", i);
    m->key = strdup(s);
    m->topic = BENCH_PROBE_TOPIC;
    json_decref(ev);
    (void)b;
    return rc;
}

static int bench_latency(bench_ctx *b, const bench_rt *rt) {
    static const double rates[] = {1000, 10000, 50000};
    double secs[] = {10, 10, 6};
    if (b->short_mode) {
        secs[0] = 2;
        secs[1] = 1;
        secs[2] = 0.4;
    }
    size_t total = 0, counts[3];
    for (int r = 0; r < 3; r++)
        total += counts[r] = (size_t)(rates[r] * secs[r]);

    char err[256];
    redisContext *cmd = ts_redis_connect_sync(b->redis_url, err, sizeof(err));
    bench_lat l = {0};
    l.sub = ts_redis_connect_sync(b->redis_url, err, sizeof(err));
    if (!cmd || !l.sub) {
        fprintf(stderr, "bench: redis: %s\n", err);
        redisFree(cmd);
        redisFree(l.sub);
        return -1;
    }
    freeReplyObject(redisCommand(cmd, "CONFIG SET notify-keyspace-events K$g"));
    redisReply *r = redisCommand(l.sub, "PSUBSCRIBE %s*", BENCH_LAT_PREFIX);
    freeReplyObject(r);
    l.n = total;
    l.arrived_ns = calloc(total, sizeof(*l.arrived_ns));
    int64_t *sent_ns = calloc(total, sizeof(*sent_ns));
    bench_msg *probes = calloc(total, sizeof(*probes));
    ts_encoder *enc = ts_encoder_create(b->schemas, BENCH_PROBE_TOPIC);
    int rc = enc ? 0 : -1;
    for (size_t i = 0; i < total && rc == 0; i++)
        rc = bench_probe(b, enc, i, &probes[i]);
    ts_encoder_destroy(enc);
    /* librdkafka's default linger (5 ms). With 1 ms the probes travel as
     * message sets of one record, and the mock broker returns one message set
     * per partition per fetch (a real broker returns all that fit), so at
     * 10K/s the fetches, not the runtime, set the pace: p99 15 s vs 4 s. */
    rd_kafka_t *prod = rc == 0 ? bench_producer(b, 5) : NULL;
    /* The topic's metadata before the clock: when the first probe came a
     * few ms after the producer was created (not at once), the first second
     * of probes waited together for ~1 s (1K/s p50 8 ms but p99 930 ms);
     * with the metadata asked for first, they do not. */
    if (prod && bench_topic_known(prod, BENCH_PROBE_TOPIC) != 0)
        rc = -1;
    pthread_t th;
    int started = prod && pthread_create(&th, NULL, bench_lat_thread, &l) == 0;
    if (!started)
        rc = -1;

    json_t *out = json_object();
    size_t base = 0;
    for (int ri = 0; ri < 3 && rc == 0; ri++) {
        size_t n = counts[ri];
        char *scraped = bench_stages_scrape(rt->http_port);
        bench_cpu cpu0 = bench_cpu_now(b, rt->pid);
        double t0 = bench_now();
        for (size_t k = 0; k < n; k++) {
            size_t i = base + k;
            /* Paced on a schedule: never ahead of it, catching up if behind. */
            double due = t0 + (double)k / rates[ri];
            double wait = due - bench_now();
            if (wait > 0.0005) {
                struct timespec ts = {0, (long)(wait * 1e9)};
                nanosleep(&ts, NULL);
            }
            sent_ns[i] = bench_now_ns();
            while (rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(probes[i].topic),
                                     RD_KAFKA_V_KEY(probes[i].key, strlen(probes[i].key)),
                                     RD_KAFKA_V_VALUE(probes[i].val, probes[i].len),
                                     RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(prod, 1);
            rd_kafka_poll(prod, 0);
        }
        double produced = bench_now() - t0;
        /* The cores the offered rate costs, while it is offered (not the
         * drain of a backlog after it). */
        bench_cpu cpu1 = bench_cpu_now(b, rt->pid);
        rd_kafka_flush(prod, 30000);
        /* Wait for this rate's views (a backlog drains at the runtime's speed). */
        size_t want = base + n;
        double deadline = bench_now() + (b->short_mode ? 60 : 180);
        while (atomic_load(&l.count) < want && bench_now() < deadline)
            usleep(10000);
        char *rescraped = bench_stages_scrape(rt->http_port);
        char stages_note[256];
        json_t *stages = bench_stages_between(scraped, rescraped, BENCH_PROBE_PROCESSOR,
                                              stages_note, sizeof(stages_note));
        free(scraped);
        free(rescraped);
        double *lat = malloc((n ? n : 1) * sizeof(*lat));
        size_t got = 0;
        /* TS_BENCH_LATENCY_DUMP=<file>: every probe as "rate sent_ns
         * latency_us" (-1: never seen), to tell stalls from spread. */
        const char *dump_path = getenv("TS_BENCH_LATENCY_DUMP");
        FILE *dump = dump_path ? fopen(dump_path, ri == 0 ? "w" : "a") : NULL;
        for (size_t k = 0; k < n; k++) {
            int64_t a = atomic_load(&l.arrived_ns[base + k]);
            if (a)
                lat[got++] = (double)(a - sent_ns[base + k]) / 1000.0;
            if (dump)
                fprintf(dump, "%.0f %" PRId64 " %.1f\n", rates[ri], sent_ns[base + k],
                        a ? (double)(a - sent_ns[base + k]) / 1000.0 : -1.0);
        }
        if (dump)
            fclose(dump);
        json_t *p = bench_percentiles(lat, got);
        free(lat);
        json_object_set_new(p, "offered_per_s", json_real(rates[ri]));
        json_object_set_new(p, "achieved_per_s", json_real(round((double)n / produced)));
        json_object_set_new(p, "missing", json_integer((json_int_t)(n - got)));
        double used[BENCH_CPU_PARTS];
        double cores = bench_cpu_split(&cpu0, &cpu1, produced, n, used, p) / produced;
        char name[64], note[128];
        snprintf(name, sizeof(name), "%.0f", rates[ri]);
        json_object_set(out, name, p);
        snprintf(note, sizeof(note),
                 "%zu probes, %zu views never seen; p50 %.2f p95 %.2f max %.1f ms", n, n - got, json_real_value(json_object_get(p, "p50_ms")),
                 json_real_value(json_object_get(p, "p95_ms")),
                 json_real_value(json_object_get(p, "max_ms")));
        snprintf(name, sizeof(name), "event_to_view_p99@%.0fk/s", rates[ri] / 1000);
        bench_row(b, "latency", name, json_real_value(json_object_get(p, "p99_ms")), "ms", note);
        snprintf(name, sizeof(name), "event_to_view_p99.9@%.0fk/s", rates[ri] / 1000);
        bench_row(b, "latency", name, json_real_value(json_object_get(p, "p999_ms")), "ms", "");
        snprintf(name, sizeof(name), "cpu_cores@%.0fk/s", rates[ri] / 1000);
        snprintf(note, sizeof(note),
                 "runtime %.2f, postgres %.2f, redis %.2f, mock Kafka (tsbench) %.2f, other %.2f",
                 used[0] / produced, used[1] / produced, used[2] / produced, used[3] / produced,
                 used[4] / produced);
        bench_row(b, "latency", name, cores, "cores", note);
        /* A rate whose batches the runtime did not time (no scrape, or no
         * batch acknowledged yet) gets no row rather than a 0. */
        json_t *wait = json_object_get(json_object_get(stages, "input_wait"), "mean_ms");
        if (wait) {
            snprintf(name, sizeof(name), "input_wait@%.0fk/s", rates[ri] / 1000);
            bench_row(b, "latency", name, json_real_value(wait), "ms", stages_note);
        }
        if (stages)
            json_object_set_new(p, "runtime_stages", stages);
        json_decref(p);
        base += n;
    }
    json_object_set_new(bench_section(b), "event_to_view_latency", out);

    if (started) {
        /* A publish on the watched pattern ends the subscriber. */
        freeReplyObject(redisCommand(cmd, "PUBLISH %sstop end", BENCH_LAT_PREFIX));
        pthread_join(th, NULL);
    }
    if (prod) {
        rd_kafka_flush(prod, 10000);
        rd_kafka_destroy(prod);
    }
    for (size_t i = 0; i < total; i++) {
        free(probes[i].key);
        free(probes[i].val);
    }
    free(probes);
    free(sent_ns);
    free(l.arrived_ns);
    redisFree(l.sub);
    redisFree(cmd);
    return rc;
}

/* ---- 3. reads ------------------------------------------------------------------ */

#define BENCH_READERS 4
#define BENCH_SQL                                                                           \
    "SELECT coalesce(json_agg(json_build_object('id', b.book_id, 'title', b.title, "       \
    "'coverImageUrl', b.cover_image_url, 'pageCount', (SELECT count(*) FROM book_pages p " \
    "WHERE p.book_id = b.book_id), 'createdAt', b.created_at, 'updatedAt', b.updated_at) " \
    "ORDER BY b.created_at DESC), '[]') FROM books b WHERE b.user_id = $1 AND "            \
    "b.deleted_at IS NULL"

typedef struct bench_client {
    bench_ctx *b;
    int sql;
    char **users;
    size_t n_users;
    double secs;
    uint64_t rng;
    double *lat; /* microseconds */
    size_t n, cap;
    size_t bytes, empty;
    int failed;
} bench_client;

static void *bench_reader_thread(void *arg) {
    bench_client *rd = arg;
    char err[256];
    redisContext *rc = NULL;
    PGconn *pg = NULL;
    if (rd->sql) {
        pg = PQconnectdb(rd->b->pg);
        PGresult *res = PQstatus(pg) == CONNECTION_OK ? PQprepare(pg, "list", BENCH_SQL, 1, NULL)
                                                      : NULL;
        if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(stderr, "bench: reads: %s", PQerrorMessage(pg));
            rd->failed = 1;
        }
        PQclear(res);
    } else if (!(rc = ts_redis_connect_sync(rd->b->redis_url, err, sizeof(err)))) {
        fprintf(stderr, "bench: reads: %s\n", err);
        rd->failed = 1;
    }
    double end = bench_now() + rd->secs;
    while (!rd->failed && bench_now() < end) {
        rd->rng = rd->rng * 6364136223846793005ULL + 1442695040888963407ULL;
        const char *user = rd->users[(rd->rng >> 33) % rd->n_users];
        double t0 = bench_now();
        if (rd->sql) {
            PGresult *res = PQexecPrepared(pg, "list", 1, &user, NULL, NULL, 0);
            if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                rd->failed = 1;
            } else {
                size_t len = (size_t)PQgetlength(res, 0, 0);
                rd->bytes += len;
                rd->empty += len <= 2;
            }
            PQclear(res);
        } else {
            redisReply *r = redisCommand(rc, "GET storybook:books:%s", user);
            if (!r || r->type == REDIS_REPLY_ERROR)
                rd->failed = 1;
            else if (r->type == REDIS_REPLY_STRING) {
                rd->bytes += r->len;
                rd->empty += r->len <= 2;
            } else
                rd->empty++;
            freeReplyObject(r);
        }
        double us = (bench_now() - t0) * 1e6;
        if (rd->n == rd->cap) {
            rd->cap = rd->cap ? rd->cap * 2 : 65536;
            rd->lat = realloc(rd->lat, rd->cap * sizeof(*rd->lat));
        }
        rd->lat[rd->n++] = us;
    }
    redisFree(rc);
    PQfinish(pg);
    return NULL;
}

static int bench_cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int bench_reads(bench_ctx *b) {
    /* The stream's storybook users (their list views exist after the run). */
    size_t n_users = 0, n_keys = 0;
    char **users = calloc(b->n_msgs ? b->n_msgs : 1, sizeof(*users));
    for (size_t i = 0; i < b->n_msgs; i++)
        if (!strcmp(b->msgs[i].topic, "storybook.events"))
            users[n_keys++] = b->msgs[i].key;
    qsort(users, n_keys, sizeof(*users), bench_cmp_str);
    for (size_t i = 0; i < n_keys; i++)
        if (n_users == 0 || strcmp(users[n_users - 1], users[i]) != 0)
            users[n_users++] = users[i];
    json_t *out = json_object();
    int rc = n_users ? 0 : -1;
    for (int sql = 0; sql < 2 && rc == 0; sql++) {
        bench_client rd[BENCH_READERS];
        pthread_t th[BENCH_READERS];
        memset(rd, 0, sizeof(rd));
        for (int t = 0; t < BENCH_READERS; t++) {
            rd[t] = (bench_client){.b = b, .sql = sql, .users = users, .n_users = n_users,
                                   .secs = b->short_mode ? 1 : 10,
                                   .rng = 7919u * (unsigned)(t + 1)};
            pthread_create(&th[t], NULL, bench_reader_thread, &rd[t]);
        }
        size_t n = 0, bytes = 0, empty = 0;
        for (int t = 0; t < BENCH_READERS; t++) {
            pthread_join(th[t], NULL);
            n += rd[t].n;
            bytes += rd[t].bytes;
            empty += rd[t].empty;
            rc |= rd[t].failed ? -1 : 0;
        }
        double *lat = malloc((n ? n : 1) * sizeof(*lat));
        size_t k = 0;
        for (int t = 0; t < BENCH_READERS; t++) {
            memcpy(lat + k, rd[t].lat, rd[t].n * sizeof(*lat));
            k += rd[t].n;
            free(rd[t].lat);
        }
        json_t *p = bench_percentiles(lat, n);
        free(lat);
        double ops = (double)n / rd[0].secs;
        json_object_set_new(p, "ops_per_s", json_real(round(ops)));
        json_object_set_new(p, "clients", json_integer(BENCH_READERS));
        json_object_set_new(p, "users", json_integer((json_int_t)n_users));
        json_object_set_new(p, "avg_bytes", json_real(n ? round((double)bytes / (double)n) : 0));
        json_object_set_new(p, "empty", json_integer((json_int_t)empty));
        const char *name = sql ? "sql_per_request" : "view_get";
        char note[160];
        snprintf(note, sizeof(note), "%d clients, %zu users, p50 %.3f p99 %.3f p99.9 %.3f ms",
                 BENCH_READERS, n_users, json_real_value(json_object_get(p, "p50_ms")),
                 json_real_value(json_object_get(p, "p99_ms")),
                 json_real_value(json_object_get(p, "p999_ms")));
        char row[64];
        snprintf(row, sizeof(row), "%s_ops", name);
        bench_row(b, "reads", row, ops, "ops/s", note);
        snprintf(row, sizeof(row), "%s_p99", name);
        bench_row(b, "reads", row, json_real_value(json_object_get(p, "p99_ms")), "ms",
                  sql ? "book list by SQL (books + book_pages)" : "GET storybook:books:<user>");
        json_object_set_new(out, name, p);
    }
    free(users);
    json_object_set_new(bench_section(b), "reads", out);
    return rc;
}

/* ---- 4. state size -------------------------------------------------------------- */

/* Adds the bytes of every file under `path` to *bytes and notes the folder
 * holding RocksDB's CURRENT file in db_dir. */
static void bench_du(const char *path, size_t *bytes, char *db_dir, size_t cap) {
    DIR *d = opendir(path);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char sub[1024];
        struct stat st;
        snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
        if (lstat(sub, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            bench_du(sub, bytes, db_dir, cap);
        } else if (S_ISREG(st.st_mode)) {
            *bytes += (size_t)st.st_size;
            if (!strcmp(de->d_name, "CURRENT"))
                snprintf(db_dir, cap, "%s", path);
        }
    }
    if (d)
        closedir(d);
}

static int bench_state_size(bench_ctx *b, bench_rt *rt) {
    size_t bench_du_bytes = 0;
    char bench_db_dir[512] = "";
    bench_du(rt->state, &bench_du_bytes, bench_db_dir, sizeof(bench_db_dir));
    if (!bench_db_dir[0]) {
        fprintf(stderr, "bench: no RocksDB under %s\n", rt->state);
        return -1;
    }
    rocksdb_options_t *opt = rocksdb_options_create();
    char *errptr = NULL;
    rocksdb_t *db = rocksdb_open_for_read_only(opt, bench_db_dir, 0, &errptr);
    if (!db) {
        fprintf(stderr, "bench: rocksdb %s: %s\n", bench_db_dir, errptr);
        free(errptr);
        rocksdb_options_destroy(opt);
        return -1;
    }
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    size_t keys = 0, kinds[256] = {0}, kv_bytes = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        rocksdb_iter_value(it, &vl);
        kinds[(unsigned char)k[0]]++;
        kv_bytes += kl + vl;
        keys++;
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocksdb_close(db);
    rocksdb_options_destroy(opt);
    double per_m = keys ? (double)bench_du_bytes / (double)keys * 1e6 / 1048576 : 0;
    json_t *o = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:f, s:f}", "keys", (json_int_t)keys, "state_keys",
        (json_int_t)kinds['S'], "view_mirror_keys", (json_int_t)(kinds['V'] + kinds['W']),
        "disk_bytes", (json_int_t)bench_du_bytes, "logical_bytes", (json_int_t)kv_bytes,
        "disk_mib_per_million_keys", round(per_m * 10) / 10, "logical_bytes_per_key",
        keys ? round((double)kv_bytes / (double)keys) : 0);
    json_object_set_new(bench_section(b), "state", o);
    char note[160];
    snprintf(note, sizeof(note), "%zu keys (%zu state, %zu view mirror), %.1f MiB on disk", keys,
             kinds['S'], kinds['V'] + kinds['W'], (double)bench_du_bytes / 1048576);
    bench_row(b, "size", "state_disk_per_million_keys", per_m, "MiB", note);
    return 0;
}

/* The mock cluster keeps ~5 MiB of message sets per partition and drops the
 * oldest beyond that without a word (DESIGN.md). A changelog that lost its
 * start cost this run nothing, as nothing reads it back, but a restore from
 * it would miss its oldest records: counted in `trimmed` and reported. Any
 * other topic (the topology's inputs and outputs, the benchmark's own) that
 * lost its start lost events: the run measured something else than the
 * stream it claims, and fails. @returns 0, or -1 when the cluster could not
 * be asked or such a topic was trimmed (each partition named on stderr). */
static int bench_trimmed_partitions(rd_kafka_t *rk, int *trimmed) {
    static const char suffix[] = "-changelog";
    const rd_kafka_metadata_t *md = NULL;
    *trimmed = 0;
    if (rd_kafka_metadata(rk, 1, NULL, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    int rc = 0;
    for (int t = 0; t < md->topic_cnt; t++) {
        const rd_kafka_metadata_topic_t *mt = &md->topics[t];
        size_t len = strlen(mt->topic);
        int changelog = len > sizeof(suffix) - 1 &&
                        !strcmp(mt->topic + len - (sizeof(suffix) - 1), suffix);
        for (int p = 0; p < mt->partition_cnt; p++) {
            int64_t low = -1, high = -1;
            int32_t id = mt->partitions[p].id;
            rd_kafka_resp_err_t err =
                rd_kafka_query_watermark_offsets(rk, mt->topic, id, &low, &high, 10000);
            if (err) {
                fprintf(stderr, "bench: %s [%" PRId32 "]: its offsets unknown: %s\n", mt->topic,
                        id, rd_kafka_err2str(err));
                rc = -1;
                continue;
            }
            if (low == 0)
                continue;
            fprintf(stderr,
                    "bench: %s [%" PRId32 "] starts at offset %" PRId64 " (of %" PRId64
                    "): the mock cluster dropped its oldest batches\n",
                    mt->topic, id, low, high);
            if (changelog)
                (*trimmed)++;
            else
                rc = -1;
        }
    }
    rd_kafka_metadata_destroy(md);
    return rc;
}

int bench_pipeline(bench_ctx *b) {
    fprintf(stderr, "bench: pipeline (runtime log in %s/runtime.log)\n", b->dir);
    bench_rt rt = {0};
    rd_kafka_t *rk = bench_reader(b);
    int rc = rk ? bench_preload(b) : -1;
    if (rc == 0)
        rc = bench_throughput(b, &rt, rk);
    if (rc == 0 && !b->throughput_only) {
        fprintf(stderr, "bench: event->view latency\n");
        rc = bench_latency(b, &rt);
    }
    if (rc == 0 && !b->throughput_only) {
        fprintf(stderr, "bench: reads\n");
        rc = bench_reads(b);
    }
    if (rc == 0 && bench_rt_alive(&rt)) {
        json_object_set_new(bench_section(b), "rss_end_mb",
                            json_real(round((double)bench_proc_kb(rt.pid, "VmRSS") / 1024)));
        bench_row(b, "size", "runtime_rss_hwm", (double)bench_proc_kb(rt.pid, "VmHWM") / 1024,
                  "MiB", "VmHWM of the runtime after all phases");
    }
    if (rt.pid > 0) {
        double t_stop = bench_now();
        int st = bench_rt_stop(&rt, SIGTERM);
        if (st != 0)
            fprintf(stderr, "bench: the runtime exited with %d on SIGTERM\n", st);
        /* A clean stop flushes RocksDB's memtables (no WAL): part of a restart. */
        fprintf(stderr, "bench: the runtime stopped in %.2f s\n", bench_now() - t_stop);
    }
    if (rc == 0)
        rc = bench_state_size(b, &rt);
    int trimmed = 0;
    if (rc == 0 && rk && bench_trimmed_partitions(rk, &trimmed) != 0) {
        fprintf(stderr, "bench: the stream did not fit the mock cluster\n");
        rc = -1;
    }
    if (rc == 0) {
        json_object_set_new(bench_section(b), "changelog_partitions_trimmed",
                            json_integer(trimmed));
        bench_row(b, "size", "changelog_partitions_trimmed", trimmed, "partitions",
                  "lost their oldest records to the mock's ~5 MiB per partition");
    }
    if (rk)
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return rc;
}
