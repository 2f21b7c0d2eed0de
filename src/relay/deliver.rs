//! One SMTP transaction: MAIL, RCPT per recipient, DATA — with
//! per-recipient results.
//!
//! - MAIL parameters are passed on when the peer supports them: SIZE, BODY
//!   (8BITMIME), SMTPUTF8, and with DSN: RET, ENVID; RCPT gets NOTIFY and
//!   ORCPT. ENVID and ORCPT are stored decoded and xtext-encoded here.
//! - With PIPELINING, MAIL, every RCPT and DATA go out in one write
//!   (RFC 2920); otherwise one command at a time.
//! - With PIPELINING the message content does not wait for its own write
//!   either: RFC 2920 lets it start a group, so it is queued on the session
//!   (`Progress::AwaitingEnd`) and leaves together with the next message's
//!   MAIL, RCPT and DATA. Its end-of-data reply is read before theirs.
//!   One round trip per message instead of two; the caller finishes an
//!   awaiting transaction with `finish` when no next message is at hand.
//! - The message is sent byte for byte, dot-stuffed (`stuffing`); a big one
//!   in pieces, never copied whole.
//! - A reused connection that fails before the server said anything about
//!   this message is reported as `Stale`, so the caller can retry on a
//!   fresh connection instead of deferring (servers close idle sessions).

use std::time::Duration;

use super::client::{Caps, Reply, Session, SmtpError};
use super::job::Job;
use super::outcome::{Class, RcptResult};
use super::{stuffing, xtext};

/// Largest message whose content waits to ride with the next commands;
/// bigger ones are sent at once, in pieces of `PIECE` bytes.
const PIPELINED_CONTENT: usize = 256 * 1024;
const PIECE: usize = 256 * 1024;

/// What state the session is in after a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Usable for another transaction.
    Open,
    /// Must be closed (I/O error, timeout, 421).
    Broken,
    /// A reused session was dead before this transaction started: nothing
    /// was decided, try again on a new connection.
    Stale,
}

/// Per-recipient results (in `job.rcpts` order) and the session state.
#[derive(Debug)]
pub struct TxOutcome {
    pub results: Vec<RcptResult>,
    pub end: End,
}

/// A transaction whose message content is queued on the session and whose
/// end-of-data reply is not read yet.
#[derive(Debug)]
pub struct Unfinished {
    /// Answers so far (refused recipients); `None` for the accepted ones.
    results: Vec<Option<RcptResult>>,
    /// Indices of the recipients the server accepted.
    accepted: Vec<usize>,
}

/// How far `transaction` got.
#[derive(Debug)]
pub enum Progress {
    Done(TxOutcome),
    AwaitingEnd(Unfinished),
}

