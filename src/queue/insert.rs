//! Committing a received message (called inside a group-commit batch).

use std::io::Write;

use anyhow::{Context, Result};
use rusqlite::{params, Connection};

use super::message::{domain_of, NewMessage};

/// Messages at least this big are written through SQLite's incremental
/// blob I/O: bound as a parameter, SQLite would copy the bytes twice more
/// (the bound value, then the record it builds), so a 50 MB message would
/// cost 150 MB of memory while it is stored.
const STREAM_FROM: usize = 1024 * 1024;
/// Bytes written to the blob per call.
const BLOB_CHUNK: usize = 256 * 1024;

/// Inserts the message and one row per recipient, all due now.
pub fn insert_message(conn: &Connection, m: &NewMessage) -> Result<()> {
    let stream = m.data.len() >= STREAM_FROM;
    let sql = if stream {
        "INSERT INTO messages (id, arrival, sender, size, held, hold_reason, client, helo,
                               body, smtputf8, ret, envid, origin, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, zeroblob(?4))"
    } else {
        "INSERT INTO messages (id, arrival, sender, size, held, hold_reason, client, helo,
                               body, smtputf8, ret, envid, origin, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let common = params![
        m.id,
        m.arrival,
        m.sender,
        m.data.len() as i64,
        m.hold_reason.is_some(),
        m.hold_reason,
        m.client,
        m.helo,
        m.params.body,
        m.params.smtputf8,
        m.params.ret,
        m.params.envid,
        m.origin,
    ];
    let done = if stream {
        stmt.execute(common)
    } else {
        let mut all: Vec<&dyn rusqlite::ToSql> = common.to_vec();
        all.push(&m.data);
        stmt.execute(&all[..])
    };
    done.with_context(|| format!("storing message {}", m.id))?;
    if stream {
        let rowid = conn.last_insert_rowid();
        let mut blob = conn
            .blob_open(rusqlite::MAIN_DB, "messages", "data", rowid, false)
            .with_context(|| format!("opening the data of message {}", m.id))?;
        for chunk in m.data.chunks(BLOB_CHUNK) {
            blob.write_all(chunk)
                .with_context(|| format!("storing the data of message {}", m.id))?;
        }
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO recipients (msg_id, idx, address, domain, status, next_attempt, notify, orcpt)
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7)",
    )?;
    for (i, r) in m.recipients.iter().enumerate() {
        stmt.execute(params![
            m.id,
            i as i64,
            r.address,
            domain_of(&r.address),
            m.arrival,
            r.notify,
            r.orcpt,
        ])
        .with_context(|| format!("storing recipient {} of {}", r.address, m.id))?;
    }
    Ok(())
}
