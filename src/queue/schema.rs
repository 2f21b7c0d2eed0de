//! The queue's SQLite schema, connection settings and migrations.
//!
//! WAL with `synchronous=FULL`: a commit that returned is on disk, and the
//! CLI can read beside the daemon's writer. One row per message (with its
//! bytes) and one row per recipient, so partial deliveries, per-recipient
//! bounces and the queue listing fall out of plain SQL.

use anyhow::{bail, Context, Result};
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// Bumped with each migration below.
pub const SCHEMA_VERSION: i64 = 1;

const V1: &str = "
CREATE TABLE messages (
    id          TEXT PRIMARY KEY,
    arrival     INTEGER NOT NULL,      -- unix seconds
    sender      TEXT NOT NULL,         -- '' for the null sender
    size        INTEGER NOT NULL,      -- bytes of data
    held        INTEGER NOT NULL DEFAULT 0,
    hold_reason TEXT,
    client      TEXT NOT NULL DEFAULT '',
    helo        TEXT NOT NULL DEFAULT '',
    body        TEXT,                  -- MAIL BODY= (7BIT / 8BITMIME) or NULL
    smtputf8    INTEGER NOT NULL DEFAULT 0,
    ret         TEXT,                  -- DSN RET= (FULL / HDRS) or NULL
    envid       TEXT,                  -- DSN ENVID, decoded from xtext
    origin      TEXT NOT NULL DEFAULT 'smtp', -- 'smtp' or 'bounce' (made by mx2)
    data        BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE recipients (
    msg_id       TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    idx          INTEGER NOT NULL,
    address      TEXT NOT NULL,
    domain       TEXT NOT NULL,        -- lower-case, for routing and filters
    status       TEXT NOT NULL,        -- queued | deferred | active
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,     -- unix seconds
    lease_until  INTEGER,              -- set while status = active
    last_reply   TEXT,
    notify       TEXT,                 -- DSN NOTIFY= or NULL
    orcpt        TEXT,                 -- DSN ORCPT= (addr-type;xtext-decoded) or NULL
    warned       INTEGER NOT NULL DEFAULT 0, -- delay DSN sent
    PRIMARY KEY (msg_id, idx)
) WITHOUT ROWID;
CREATE INDEX recipients_due ON recipients(status, next_attempt);
CREATE INDEX recipients_domain ON recipients(domain);
CREATE TABLE recipient_cache (
    address    TEXT PRIMARY KEY,
    verdict    TEXT NOT NULL,          -- ok | unknown
    reply      TEXT,
    checked_at INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Opens (creating if needed) the queue database with the settings every
/// connection must share.
pub fn open(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating queue directory {}", dir.display()))?;
    }
    let conn =
        Connection::open(path).with_context(|| format!("opening queue {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .context("setting WAL mode")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Opens the queue for an admin command without ever creating it: a
/// database file made by root's `mx2 queue …` before the daemon's first
/// start would be unwritable for the daemon's own user. (SQLite itself
/// gives WAL and journal files the database file's owner.)
pub fn open_existing(path: &Path) -> Result<Option<Connection>> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening queue {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != SCHEMA_VERSION {
        bail!(
            "queue {} has schema version {version}, this mx2 expects {SCHEMA_VERSION}: start `mx2 serve` once to migrate it",
            path.display()
        );
    }
    Ok(Some(conn))
}

/// Creates or migrates the schema; refuses a database from a newer mx2.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        bail!(
            "queue schema version {version} is newer than this mx2 understands ({SCHEMA_VERSION}); refusing to touch it"
        );
    }
    let tx = conn.transaction()?;
    if version < 1 {
        tx.execute_batch(V1).context("creating queue schema v1")?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit().context("committing schema migration")?;
    Ok(())
}