/// Runs one transaction for `job` on `s` with the message bytes `data`.
///
/// `prev`, a transaction of this session still awaiting its end-of-data
/// reply, is finished on the way (its reply is read after this job's
/// commands went out); its outcome is the first value returned, `Some`
/// exactly when `prev` was. When `prev` broke the session, this job is
/// `Stale`: nothing was decided about it.
pub async fn transaction(
    s: &mut Session,
    job: &Job,
    data: &[u8],
    data_timeout: Duration,
    prev: Option<Unfinished>,
) -> (Option<TxOutcome>, Progress) {
    let n = job.rcpts.len();
    let msg = &job.msg;

    // Nothing on the wire may carry a line break smuggled in an address.
    let bad = |a: &str| a.bytes().any(|b| b < 0x20 || b == 0x7f);
    let needs_utf8 = !msg.sender.is_ascii() || job.rcpts.iter().any(|r| !r.address.is_ascii());
    let local = if bad(&msg.sender) || job.rcpts.iter().any(|r| bad(&r.address)) {
        Some(RcptResult::local(
            Class::Perm,
            "5.1.3",
            "bad address syntax (control character)",
        ))
    } else if needs_utf8 && !s.caps.smtputf8 {
        Some(RcptResult::local(
            Class::Perm,
            "5.6.7",
            format!(
                "SMTPUTF8 is required, but was not offered by host {}",
                s.host
            ),
        ))
    } else {
        None
    };

    // `prev` rides along only in a pipelined MAIL group; otherwise it is
    // finished first.
    let mut prev = prev;
    let mut prev_out = None;
    if prev.is_some() && (local.is_some() || s.needs_rset || !s.caps.pipelining) {
        if let Some(u) = prev.take() {
            prev_out = Some(finish(s, u, data_timeout).await);
        }
    }
    if let Some(r) = local {
        let done = TxOutcome {
            results: vec![r; n],
            end: End::Open,
        };
        return (prev_out, Progress::Done(done));
    }
    if prev_out.as_ref().is_some_and(|o| o.end != End::Open) {
        return (prev_out, Progress::Done(stale(n)));
    }

    let reused = s.transactions > 0;
    let mail = mail_command(&s.caps, job, data.len());
    let rcpts: Vec<String> = job.rcpts.iter().map(|r| rcpt_command(&s.caps, r)).collect();

    let mut tx = Tx {
        results: vec![None; n],
        replied: false,
        prev,
        prev_out,
    };
    let res = run(s, &mut tx, &mail, &rcpts, data, data_timeout).await;
    let prev_out = match (tx.prev.take(), tx.prev_out.take()) {
        (_, Some(o)) => Some(o),
        // The MAIL group never went out: `prev`'s content did not either.
        (Some(u), None) => Some(lost(s, u, "sending message content")),
        (None, None) => None,
    };
    let prev_broke = prev_out.as_ref().is_some_and(|o| o.end != End::Open);
    let end = match res {
        Ok(Step::Awaiting(accepted)) => {
            s.transactions += 1;
            let u = Unfinished {
                results: tx.results,
                accepted,
            };
            return (prev_out, Progress::AwaitingEnd(u));
        }
        Ok(Step::Ended(end)) => end,
        Err((e, stage)) => {
            if (reused && !tx.replied) || prev_broke {
                End::Stale
            } else {
                let fail = session_failure(&s.host, &e, stage);
                for r in tx.results.iter_mut() {
                    // Definite answers (a 5xx or 4xx to RCPT) stand; the rest is unknown.
                    if !matches!(r, Some(x) if x.class != Class::Sent) {
                        *r = Some(fail.clone());
                    }
                }
                End::Broken
            }
        }
    };
    if end == End::Stale {
        return (prev_out, Progress::Done(stale(n)));
    }
    s.transactions += 1;
    (prev_out, Progress::Done(outcome(s, tx.results, end)))
}

/// Sends what is queued (the content of `u`'s message) and reads its
/// end-of-data reply.
pub async fn finish(s: &mut Session, u: Unfinished, data_timeout: Duration) -> TxOutcome {
    if s.has_queued_out() {
        if let Err(e) = s.send(b"", "while sending message content").await {
            let f = session_failure(&s.host, &e, "sending message content");
            return fail_accepted(s, u, f);
        }
    }
    read_end(s, u, data_timeout).await
}

/// Reads the end-of-data reply of `u`.
async fn read_end(s: &mut Session, mut u: Unfinished, data_timeout: Duration) -> TxOutcome {
    let host = s.host.clone();
    match s.read_reply_within(data_timeout, "after end of data").await {
        Ok(done) => {
            let res = RcptResult::from_reply(&host, &done, "end of DATA");
            for &i in &u.accepted {
                u.results[i] = Some(res.clone());
            }
            let end = if done.code == 421 {
                End::Broken
            } else {
                End::Open
            };
            outcome(s, u.results, end)
        }
        Err(e) => {
            let f = session_failure(
                &host,
                &e,
                "sending end of data -- message may be sent more than once",
            );
            fail_accepted(s, u, f)
        }
    }
}

