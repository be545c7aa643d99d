/* malloc_conf.c - jemalloc's options for the tastesync binary (linked only
 * with jemalloc; jemalloc reads this symbol at start, before MALLOC_CONF).
 *
 * tcache_max: librdkafka's lz4 codec callocs a 68 KiB frame context for every
 * message set it compresses (changelog and output topics, one set per partition
 * per produce request). Above the thread cache's default limit (32 KiB) jemalloc
 * serves a calloc from a recycled extent and zeroes it by madvise(MADV_DONTNEED),
 * so every message set cost a TLB shootdown on the other core and 17 page faults
 * to touch the pages again: ~20% of the runtime's samples (kernel clear_page and
 * smp_call_function) on the 300k stream. With the thread cache holding sizes up
 * to 256 KiB the same calloc is a memset of a cached block: 39 -> 33 us of
 * runtime CPU per event, 31-33K -> 37K events/s (benchmarks/PROFILE.md).
 *
 * dirty_decay_ms: freed pages are kept for a minute (10 s by default) before
 * jemalloc purges them. A batch frees what it allocated moments later, so
 * under steady load the purges only gave the pages back to be faulted in
 * again, each purge a TLB shootdown on the other core: 5-8% of the runtime's
 * samples in the 1M-event stream. With 60 s: ~4% less CPU per event, for
 * ~140 MiB more resident memory at the peak (freed memory still goes back a
 * minute after the load drops). */
const char *malloc_conf = "tcache_max:262144,dirty_decay_ms:60000";
