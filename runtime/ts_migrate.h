/* ts_migrate.h - versioned SQL migrations, each applied once, at startup.
 *
 * The runtime's own migration comes first (name "tastesync/0001_offsets.sql"):
 * table ts_offsets(task, next_offset, updated_at) and the plpgsql function
 * ts_claim_batch(task text, next_offset bigint), which records a task's batch
 * and raises SQLSTATE TS_MIGRATE_ALREADY_APPLIED ('TS409') when a batch ending
 * at or before the stored offset was already applied (the Postgres sink's
 * fence). Second, "tastesync/0002_partitioning.sql": table
 * ts_partitioning(parent, unit) and the functions ts_partition_ensure(parent
 * text, at timestamptz) and ts_partition_ensure_rows(parent text, rows jsonb),
 * which create the missing range partitions (by UTC day, week, month or year)
 * of a registered table; a migration registers its table with
 * INSERT INTO ts_partitioning VALUES ('<table>', 'month'), and the Postgres
 * sink creates partitions as rows need them. Then every *.sql file of each
 * given folder, sorted by file name
 * (byte order), that table ts_migrations(name, applied_at) does not record yet.
 *
 * Each migration runs in its own transaction together with its record, under
 * a transaction-level advisory lock, so concurrent instances apply each file
 * exactly once. A file must not contain BEGIN/COMMIT or statements that cannot
 * run inside a transaction (CREATE INDEX CONCURRENTLY).
 */
#ifndef TS_MIGRATE_H
#define TS_MIGRATE_H

#include <stddef.h>

#include "ts_error.h"

/** SQLSTATE raised by ts_claim_batch for a batch that was already applied. */
#define TS_MIGRATE_ALREADY_APPLIED "TS409"

/** Applies the runtime's migration and then each folder's *.sql files (see
 * above); name of a file's record = "<owners[i]>/<file name>", where owners
 * name the folders' owners (processor names), so equal file names in two
 * processors' folders never collide.
 * Blocks: waits up to ~10 s for the server to accept connections, then runs
 * synchronously. Call at startup, before the loop runs.
 *
 * @param conninfo  libpq connection string.
 * @param dirs      folders, may be NULL when n_dirs is 0.
 * @param owners    one name per folder.
 * @returns TS_OK; TS_E_RETRY (server unreachable); TS_E_CONFIG (a folder or
 *          file cannot be read); TS_E_FATAL (a migration failed: it was rolled
 *          back, later ones were not tried). Detail, naming the migration, in err.
 * @remark  Thread: any; uses its own connection.
 */
ts_err ts_migrate_apply(const char *conninfo, const char *const *dirs, const char *const *owners,
                        size_t n_dirs, char *err, size_t errlen);

#endif