/// `u`'s content never left: its accepted recipients get `stage`'s failure.
fn lost(s: &Session, u: Unfinished, stage: &str) -> TxOutcome {
    let f = session_failure(&s.host, &SmtpError::Io("lost connection".into()), stage);
    fail_accepted(s, u, f)
}

fn fail_accepted(s: &Session, mut u: Unfinished, f: RcptResult) -> TxOutcome {
    for &i in &u.accepted {
        u.results[i] = Some(f.clone());
    }
    outcome(s, u.results, End::Broken)
}

fn outcome(s: &Session, results: Vec<Option<RcptResult>>, end: End) -> TxOutcome {
    let fallback = RcptResult::local(Class::Temp, "4.4.2", format!("no reply from {}", s.host));
    TxOutcome {
        results: results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| fallback.clone()))
            .collect(),
        end,
    }
}

/// A transaction whose end was never learnt (kept for the type system:
/// `transaction` always returns the outcome of the `prev` it was given).
pub fn unanswered(n: usize) -> TxOutcome {
    let r = RcptResult::local(Class::Temp, "4.4.2", "no reply after end of data");
    TxOutcome {
        results: vec![r; n],
        end: End::Broken,
    }
}

/// Nothing was decided: try again on a fresh session.
fn stale(n: usize) -> TxOutcome {
    let r = RcptResult::local(
        Class::Temp,
        "4.4.2",
        "session closed before the transaction",
    );
    TxOutcome {
        results: vec![r; n],
        end: End::Stale,
    }
}

struct Tx {
    results: Vec<Option<RcptResult>>,
    /// The server answered something about this transaction (MAIL reply read).
    replied: bool,
    /// An earlier transaction whose end-of-data reply comes first.
    prev: Option<Unfinished>,
    prev_out: Option<TxOutcome>,
}

/// Where `run` stopped.
enum Step {
    /// The transaction is over (answered, refused or abandoned).
    Ended(End),
    /// The content is queued on the session; these recipients were accepted.
    Awaiting(Vec<usize>),
}

