//! Admin operations on the queue: what `mx2 queue …`, ETRN and the control
//! socket do. Plain functions over a connection, so the CLI runs them
//! directly (daemon running or not: SQLite's locking serialises it with the
//! daemon's writer) and the daemon runs them inside its writer.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

/// Makes queued and deferred recipients due now, optionally only one
/// domain's or some messages'. Returns how many recipients were touched.
pub fn flush(conn: &Connection, domain: Option<&str>, ids: &[String]) -> Result<usize> {
    let mut sql = String::from(
        "UPDATE recipients SET next_attempt = strftime('%s','now')
         WHERE status IN ('queued','deferred')
           AND msg_id IN (SELECT id FROM messages WHERE held = 0)",
    );
    let mut args: Vec<String> = Vec::new();
    if let Some(d) = domain {
        sql.push_str(" AND domain = ?");
        args.push(crate::domain::canonical_or_lower(d));
    }
    if !ids.is_empty() {
        sql.push_str(" AND msg_id IN (");
        sql.push_str(&vec!["?"; ids.len()].join(","));
        sql.push(')');
        args.extend(ids.iter().cloned());
    }
    Ok(conn.execute(&sql, params_from_iter(args.iter()))?)
}

/// One recipient as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RcptRow {
    pub address: String,
    pub status: String,
    pub attempts: i64,
    /// Unix seconds.
    pub next_attempt: i64,
    pub last_reply: Option<String>,
    #[serde(skip)]
    pub domain: String,
}

/// One message as listed.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub id: String,
    pub arrival: i64,
    pub size: i64,
    pub sender: String,
    pub held: bool,
    pub hold_reason: Option<String>,
    pub client: String,
    pub helo: String,
    pub recipients: Vec<RcptRow>,
}

/// Filters for `queue list`.
#[derive(Debug, Default)]
pub struct Filter {
    pub domain: Option<String>,
    pub sender: Option<String>,
    pub held_only: bool,
    /// Only this message (by queue id).
    pub id: Option<String>,
}

