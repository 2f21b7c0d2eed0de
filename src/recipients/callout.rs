//! Asking the primary whether it knows an address (a "callout", like
//! Postfix's reject_unverified_recipient): `MAIL FROM:<>`, `RCPT TO`, then
//! `RSET` and `QUIT`. No message is ever sent.

use std::time::Duration;

use crate::relay::connect::Connector;
use crate::relay::route::Destination;

/// What the primary said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx to RCPT.
    Valid(String),
    /// 5xx to RCPT.
    Invalid(String),
    /// Anything else: no connection, 4xx, timeout, a refused MAIL FROM:<>.
    Unverifiable(String),
    /// Not asked: the callout budget (`verify_rate`) is spent. Never an
    /// accept, whatever `on_unverifiable` says: otherwise a sender would
    /// only need to spend the budget first to have any address taken.
    Busy,
}

/// Runs one callout within `limit`.
pub async fn ask(
    connector: &Connector,
    dest: &Destination,
    address: &str,
    limit: Duration,
) -> Answer {
    match tokio::time::timeout(limit, ask_inner(connector, dest, address)).await {
        Ok(a) => a,
        Err(_) => Answer::Unverifiable(format!("callout to {} timed out", dest.key)),
    }
}

async fn ask_inner(connector: &Connector, dest: &Destination, address: &str) -> Answer {
    let mut s = match connector.open(dest).await {
        Ok(s) => s,
        Err(r) => return Answer::Unverifiable(r.text),
    };
    let host = s.host.clone();
    let mail = match s.command("MAIL FROM:<>", "after sending MAIL FROM").await {
        Ok(r) => r,
        Err(e) => return Answer::Unverifiable(format!("{host}: {e}")),
    };
    if !mail.is_positive() {
        s.quit().await;
        return Answer::Unverifiable(format!(
            "{host} said: {} (in reply to MAIL FROM)",
            mail.one_line()
        ));
    }
    let rcpt = match s
        .command(&format!("RCPT TO:<{address}>"), "after sending RCPT TO")
        .await
    {
        Ok(r) => r,
        Err(e) => return Answer::Unverifiable(format!("{host}: {e}")),
    };
    let text = format!("{host} said: {} (in reply to RCPT TO)", rcpt.one_line());
    let _ = s.command("RSET", "after sending RSET").await;
    s.quit().await;
    match rcpt.code / 100 {
        2 => Answer::Valid(text),
        5 => Answer::Invalid(text),
        _ => Answer::Unverifiable(text),
    }
}
