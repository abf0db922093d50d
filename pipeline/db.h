/* pipeline/db.h — read-only access to an LMDB of records by dense index.
 *
 * Our LMDBs (tools/make_lmdb) use keys "%010u" = record index, so index i is looked up by
 * formatting its key. Any other LMDB (Caffe's convert_imageset writes "%08d_<filename>") is
 * indexed once at open by a cursor scan: index i = the i-th key in LMDB (byte) order, which
 * for Caffe's zero-padded prefix is its insertion order. Values are returned zero-copy from
 * the memory map (MDB_RDONLY | MDB_NOTLS | MDB_NORDAHEAD); a path that is a file rather than
 * a directory is opened with MDB_NOSUBDIR.
 *
 * Threads: a pipe_db is shared read-only by all threads after open; each thread that reads
 * opens its own pipe_db_reader (one long-lived read transaction) and uses it alone.
 */
#ifndef PIPE_DB_H
#define PIPE_DB_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct pipe_db pipe_db;
typedef struct pipe_db_reader pipe_db_reader;

/* Opens the LMDB at `path` (directory with data.mdb, or the data file itself).
 * IH_E_USAGE: the path does not exist or is a directory without data.mdb (the message
 * suggests tools/make_lmdb); IH_E_DATA: the file is not an LMDB or is corrupt; IH_E_SYS:
 * other OS failures. The caller owns *out (pipe_db_close). Blocks on the key scan for
 * foreign LMDBs (about 1 s per million records when cached). */
ih_err pipe_db_open(pipe_db **out, const char *path);
/* Closes; NULL is a no-op. Every reader must be closed first. */
void pipe_db_close(pipe_db *db);

int64_t pipe_db_count(const pipe_db *db);
const char *pipe_db_path(const pipe_db *db);
/* 1 when keys are not our "%010u" indices (the key table from the scan is used). */
int pipe_db_foreign_keys(const pipe_db *db);
/* Writes the key of record i (NUL-terminated, non-printable bytes as '?') for messages. */
void pipe_db_key(const pipe_db *db, int64_t index, char *buf, size_t cap);

/* Opens a read transaction for the calling thread. IH_E_SYS on failure (e.g. too many
 * readers: the message names MDB_READERS_FULL). Caller owns *out. */
ih_err pipe_db_reader_open(pipe_db *db, pipe_db_reader **out);
void pipe_db_reader_close(pipe_db_reader *r);

/* Looks up record `index` (0 <= index < count). *val points into the map and stays valid
 * until the reader is closed. IH_E_DATA if the key is missing (names key and path).
 * Only the reader's owning thread; does not block beyond page faults. */
ih_err pipe_db_get(pipe_db_reader *r, int64_t index, const uint8_t **val, size_t *len);

#endif