/// Messages in arrival order with their pending recipients.
pub fn list(conn: &Connection, f: &Filter) -> Result<Vec<MessageRow>> {
    let mut out = Vec::new();
    let mut st = conn.prepare(
        "SELECT id, arrival, size, sender, held, hold_reason, client, helo FROM messages
         WHERE ?1 IS NULL OR id = ?1 ORDER BY arrival, id",
    )?;
    let mut rs = conn.prepare(
        "SELECT address, status, attempts, next_attempt, last_reply, domain
         FROM recipients WHERE msg_id = ?1 ORDER BY idx",
    )?;
    let rows = st.query_map([f.id.as_deref()], |r| {
        Ok(MessageRow {
            id: r.get(0)?,
            arrival: r.get(1)?,
            size: r.get(2)?,
            sender: r.get(3)?,
            held: r.get::<_, i64>(4)? != 0,
            hold_reason: r.get(5)?,
            client: r.get(6)?,
            helo: r.get(7)?,
            recipients: Vec::new(),
        })
    })?;
    let domain = f
        .domain
        .as_ref()
        .map(|d| crate::domain::canonical_or_lower(d));
    for row in rows {
        let mut m = row?;
        if f.held_only && !m.held {
            continue;
        }
        if let Some(s) = &f.sender {
            if !m.sender.eq_ignore_ascii_case(s) {
                continue;
            }
        }
        m.recipients = rs
            .query_map([&m.id], |r| {
                Ok(RcptRow {
                    address: r.get(0)?,
                    status: r.get(1)?,
                    attempts: r.get(2)?,
                    next_attempt: r.get(3)?,
                    last_reply: r.get(4)?,
                    domain: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        if let Some(d) = &domain {
            if !m.recipients.iter().any(|r| &r.domain == d) {
                continue;
            }
        }
        out.push(m);
    }
    Ok(out)
}

/// One message's row and bytes, or None.
pub fn show(conn: &Connection, id: &str) -> Result<Option<(MessageRow, Vec<u8>)>> {
    let data: Option<Vec<u8>> = conn
        .query_row("SELECT data FROM messages WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(data) = data else { return Ok(None) };
    let one = list(
        conn,
        &Filter {
            id: Some(id.to_string()),
            ..Filter::default()
        },
    )?;
    Ok(one.into_iter().next().map(|m| (m, data)))
}

/// Deletes messages by id (no bounce). Returns the ids that did not exist.
pub fn delete(conn: &Connection, ids: &[String]) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for id in ids {
        if conn.execute("DELETE FROM messages WHERE id = ?1", [id])? == 0 {
            missing.push(id.clone());
        }
    }
    Ok(missing)
}

/// Ids of messages with a recipient leased for delivery right now.
pub fn leased_ids(conn: &Connection) -> Result<Vec<String>> {
    let mut st = conn.prepare("SELECT DISTINCT msg_id FROM recipients WHERE status = 'active'")?;
    let ids = st
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

/// Deletes every message; returns how many.
pub fn delete_all(conn: &Connection) -> Result<usize> {
    Ok(conn.execute("DELETE FROM messages", [])?)
}

/// What `delete_domain` removed.
#[derive(Debug, Default)]
pub struct DomainDeleted {
    /// Recipients removed.
    pub recipients: usize,
    /// Messages removed because no recipient was left.
    pub messages: Vec<String>,
    /// `(message id, recipient index)` of removed recipients that were
    /// leased for delivery (the daemon must be told to leave them out).
    pub leased: Vec<(String, i64)>,
}

/// Removes one domain's recipients and every message left with none, in
/// one transaction (so the leased rows reported are exactly those removed).
pub fn delete_domain(conn: &Connection, domain: &str) -> Result<DomainDeleted> {
    let d = crate::domain::canonical_or_lower(domain);
    let tx = conn.unchecked_transaction()?;
    let leased: Vec<(String, i64)> = tx
        .prepare("SELECT msg_id, idx FROM recipients WHERE domain = ?1 AND status = 'active'")?
        .query_map([&d], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let n = tx.execute("DELETE FROM recipients WHERE domain = ?1", [&d])?;
    let empty: Vec<String> = tx
        .prepare(
            "SELECT id FROM messages m WHERE NOT EXISTS (SELECT 1 FROM recipients r WHERE r.msg_id = m.id)",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in &empty {
        tx.execute("DELETE FROM messages WHERE id = ?1", [id])?;
    }
    tx.commit().context("committing the domain delete")?;
    Ok(DomainDeleted {
        recipients: n,
        messages: empty,
        leased,
    })
}

/// Holds or releases messages; returns the ids that did not exist.
/// Releasing makes the message's recipients due now.
pub fn set_held(conn: &Connection, ids: &[String], held: bool) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for id in ids {
        let n = if held {
            conn.execute(
                "UPDATE messages SET held = 1, hold_reason = COALESCE(hold_reason, 'held by admin') WHERE id = ?1",
                [id],
            )?
        } else {
            conn.execute(
                "UPDATE messages SET held = 0, hold_reason = NULL WHERE id = ?1",
                [id],
            )?
        };
        if n == 0 {
            missing.push(id.clone());
        } else if !held {
            conn.execute(
                "UPDATE recipients SET next_attempt = strftime('%s','now') WHERE msg_id = ?1 AND status != 'active'",
                params![id],
            )?;
        }
    }
    Ok(missing)
}

/// `queue stats` figures.
#[derive(Debug, Default, serde::Serialize)]
pub struct Stats {
    pub messages: i64,
    pub bytes: i64,
    pub held: i64,
    pub deferred: i64,
    pub oldest_age_seconds: i64,
    pub domains: BTreeMap<String, DomainStats>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct DomainStats {
    pub messages: i64,
    pub bytes: i64,
}

pub fn stats(conn: &Connection, now: i64) -> Result<Stats> {
    let (messages, bytes, held, oldest): (i64, i64, i64, Option<i64>) = conn
        .query_row(
            "SELECT count(*), COALESCE(sum(size),0), COALESCE(sum(held),0), min(arrival) FROM messages",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .context("reading queue totals")?;
    let deferred: i64 = conn.query_row(
        "SELECT count(DISTINCT msg_id) FROM recipients WHERE status = 'deferred'",
        [],
        |r| r.get(0),
    )?;
    let mut domains = BTreeMap::new();
    let mut st = conn.prepare(
        "SELECT r.domain, count(DISTINCT m.id), COALESCE(sum(m.size),0)
         FROM (SELECT DISTINCT msg_id, domain FROM recipients) r
         JOIN messages m ON m.id = r.msg_id GROUP BY r.domain ORDER BY r.domain",
    )?;
    for row in st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })? {
        let (d, m, b) = row?;
        domains.insert(
            d,
            DomainStats {
                messages: m,
                bytes: b,
            },
        );
    }
    Ok(Stats {
        messages,
        bytes,
        held,
        deferred,
        oldest_age_seconds: oldest.map(|o| (now - o).max(0)).unwrap_or(0),
        domains,
    })
}

/// Returns every leased recipient to the queue, due now (clean stop).
pub fn release_leases(conn: &Connection) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE recipients SET status = 'queued', lease_until = NULL,
                next_attempt = MIN(next_attempt, strftime('%s','now'))
         WHERE status = 'active'",
        [],
    )?)
}
