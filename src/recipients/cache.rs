//! Callout answers kept in the queue database (`recipient_cache`), so they
//! survive restarts and serve while the primary is down — the moment a
//! backup MX needs them most.

use anyhow::Result;
use rusqlite::{params, Connection, OptionalExtension};

/// A remembered answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// true = the primary accepted the address.
    pub valid: bool,
    pub reply: String,
    /// Unix seconds.
    pub checked_at: i64,
}

/// The cache key of an address: the local part lower-cased, the domain in
/// its canonical form, so every spelling of one mailbox shares an answer.
pub fn key(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => format!(
            "{}@{}",
            local.to_lowercase(),
            crate::domain::canonical_or_lower(domain)
        ),
        None => address.to_lowercase(),
    }
}

pub fn get(conn: &Connection, address: &str) -> Result<Option<Cached>> {
    Ok(conn
        .query_row(
            "SELECT verdict, reply, checked_at FROM recipient_cache WHERE address = ?1",
            [key(address)],
            |r| {
                Ok(Cached {
                    valid: r.get::<_, String>(0)? == "ok",
                    reply: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    checked_at: r.get(2)?,
                })
            },
        )
        .optional()?)
}

pub fn put(conn: &Connection, address: &str, c: &Cached) -> Result<()> {
    conn.execute(
        "INSERT INTO recipient_cache (address, verdict, reply, checked_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(address) DO UPDATE SET verdict = excluded.verdict, reply = excluded.reply,
                                            checked_at = excluded.checked_at",
        params![
            key(address),
            if c.valid { "ok" } else { "unknown" },
            c.reply,
            c.checked_at
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_for_every_spelling_of_a_mailbox() {
        for a in [
            "mallory@xn--r8jz45g.jp",
            "Mallory@例え.jp",
            "MALLORY@XN--R8JZ45G.JP.",
        ] {
            assert_eq!(key(a), "mallory@xn--r8jz45g.jp", "{a}");
        }
        assert_eq!(key("u@ｅｘａｍｐｌｅ．ｊｐ"), "u@example.jp");
    }
}
