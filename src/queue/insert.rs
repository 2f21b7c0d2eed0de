//! Committing a received message (called inside a group-commit batch).

use anyhow::{Context, Result};
use rusqlite::{params, Connection};

use super::message::{domain_of, NewMessage};

/// Inserts the message and one row per recipient, all due now.
pub fn insert_message(conn: &Connection, m: &NewMessage) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO messages (id, arrival, sender, size, held, hold_reason, client, helo,
                               body, smtputf8, ret, envid, origin, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
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
        m.data,
    ])
    .with_context(|| format!("storing message {}", m.id))?;
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
