//! `mx2 queue …`: inspect and control the queue (mailq, postsuper, postcat, qshape).
//!
//! Works with the daemon running (WAL readers; writes serialise with the
//! daemon's writer through SQLite's lock) or stopped. A flush or release
//! also pokes the daemon's control socket so it acts at once. What came
//! from outside (envelope, replies, message text) is printed through
//! `crate::escape`, except with `--raw` and `--json`.

use std::io::Write;

use anyhow::{bail, Result};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::Config;
use crate::escape::{self, line as esc};
use crate::queue::admin::{self, Filter, MessageRow};
use crate::queue::{self, schema};

/// `mx2 queue …`
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// One row per queued message with its pending recipients (like mailq).
    List {
        #[arg(long)]
        json: bool,
        /// Only messages with a recipient in this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only messages from this envelope sender ("" for the null sender).
        #[arg(long)]
        sender: Option<String>,
        /// Only held messages.
        #[arg(long)]
        held: bool,
    },
    /// The message as queued (like postcat -q): envelope and content.
    Show {
        id: String,
        /// Only the envelope.
        #[arg(long, group = "part")]
        envelope: bool,
        /// Only the header block.
        #[arg(long, group = "part")]
        headers: bool,
        /// Only the raw message bytes.
        #[arg(long, group = "part")]
        raw: bool,
    },
    /// Remove messages without bouncing them (like postsuper -d).
    Delete {
        ids: Vec<String>,
        #[arg(long, conflicts_with_all = ["ids", "domain"])]
        all: bool,
        /// Remove this domain's recipients, and messages left with none.
        #[arg(long, conflicts_with = "ids")]
        domain: Option<String>,
    },
    /// Park messages: no delivery until released (postsuper -h).
    Hold {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Unpark held messages; they are due at once (postsuper -H).
    Release {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Retry deferred mail now: all, one domain, or some ids (postqueue -f / -s).
    Flush {
        #[arg(long)]
        domain: Option<String>,
        ids: Vec<String>,
    },
    /// Counts and bytes per domain, held, deferred, oldest age (like qshape).
    Stats {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: &Command, cfg: &Config) -> Result<i32> {
    let Some(conn) = schema::open_existing(&cfg.queue.path)? else {
        // No database yet: the daemon has never run. Nothing is queued.
        return match cmd {
            Command::List { json: true, .. } => {
                println!("[]");
                Ok(0)
            }
            Command::List { .. } => {
                println!("Mail queue is empty");
                Ok(0)
            }
            Command::Stats { json, .. } => {
                let s = admin::Stats::default();
                if *json {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                } else {
                    println!("messages: 0  bytes: 0  held: 0  deferred: 0  oldest: 0s");
                }
                Ok(0)
            }
            _ => bail!(
                "no queue at {} (the daemon creates it when it first starts)",
                cfg.queue.path.display()
            ),
        };
    };
    let out = std::io::stdout();
    let mut out = out.lock();
    match cmd {
        Command::List {
            json,
            domain,
            sender,
            held,
        } => {
            let rows = admin::list(
                &conn,
                &Filter {
                    domain: domain.clone(),
                    sender: sender.clone(),
                    held_only: *held,
                    id: None,
                },
            )?;
            if *json {
                let v: Vec<_> = rows.iter().map(message_json).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                print_mailq(&mut out, &rows)?;
            }
        }
        Command::Show {
            id,
            envelope,
            headers,
            raw,
        } => {
            let Some((m, data)) = admin::show(&conn, id)? else {
                bail!("{id}: no such message in the queue");
            };
            if *raw {
                out.write_all(&data)?;
            } else if *headers {
                out.write_all(&escape::text(header_block(&data)))?;
            } else {
                print_envelope(&mut out, &m)?;
                if !*envelope {
                    writeln!(out, "*** MESSAGE CONTENTS {} ***", m.id)?;
                    out.write_all(&escape::text(&data))?;
                    writeln!(out, "*** END OF MESSAGE ***")?;
                }
            }
        }
        Command::Delete { ids, all, domain } => {
            if *all {
                let leased = admin::leased_ids(&conn)?;
                let n = admin::delete_all(&conn)?;
                tracing::info!("queue: all {n} messages deleted by admin");
                let busy = tell(cfg, "withdraw", &leased);
                writeln!(out, "{n} messages deleted")?;
                on_wire(&mut out, &busy)?;
            } else if let Some(d) = domain {
                let del = admin::delete_domain(&conn, d)?;
                for id in &del.messages {
                    tracing::info!("{id}: removed by admin (domain {d})");
                }
                let mut items = del.messages.clone();
                items.extend(del.leased.iter().map(|(id, i)| format!("{id}/{i}")));
                let busy = tell(cfg, "withdraw", &items);
                writeln!(
                    out,
                    "{} recipients of {d} deleted, {} messages removed",
                    del.recipients,
                    del.messages.len()
                )?;
                on_wire(&mut out, &busy)?;
            } else if ids.is_empty() {
                bail!("name the messages to delete (IDs, --all or --domain D)");
            } else {
                let missing = admin::delete(&conn, ids)?;
                let gone: Vec<String> = ids
                    .iter()
                    .filter(|id| !missing.contains(id))
                    .cloned()
                    .collect();
                let busy = tell(cfg, "withdraw", &gone);
                let code = report(&mut out, ids, &missing, "deleted")?;
                on_wire(&mut out, &busy)?;
                return Ok(code);
            }
        }
        Command::Hold { ids } => {
            let missing = admin::set_held(&conn, ids, true)?;
            let held: Vec<String> = ids
                .iter()
                .filter(|i| !missing.contains(i))
                .cloned()
                .collect();
            // Recipients already leased are parked by the daemon before
            // they are sent; only a delivery already on the wire goes on.
            let busy = tell(cfg, "hold", &held);
            let code = report(&mut out, ids, &missing, "held")?;
            on_wire(&mut out, &busy)?;
            return Ok(code);
        }
        Command::Release { ids } => {
            let missing = admin::set_held(&conn, ids, false)?;
            let released: Vec<String> = ids
                .iter()
                .filter(|i| !missing.contains(i))
                .cloned()
                .collect();
            tell(cfg, "release", &released);
            return report(&mut out, ids, &missing, "released");
        }
        Command::Flush { domain, ids } => {
            let n = admin::flush(&conn, domain.as_deref(), ids)?;
            let told = poke(cfg);
            writeln!(
                out,
                "{n} recipients due now{}",
                if told {
                    ""
                } else {
                    " (daemon not reachable: it will see them at its next scan)"
                }
            )?;
        }
        Command::Stats { json } => {
            let s = admin::stats(&conn, queue::now())?;
            if *json {
                writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?;
            } else {
                writeln!(
                    out,
                    "messages: {}  bytes: {}  held: {}  deferred: {}  oldest: {}s",
                    s.messages, s.bytes, s.held, s.deferred, s.oldest_age_seconds
                )?;
                writeln!(out, "{:<40} {:>8} {:>12}", "DOMAIN", "MESSAGES", "BYTES")?;
                for (d, v) in &s.domains {
                    writeln!(out, "{:<40} {:>8} {:>12}", esc(d), v.messages, v.bytes)?;
                }
            }
        }
    }
    Ok(0)
}

/// Prints `ID: what` per found id, an error line per missing one.
fn report(out: &mut impl Write, ids: &[String], missing: &[String], what: &str) -> Result<i32> {
    for id in ids {
        if missing.contains(id) {
            eprintln!("mx2: {id}: no such message in the queue");
        } else {
            tracing::info!("{id}: {what} by admin");
            writeln!(out, "{id}: {what}")?;
        }
    }
    Ok(if missing.is_empty() { 0 } else { 1 })
}

/// Tells a running daemon about deleted (`withdraw`), held (`hold`) or
/// released (`release`) mail it may already have leased (best effort:
/// without a daemon nothing is leased). Returns the messages the daemon
/// had already on the wire.
fn tell(cfg: &Config, verb: &str, items: &[String]) -> Vec<String> {
    let mut busy = Vec::new();
    for chunk in items.chunks(500) {
        let line = format!("{verb} {}", chunk.join(" "));
        match crate::control::request(&cfg.control.socket, &line) {
            Ok(answer) => {
                if let Some(ids) = answer.strip_prefix("ok on-wire=") {
                    busy.extend(ids.split(',').map(str::to_string));
                }
            }
            Err(_) => break,
        }
    }
    busy
}

/// Names the messages whose delivery was already under way when the admin
/// acted: the primary may still take them.
fn on_wire(out: &mut impl Write, busy: &[String]) -> Result<()> {
    for id in busy {
        tracing::info!("{id}: delivery already in progress when the admin acted; it may complete");
        writeln!(
            out,
            "{id}: a delivery already in progress may still complete"
        )?;
    }
    Ok(())
}

/// Tells a running daemon to look at the queue now; false if none answered.
fn poke(cfg: &Config) -> bool {
    crate::control::request(&cfg.control.socket, "flush").is_ok()
}

pub fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

fn message_json(m: &MessageRow) -> serde_json::Value {
    json!({
        "id": m.id,
        "arrival": rfc3339(m.arrival),
        "size": m.size,
        "sender": m.sender,
        "held": m.held,
        "recipients": m.recipients.iter().map(|r| json!({
            "address": r.address,
            "status": r.status,
            "attempts": r.attempts,
            "next_attempt": rfc3339(r.next_attempt),
            "last_reply": r.last_reply,
        })).collect::<Vec<_>>(),
    })
}

fn print_mailq(out: &mut impl Write, rows: &[MessageRow]) -> Result<()> {
    if rows.is_empty() {
        writeln!(out, "Mail queue is empty")?;
        return Ok(());
    }
    writeln!(
        out,
        "-Queue ID-    --Size-- ----Arrival Time----- -Sender/Recipient-------"
    )?;
    let mut rcpts = 0;
    let mut bytes = 0;
    for m in rows {
        // Postfix marks: '!' held, '*' being delivered.
        let mark = if m.held {
            "!"
        } else if m.recipients.iter().any(|r| r.status == "active") {
            "*"
        } else {
            " "
        };
        let sender = if m.sender.is_empty() {
            "MAILER-DAEMON".into()
        } else {
            esc(&m.sender)
        };
        writeln!(
            out,
            "{}{mark} {:>9} {} {sender}",
            m.id,
            m.size,
            rfc3339(m.arrival)
        )?;
        if let Some(reason) = m.hold_reason.as_ref().filter(|_| m.held) {
            writeln!(out, "{:46}(held: {})", "", esc(reason))?;
        }
        for r in &m.recipients {
            if let Some(reply) = &r.last_reply {
                writeln!(out, "{:46}({})", "", esc(reply))?;
            }
            let when = if r.status == "active" {
                "delivering now".to_string()
            } else {
                format!("next attempt {}", rfc3339(r.next_attempt))
            };
            writeln!(
                out,
                "{:46}{}  [{} attempts, {when}]",
                "",
                esc(&r.address),
                r.attempts
            )?;
            rcpts += 1;
        }
        writeln!(out)?;
        bytes += m.size;
    }
    writeln!(
        out,
        "-- {} Kbytes in {} Requests, {rcpts} recipients.",
        (bytes + 1023) / 1024,
        rows.len()
    )?;
    Ok(())
}

fn print_envelope(out: &mut impl Write, m: &MessageRow) -> Result<()> {
    writeln!(out, "*** ENVELOPE RECORDS {} ***", m.id)?;
    writeln!(out, "message_size: {}", m.size)?;
    writeln!(out, "message_arrival_time: {}", rfc3339(m.arrival))?;
    writeln!(out, "sender: {}", esc(&m.sender))?;
    writeln!(out, "client: {} (helo {})", esc(&m.client), esc(&m.helo))?;
    if m.held {
        writeln!(
            out,
            "held: {}",
            esc(m.hold_reason.as_deref().unwrap_or("yes"))
        )?;
    }
    for r in &m.recipients {
        writeln!(
            out,
            "recipient: {} status={} attempts={} next_attempt={}{}",
            esc(&r.address),
            r.status,
            r.attempts,
            rfc3339(r.next_attempt),
            r.last_reply
                .as_ref()
                .map(|x| format!(" last_reply=({})", esc(x)))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

/// The header block including its terminating empty line.
fn header_block(data: &[u8]) -> &[u8] {
    let mut pos = 0;
    for line in data.split_inclusive(|&b| b == b'\n') {
        pos += line.len();
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    &data[..pos]
}
