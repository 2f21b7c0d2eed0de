//! The queue's SQLite schema, connection settings and migrations.
//!
//! WAL with `synchronous=FULL`: a commit that returned is on disk, and the
//! CLI can read beside the daemon's writer. One row per message (with its
//! bytes) and one row per recipient, so partial deliveries, per-recipient
//! bounces and the queue listing fall out of plain SQL.

use anyhow::{bail, Context, Result};
use rusqlite::Connection;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

/// Bumped with each migration below.
pub const SCHEMA_VERSION: i64 = 2;

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

/// v2: `messages` becomes an ordinary rowid table (with a unique index on
/// `id`). As a WITHOUT ROWID table its rows lived in an index b-tree, where
/// SQLite compares whole records while searching: every lookup by id read
/// the full message bytes of the rows it passed (overflow pages included),
/// so looking up one 4 KB message read several. `data` stays the last
/// column so the envelope columns sit in the row's first page.
/// The per-domain index also covers status and next attempt, so the
/// scheduler can find another domain's due mail without walking a slow
/// primary's whole backlog (350 ms per look at 1,000,000 recipients).
/// Run with foreign keys off (SQLite's procedure for changing a table).
const V2: &str = "
CREATE TABLE messages_v2 (
    id          TEXT NOT NULL UNIQUE,
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
);
INSERT INTO messages_v2 (id, arrival, sender, size, held, hold_reason, client, helo,
                         body, smtputf8, ret, envid, origin, data)
    SELECT id, arrival, sender, size, held, hold_reason, client, helo,
           body, smtputf8, ret, envid, origin, data
    FROM messages ORDER BY id;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
DROP INDEX recipients_domain;
CREATE INDEX recipients_domain_due ON recipients(domain, status, next_attempt);
";

/// Opens (creating if needed) the queue database with the settings every
/// connection must share.
pub fn open(path: &Path) -> Result<Connection> {
    create_dir(path)?;
    if !path.exists() {
        // Mail is private: the file is 0600 whatever the umask, and SQLite
        // gives the WAL and shared-memory files the database file's mode.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating queue {}", path.display()))?;
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

/// Creates the directory that holds the queue database `path` (0700,
/// whatever the umask; an existing directory is left as it is).
pub fn create_dir(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating queue directory {}", dir.display()))?;
    }
    Ok(())
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
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    // Foreign keys off while tables are rebuilt (dropping the old
    // `messages` must not cascade into `recipients`); checked before commit.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let res = migrate_tables(conn, version);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    res
}

fn migrate_tables(conn: &mut Connection, version: i64) -> Result<()> {
    let tx = conn.transaction()?;
    if version < 1 {
        tx.execute_batch(V1).context("creating queue schema v1")?;
    }
    if version < 2 {
        if version >= 1 {
            tracing::info!("queue: migrating the queue to schema v2 (messages as a rowid table)");
        }
        tx.execute_batch(V2)
            .context("migrating the queue to schema v2")?;
    }
    let broken: i64 = tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
        r.get(0)
    })?;
    if broken > 0 {
        bail!("queue migration left {broken} recipients without their message; not committed");
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit().context("committing schema migration")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue written by mx2 with schema v1 keeps every message and
    /// recipient through the migration, and the cascade still works.
    #[test]
    fn v1_queue_migrates_to_v2_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        {
            let c = open(&path).unwrap();
            c.execute_batch(V1).unwrap();
            c.execute_batch(
                "INSERT INTO messages (id, arrival, sender, size, held, hold_reason, data)
                     VALUES ('A', 10, 's@x.example', 3, 1, 'held by admin', x'616263');
                 INSERT INTO messages (id, arrival, sender, size, data)
                     VALUES ('B', 11, '', 1, x'7a');
                 INSERT INTO recipients (msg_id, idx, address, domain, status, attempts, next_attempt, last_reply)
                     VALUES ('A', 0, 'u@example.jp', 'example.jp', 'deferred', 3, 99, '451 later'),
                            ('A', 1, 'v@example.jp', 'example.jp', 'queued', 0, 10, NULL),
                            ('B', 0, 'w@example.jp', 'example.jp', 'queued', 0, 11, NULL);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let mut c = open(&path).unwrap();
        migrate(&mut c).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let sql: String = c
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'messages'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!sql.contains("WITHOUT ROWID"), "{sql}");
        let indexes: Vec<String> = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'recipients' AND sql IS NOT NULL ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(indexes, ["recipients_domain_due", "recipients_due"]);
        let a: (i64, String, i64, Option<String>, Vec<u8>) = c
            .query_row(
                "SELECT arrival, sender, held, hold_reason, data FROM messages WHERE id = 'A'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(
            a,
            (
                10,
                "s@x.example".into(),
                1,
                Some("held by admin".into()),
                b"abc".to_vec()
            )
        );
        let rcpts: i64 = c
            .query_row("SELECT count(*) FROM recipients", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rcpts, 3);
        let fk: i64 = c
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1, "foreign keys back on after the migration");
        c.execute("DELETE FROM messages WHERE id = 'A'", [])
            .unwrap();
        let left: i64 = c
            .query_row("SELECT count(*) FROM recipients", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 1, "deleting a message still removes its recipients");
        // Ids stay unique.
        assert!(c
            .execute(
                "INSERT INTO messages (id, arrival, sender, size, data) VALUES ('B', 1, '', 0, x'')",
                []
            )
            .is_err());
        // Running it again changes nothing.
        migrate(&mut c).unwrap();
    }
}