type Failure = (SmtpError, &'static str);

async fn run(
    s: &mut Session,
    tx: &mut Tx,
    mail: &str,
    rcpts: &[String],
    data: &[u8],
    data_timeout: Duration,
) -> Result<Step, Failure> {
    if s.needs_rset {
        let r = s
            .command("RSET", "after sending RSET")
            .await
            .map_err(|e| (e, "sending RSET"))?;
        if r.code != 250 {
            return Err((
                SmtpError::Protocol(format!("RSET refused: {}", r.one_line())),
                "sending RSET",
            ));
        }
        s.needs_rset = false;
    }
    let host = s.host.clone();
    let pipelined = s.caps.pipelining;

    // MAIL (and, pipelined, everything up to DATA).
    let mut batch = format!("{mail}\r\n");
    if pipelined {
        for r in rcpts {
            batch.push_str(r);
            batch.push_str("\r\n");
        }
        batch.push_str("DATA\r\n");
    }
    s.send(batch.as_bytes(), "after sending MAIL FROM")
        .await
        .map_err(|e| (e, "sending MAIL FROM"))?;
    if let Some(u) = tx.prev.take() {
        let out = read_end(s, u, data_timeout).await;
        let broke = out.end != End::Open;
        tx.prev_out = Some(out);
        if broke {
            return Ok(Step::Ended(End::Stale));
        }
    }
    let mail_r = s
        .read_reply("after sending MAIL FROM")
        .await
        .map_err(|e| (e, "receiving the MAIL FROM reply"))?;
    if mail_r.code == 421 && s.transactions > 0 {
        // The server ended a reused session before looking at this message.
        return Ok(Step::Ended(End::Stale));
    }
    tx.replied = true;
    if !mail_r.is_positive() {
        let res = RcptResult::from_reply(&host, &mail_r, "MAIL FROM");
        for r in tx.results.iter_mut() {
            *r = Some(res.clone());
        }
        if pipelined {
            // Drain the RCPT and DATA replies (503s) to stay in step.
            for _ in 0..=rcpts.len() {
                s.read_reply("after sending RCPT TO")
                    .await
                    .map_err(|e| (e, "sending RCPT TO"))?;
            }
        }
        s.needs_rset = true;
        return Ok(Step::Ended(if mail_r.code == 421 {
            End::Broken
        } else {
            End::Open
        }));
    }

    // RCPT.
    let mut accepted = Vec::new();
    let mut closing = false;
    for (i, line) in rcpts.iter().enumerate() {
        let r = if pipelined {
            s.read_reply("after sending RCPT TO").await
        } else {
            s.command(line, "after sending RCPT TO").await
        }
        .map_err(|e| (e, "sending RCPT TO"))?;
        closing |= r.code == 421;
        let res = RcptResult::from_reply(&host, &r, "RCPT TO");
        if res.class == Class::Sent {
            accepted.push(i);
        } else {
            tx.results[i] = Some(res);
        }
    }
    if closing {
        for i in accepted {
            tx.results[i] = Some(RcptResult::local(
                Class::Temp,
                "4.4.2",
                format!("host {host} closed the session during RCPT TO"),
            ));
        }
        return Ok(Step::Ended(End::Broken));
    }

    // DATA.
    let data_r = if pipelined {
        s.read_reply("after sending DATA").await
    } else if accepted.is_empty() {
        s.needs_rset = true;
        return Ok(Step::Ended(End::Open));
    } else {
        s.command("DATA", "after sending DATA").await
    }
    .map_err(|e| (e, "sending DATA"))?;
    if data_r.code != 354 {
        let res = RcptResult::from_reply(&host, &data_r, "DATA");
        for &i in &accepted {
            tx.results[i] = Some(res.clone());
        }
        s.needs_rset = true;
        return Ok(Step::Ended(if data_r.code == 421 {
            End::Broken
        } else {
            End::Open
        }));
    }
    if accepted.is_empty() {
        // A server that said 354 with no valid recipient gets an empty message.
        s.send(b".\r\n", "after sending end of data")
            .await
            .map_err(|e| (e, "sending end of data"))?;
        s.read_reply("after sending end of data")
            .await
            .map_err(|e| (e, "sending end of data"))?;
        s.needs_rset = true;
        return Ok(Step::Ended(End::Open));
    }
    if pipelined && data.len() <= PIPELINED_CONTENT {
        // Leaves with the next message's commands (or by `finish`).
        s.queue_out(stuffing::whole(data));
        return Ok(Step::Awaiting(accepted));
    }
    for piece in stuffing::Pieces::new(data, PIECE) {
        s.send(&piece, "while sending message content")
            .await
            .map_err(|e| (e, "sending message content"))?;
    }
    let done: Reply = s
        .read_reply_within(data_timeout, "after end of data")
        .await
        .map_err(|e| {
            (
                e,
                "sending end of data -- message may be sent more than once",
            )
        })?;
    let res = RcptResult::from_reply(&host, &done, "end of DATA");
    for &i in &accepted {
        tx.results[i] = Some(res.clone());
    }
    if done.code == 421 {
        return Ok(Step::Ended(End::Broken));
    }
    Ok(Step::Ended(End::Open))
}

fn mail_command(caps: &Caps, job: &Job, size: usize) -> String {
    let m = &job.msg;
    let mut c = format!("MAIL FROM:<{}>", m.sender);
    if caps.size.is_some() {
        c.push_str(&format!(" SIZE={size}"));
    }
    if caps.eightbitmime {
        if let Some(b) = &m.body {
            c.push_str(&format!(" BODY={b}"));
        }
    }
    if m.smtputf8 && caps.smtputf8 {
        c.push_str(" SMTPUTF8");
    }
    if caps.dsn {
        if let Some(r) = &m.ret {
            c.push_str(&format!(" RET={r}"));
        }
        if let Some(e) = &m.envid {
            c.push_str(&format!(" ENVID={}", xtext::encode(e)));
        }
    }
    c
}

fn rcpt_command(caps: &Caps, r: &super::job::Rcpt) -> String {
    let mut c = format!("RCPT TO:<{}>", r.address);
    if caps.dsn {
        if let Some(n) = &r.notify {
            c.push_str(&format!(" NOTIFY={n}"));
        }
        if let Some((kind, addr)) = r.orcpt.as_deref().and_then(|o| o.split_once(';')) {
            c.push_str(&format!(" ORCPT={kind};{}", xtext::encode(addr)));
        }
    }
    c
}

/// A failed session, worded as Postfix words it.
pub fn session_failure(host: &str, e: &SmtpError, stage: &str) -> RcptResult {
    let (dsn, text) = match e {
        SmtpError::Timeout(_) => (
            "4.4.2",
            format!("conversation with {host} timed out while {stage}"),
        ),
        SmtpError::Io(_) => (
            "4.4.2",
            format!("lost connection with {host} while {stage}"),
        ),
        SmtpError::Protocol(p) => ("4.5.0", format!("{p} (host {host}, while {stage})")),
        SmtpError::Tls(t) => ("4.7.5", format!("TLS with {host} failed: {t}")),
    };
    let mut r = RcptResult::local(Class::Temp, dsn, text);
    r.remote_mta = Some(format!("dns; {}", host.split('[').next().unwrap_or(host)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        use super::super::job::{Msg, Rcpt};
        Job {
            msg: std::sync::Arc::new(Msg {
                id: "X".into(),
                arrival: 0,
                sender: "a+b@sender.example".into(),
                body: Some("8BITMIME".into()),
                smtputf8: false,
                ret: Some("HDRS".into()),
                envid: Some("id=1 2".into()),
                origin: "smtp".into(),
            }),
            rcpts: vec![Rcpt {
                idx: 0,
                address: "bob@example.jp".into(),
                domain: "example.jp".into(),
                attempts: 0,
                notify: Some("SUCCESS,FAILURE".into()),
                orcpt: Some("rfc822;Bob+x=y@example.jp".into()),
                warned: false,
                lease_until: 0,
            }],
            body: None,
            wire: None,
        }
    }

    #[test]
    fn parameters_only_when_the_peer_supports_them() {
        let j = job();
        let plain = Caps::default();
        assert_eq!(
            mail_command(&plain, &j, 10),
            "MAIL FROM:<a+b@sender.example>"
        );
        assert_eq!(
            rcpt_command(&plain, &j.rcpts[0]),
            "RCPT TO:<bob@example.jp>"
        );
        let full = Caps {
            esmtp: true,
            pipelining: true,
            size: Some(0),
            eightbitmime: true,
            smtputf8: true,
            dsn: true,
            starttls: false,
        };
        assert_eq!(
            mail_command(&full, &j, 10),
            "MAIL FROM:<a+b@sender.example> SIZE=10 BODY=8BITMIME RET=HDRS ENVID=id+3D1+202"
        );
        assert_eq!(
            rcpt_command(&full, &j.rcpts[0]),
            "RCPT TO:<bob@example.jp> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+2Bx+3Dy@example.jp"
        );
    }

    #[test]
    fn failures_are_worded_like_postfix() {
        let r = session_failure(
            "mx.example[192.0.2.1]",
            &SmtpError::Io("x".into()),
            "sending RCPT TO",
        );
        assert_eq!(
            r.text,
            "lost connection with mx.example[192.0.2.1] while sending RCPT TO"
        );
        assert_eq!(r.class, Class::Temp);
        assert_eq!(r.remote_mta.as_deref(), Some("dns; mx.example"));
    }
}
