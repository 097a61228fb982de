/**
 * Numbered schema migrations. Append only: never edit one that has shipped.
 * Migration N (1-based) brings `user_version` from N-1 to N.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: workloads (the design spec's table, plus what the API returns).
  `CREATE TABLE workloads (
    id               TEXT PRIMARY KEY,           -- ULID, sortable by creation
    status           TEXT NOT NULL,              -- pending, running, completed, failed, timeout, killed
    mode             TEXT NOT NULL,              -- sync | async
    isolation        TEXT NOT NULL,              -- as requested (auto, namespace, …)
    isolation_used   TEXT,                       -- the backend that ran it
    isolation_reason TEXT,                       -- why that backend
    runtime          TEXT NOT NULL,
    node_id          TEXT NOT NULL,
    input_hash       TEXT NOT NULL,              -- sha256 of the input JSON
    output           TEXT,                       -- JSON of the return value
    stdout           BLOB,
    stderr           BLOB,
    stdout_truncated INTEGER NOT NULL DEFAULT 0,
    stderr_truncated INTEGER NOT NULL DEFAULT 0,
    log_index        TEXT,                       -- JSON [[stream, bytes], …]: interleaving for log replay
    exit_code        INTEGER,
    error_code       TEXT,
    error_message    TEXT,
    cpu_limit        REAL NOT NULL,
    mem_limit        INTEGER NOT NULL,           -- MiB
    timeout_s        REAL NOT NULL,
    duration_ms      REAL,
    start_ms         REAL,
    exec_ms          REAL,
    created_at       INTEGER NOT NULL,           -- unix ms
    started_at       INTEGER,
    finished_at      INTEGER
  );
  CREATE INDEX workloads_status ON workloads(status, id);
  CREATE INDEX workloads_created ON workloads(created_at);`,
];
