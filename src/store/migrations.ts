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
  // 2: sandboxes (issue 6): long-lived environments and what re-attaches them after a restart.
  `CREATE TABLE sandboxes (
    id               TEXT PRIMARY KEY,           -- ULID
    state            TEXT NOT NULL,              -- starting, running, paused, destroyed, lost
    isolation        TEXT NOT NULL,              -- as requested (auto, namespace, …)
    isolation_used   TEXT NOT NULL,              -- the backend that hosts it
    image            TEXT NOT NULL,
    node_id          TEXT NOT NULL,
    cpus             REAL NOT NULL,
    mem_mb           INTEGER NOT NULL,
    disk_mb          INTEGER NOT NULL,
    pids_max         INTEGER NOT NULL,
    ttl_s            REAL NOT NULL,
    idle_timeout_s   REAL NOT NULL,              -- 0: never stopped for idleness
    env              TEXT NOT NULL,              -- JSON object; never returned by the API
    metadata         TEXT NOT NULL,              -- JSON object of strings
    driver_state     TEXT,                       -- JSON the backend needs to re-attach
    created_at       INTEGER NOT NULL,           -- unix ms
    expires_at       INTEGER,                    -- unix ms; null while paused
    ttl_remaining_ms INTEGER,                    -- while paused: the TTL left when it was paused
    last_activity_at INTEGER NOT NULL,
    paused_at        INTEGER,
    ended_at         INTEGER,
    end_reason       TEXT                        -- why it is destroyed or lost
  );
  CREATE INDEX sandboxes_state ON sandboxes(state, id);`,
];
