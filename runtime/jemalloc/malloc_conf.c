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
 * runtime CPU per event, 31-33K -> 37K events/s (benchmarks/PROFILE.md). */
const char *malloc_conf = "tcache_max:262144";
