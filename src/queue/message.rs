//! What a queued message is: the envelope as received, and its bytes.

/// DSN parameters and ESMTP options from the MAIL command (RFC 3461, 6152, 6531).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `BODY=7BIT` / `BODY=8BITMIME`, upper-cased.
    pub body: Option<String>,
    pub smtputf8: bool,
    /// `RET=FULL` / `RET=HDRS`, upper-cased.
    pub ret: Option<String>,
    /// `ENVID`, xtext-decoded.
    pub envid: Option<String>,
}

/// One envelope recipient with its DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecipient {
    pub address: String,
    /// `NOTIFY=` as given (e.g. `SUCCESS,FAILURE` or `NEVER`), upper-cased.
    pub notify: Option<String>,
    /// `ORCPT=` as `addr-type;address`, xtext-decoded.
    pub orcpt: Option<String>,
}

/// A message ready to be committed to the queue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    /// Unix seconds.
    pub arrival: i64,
    /// Envelope sender; empty for the null sender `<>`.
    pub sender: String,
    pub params: MailParams,
    pub recipients: Vec<NewRecipient>,
    /// `host[ip]` of the client, for logs and bounces.
    pub client: String,
    pub helo: String,
    /// Queue it held (header_checks HOLD, milter quarantine).
    pub hold_reason: Option<String>,
    /// `smtp` for received mail, `bounce` for DSNs mx2 made itself.
    pub origin: &'static str,
    /// The message as it will be relayed (CRLF line endings, not dot-stuffed).
    pub data: Vec<u8>,
}

#[cfg(test)]
impl NewMessage {
    /// A received message for tests: sender `s@x.example`, arrival 100,
    /// no DSN parameters.
    pub fn for_test(id: &str, rcpts: &[&str], data: Vec<u8>) -> NewMessage {
        NewMessage {
            id: id.into(),
            arrival: 100,
            sender: "s@x.example".into(),
            params: MailParams::default(),
            recipients: rcpts
                .iter()
                .map(|a| NewRecipient {
                    address: a.to_string(),
                    notify: None,
                    orcpt: None,
                })
                .collect(),
            client: String::new(),
            helo: String::new(),
            hold_reason: None,
            origin: "smtp",
            data,
        }
    }
}

/// The domain of an address in its canonical form (`crate::domain`):
/// `user@Example.JP` and `user@ｅｘａｍｐｌｅ．ｊｐ` → `example.jp`,
/// `user@例え.jp` → `xn--r8jz45g.jp`. The `domain` column routes, flushes
/// (ETRN) and counts by it.
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| crate::domain::canonical_or_lower(d))
        .unwrap_or_default()
}
