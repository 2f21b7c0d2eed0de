//! A milter client (protocol version 6, as Postfix speaks it).
//!
//! mx2 runs milters after DATA, one connection per message per milter,
//! and replays the whole SMTP transaction to each: option negotiation,
//! connect, HELO, MAIL (with its ESMTP parameters), one RCPT per
//! recipient, DATA, every header, end of headers, the body in chunks of at
//! most 65535 bytes, end of message. Steps the milter asks to skip
//! (SMFIP_NO*) are left out and steps it will not answer (SMFIP_NR_*) are
//! not waited for. Macros are sent the way Postfix sends its defaults
//! (`j`, `_`, `{daemon_name}`, `v`, `{client_addr}`, `{client_name}`, `i`,
//! `{mail_addr}`, `{rcpt_addr}`, `{rcpt_host}`, `{rcpt_mailer}`).
//!
//! Two differences from Postfix, both deliberate:
//! - **Milters run in a chain.** Each milter sees the message (headers,
//!   body and envelope) as the previous one left it. Postfix streams the
//!   same original message to every milter and applies all their edits at
//!   the end; in mx2's one-direction pipeline the later scanner and the
//!   header rules both see what will be relayed.
//! - **A refusal refuses the message.** Running after DATA, mx2 cannot
//!   refuse one recipient: a reject or tempfail at any step (RCPT included)
//!   answers the whole message with the milter's reply, so nothing is lost
//!   without the sender hearing of it.
//!
//! The headers a milter sees include mx2's own `Received:` line (first, as
//! sendmail shows its own), and header indexes count it. Header values are
//! sent with folded lines joined by `\n`, without the leading space unless
//! the milter asked for SMFIP_HDR_LEADSPC. A milter's edits are applied
//! only when it reaches its final answer; a milter that fails halfway
//! changes nothing.

pub mod proto;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use self::proto::{Negotiated, Reply};
use super::endpoint::{Endpoint, Io};
use super::headers::{field_name, field_value, format_field, Message};
use crate::pipeline::Envelope;
use crate::queue::NewRecipient;
use crate::smtp::command::xtext_encode;

/// Postfix's default texts for a bare reject / tempfail.
pub const REJECT_REPLY: &str = "550 5.7.1 Command rejected";
pub const TEMPFAIL_REPLY: &str = "451 4.7.1 Service unavailable - try again later";

/// One configured milter.
#[derive(Debug, Clone)]
pub struct Milter {
    /// As written in the config, for logs.
    pub name: String,
    pub endpoint: Endpoint,
}

/// How a milter's dialogue ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    /// Continue (or accept at end of message): apply the edits, go on.
    Continue,
    /// Accepted before end of message: no edits, go on.
    Accept,
    Discard,
    /// A complete SMTP reply (5xx).
    Reject(String),
    /// A complete SMTP reply (4xx).
    Tempfail(String),
}

/// What one milter said about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub last: Final,
    /// End-of-message modifications in the order received.
    pub edits: Vec<Reply>,
    /// Whether header values carry their own leading space.
    pub leadspc: bool,
    /// The step at which the milter gave its answer.
    pub stage: &'static str,
}

/// What the transaction looks like to the milter.
pub struct Transaction<'a> {
    pub env: &'a Envelope,
    pub hostname: &'a str,
}

impl Transaction<'_> {
    fn client_ip(&self) -> Option<IpAddr> {
        let c = &self.env.client;
        let inner = c.rsplit_once('[')?.1.trim_end_matches(']');
        inner.trim_start_matches("IPv6:").parse().ok()
    }

    /// The client's name, `[ip]` when unknown (as Postfix and sendmail send it).
    fn client_name(&self) -> String {
        let name = self.env.client.split('[').next().unwrap_or("");
        match (name, self.client_ip()) {
            ("" | "unknown", Some(ip)) => format!("[{ip}]"),
            ("", None) => "unknown".into(),
            (n, _) => n.to_string(),
        }
    }

    fn mail_args(&self) -> Vec<String> {
        let p = &self.env.params;
        let mut v = vec![format!("<{}>", self.env.sender)];
        if let Some(b) = &p.body {
            v.push(format!("BODY={b}"));
        }
        if p.smtputf8 {
            v.push("SMTPUTF8".into());
        }
        if let Some(r) = &p.ret {
            v.push(format!("RET={r}"));
        }
        if let Some(e) = &p.envid {
            v.push(format!("ENVID={}", xtext_encode(e)));
        }
        v
    }

    fn rcpt_args(r: &NewRecipient) -> Vec<String> {
        let mut v = vec![format!("<{}>", r.address)];
        if let Some(n) = &r.notify {
            v.push(format!("NOTIFY={n}"));
        }
        if let Some(o) = &r.orcpt {
            let (t, a) = o.split_once(';').unwrap_or(("rfc822", o));
            v.push(format!("ORCPT={t};{}", xtext_encode(a)));
        }
        v
    }
}

/// Talks to one milter about the message; every read and write is bounded
/// by `timeout` (a milter's SMFIR_PROGRESS starts a new wait).
pub async fn run(
    m: &Milter,
    tx: &Transaction<'_>,
    msg: &Message,
    timeout: Duration,
) -> Result<Outcome> {
    let mut io = m.endpoint.connect(timeout).await?;
    let mut s = Session {
        io: &mut io,
        timeout,
    };
    let out = s.dialogue(tx, msg).await;
    // Say goodbye whatever happened; the milter may already be gone.
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        proto::write_all(s.io, &proto::packet(proto::C_QUIT, b"")),
    )
    .await;
    out
}

struct Session<'a> {
    io: &'a mut Box<dyn Io>,
    timeout: Duration,
}

/// What an answer before end of message means for the dialogue.
enum Step {
    Go,
    SkipBody,
    Stop(Final),
}

impl Session<'_> {
    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        tokio::time::timeout(self.timeout, proto::write_all(self.io, bytes))
            .await
            .map_err(|_| anyhow!("writing to milter: timed out"))?
    }

    async fn reply(&mut self) -> Result<Reply> {
        loop {
            let (cmd, data) = tokio::time::timeout(self.timeout, proto::read_packet(self.io))
                .await
                .map_err(|_| anyhow!("no answer within {}s", self.timeout.as_secs_f32()))??;
            let r = proto::parse_reply(cmd, &data)?;
            if r != Reply::Progress {
                return Ok(r);
            }
        }
    }

    /// Sends a command; when the milter answers this step, reads and judges it.
    async fn step(&mut self, bytes: &[u8], answers: bool, stage: &str) -> Result<Step> {
        self.send(bytes).await?;
        if !answers {
            return Ok(Step::Go);
        }
        let r = self.reply().await?;
        Ok(match r {
            Reply::Continue => Step::Go,
            Reply::Skip if stage == "body" => Step::SkipBody,
            other => match verdict(other.clone()) {
                Some(f) => Step::Stop(f),
                None => bail!("unexpected answer {other:?} at {stage}"),
            },
        })
    }

    async fn dialogue(&mut self, tx: &Transaction<'_>, msg: &Message) -> Result<Outcome> {
        self.send(&proto::optneg()).await?;
        let (cmd, data) = tokio::time::timeout(self.timeout, proto::read_packet(self.io))
            .await
            .map_err(|_| anyhow!("no answer to option negotiation"))??;
        if cmd != proto::R_OPTNEG {
            bail!("expected option negotiation, got {:?}", cmd as char);
        }
        let n: Negotiated = proto::parse_optneg(&data)?;
        let leadspc = n.has(proto::P_HDR_LEADSPC);
        let done = |last: Final, stage: &'static str| Outcome {
            last,
            edits: Vec::new(),
            leadspc,
            stage,
        };
        let env = tx.env;
        let id = env.id.clone();
        let ip = tx.client_ip();

        macro_rules! step {
            ($bytes:expr, $answers:expr, $stage:literal) => {
                match self.step(&$bytes, $answers, $stage).await? {
                    Step::Stop(f) => {
                        // The transaction ends here; QUIT follows in `run`.
                        let _ = self.send(&proto::packet(proto::C_ABORT, b"")).await;
                        return Ok(done(f, $stage));
                    }
                    s => s,
                }
            };
        }

        if !n.has(proto::P_NOCONNECT) {
            let client_name = tx.client_name();
            let mut mac = vec![
                ("j", tx.hostname.to_string()),
                ("{daemon_name}", "mx2".to_string()),
                ("v", format!("mx2 {}", env!("CARGO_PKG_VERSION"))),
                (
                    "_",
                    match ip {
                        Some(ip) => format!("{client_name} [{ip}]"),
                        None => client_name.clone(),
                    },
                ),
                ("{client_name}", client_name.clone()),
            ];
            if let Some(ip) = ip {
                mac.push(("{client_addr}", ip.to_string()));
            }
            self.send(&proto::macros(proto::C_CONNECT, &mac)).await?;
            step!(
                proto::connect(&client_name, ip, 0),
                !n.has(proto::P_NR_CONN),
                "connect"
            );
        }
        if !n.has(proto::P_NOHELO) {
            step!(
                proto::packet(proto::C_HELO, &proto::cstrings(&[&env.helo])),
                !n.has(proto::P_NR_HELO),
                "helo"
            );
        }
        if !n.has(proto::P_NOMAIL) {
            let mac = [("i", id.clone()), ("{mail_addr}", env.sender.clone())];
            self.send(&proto::macros(proto::C_MAIL, &mac)).await?;
            step!(
                proto::packet(proto::C_MAIL, &proto::cstrings(&tx.mail_args())),
                !n.has(proto::P_NR_MAIL),
                "mail"
            );
        }
        if !n.has(proto::P_NORCPT) {
            for r in &env.recipients {
                let host = r.address.rsplit_once('@').map(|x| x.1).unwrap_or("");
                let mac = [
                    ("i", id.clone()),
                    ("{rcpt_addr}", r.address.clone()),
                    ("{rcpt_host}", host.to_string()),
                    ("{rcpt_mailer}", "smtp".to_string()),
                ];
                self.send(&proto::macros(proto::C_RCPT, &mac)).await?;
                step!(
                    proto::packet(proto::C_RCPT, &proto::cstrings(&Transaction::rcpt_args(r))),
                    !n.has(proto::P_NR_RCPT),
                    "rcpt"
                );
            }
        }
        if n.version >= 4 && !n.has(proto::P_NODATA) {
            self.send(&proto::macros(proto::C_DATA, &[("i", id.clone())]))
                .await?;
            step!(
                proto::packet(proto::C_DATA, b""),
                !n.has(proto::P_NR_DATA),
                "data"
            );
        }
        if !n.has(proto::P_NOHDRS) {
            for f in &msg.fields {
                let name = field_name(f);
                let value = header_value(field_value(f), leadspc);
                let data = proto::cstrings(&[name, &value[..]]);
                step!(
                    proto::packet(proto::C_HEADER, &data),
                    !n.has(proto::P_NR_HDR),
                    "header"
                );
            }
        }
        if !n.has(proto::P_NOEOH) {
            self.send(&proto::macros(proto::C_EOH, &[("i", id.clone())]))
                .await?;
            step!(
                proto::packet(proto::C_EOH, b""),
                !n.has(proto::P_NR_EOH),
                "end of headers"
            );
        }
        if !n.has(proto::P_NOBODY) {
            for chunk in msg.body.chunks(proto::CHUNK) {
                if let Step::SkipBody = step!(
                    proto::packet(proto::C_BODY, chunk),
                    !n.has(proto::P_NR_BODY),
                    "body"
                ) {
                    break;
                }
            }
        }
        self.send(&proto::macros(proto::C_BODYEOB, &[("i", id.clone())]))
            .await?;
        self.send(&proto::packet(proto::C_BODYEOB, b"")).await?;
        let mut edits = Vec::new();
        // A runaway milter must not grow the message without bound.
        let limit = msg
            .body
            .len()
            .saturating_mul(4)
            .saturating_add(MAX_EDIT_BYTES);
        let mut edit_bytes = 0usize;
        loop {
            let r = self.reply().await?;
            edit_bytes = edit_bytes.saturating_add(edit_size(&r));
            if edit_bytes > limit {
                bail!("milter edits exceed {limit} bytes");
            }
            if let Some(f) = verdict(r.clone()) {
                let last = if f == Final::Accept {
                    Final::Continue
                } else {
                    f
                };
                return Ok(Outcome {
                    last,
                    edits,
                    leadspc,
                    stage: "end of message",
                });
            }
            match r {
                Reply::AddHeader { .. }
                | Reply::InsHeader { .. }
                | Reply::ChgHeader { .. }
                | Reply::ReplBody(_)
                | Reply::AddRcpt { .. }
                | Reply::DelRcpt(_)
                | Reply::ChgFrom { .. }
                | Reply::Quarantine(_) => edits.push(r),
                other => bail!("unexpected answer {other:?} at end of message"),
            }
        }
    }
}

/// Bytes of edits a milter may send beyond four times the body size.
const MAX_EDIT_BYTES: usize = 16 << 20;

/// Roughly how many bytes an edit adds to the message.
fn edit_size(r: &Reply) -> usize {
    match r {
        Reply::AddHeader { name, value }
        | Reply::InsHeader { name, value, .. }
        | Reply::ChgHeader { name, value, .. } => name.len() + value.len() + 4,
        Reply::ReplBody(b) => b.len(),
        Reply::AddRcpt { rcpt, .. } | Reply::DelRcpt(rcpt) => rcpt.len() + 64,
        Reply::ChgFrom { from, .. } => from.len(),
        Reply::Quarantine(q) => q.len(),
        _ => 0,
    }
}

/// The final answers a milter can give at any step.
fn verdict(r: Reply) -> Option<Final> {
    Some(match r {
        Reply::Accept => Final::Accept,
        Reply::Continue => Final::Continue,
        Reply::Discard => Final::Discard,
        Reply::Reject => Final::Reject(REJECT_REPLY.into()),
        Reply::Tempfail | Reply::ConnFail | Reply::Shutdown => {
            Final::Tempfail(TEMPFAIL_REPLY.into())
        }
        Reply::Code(text) => reply_code(&text),
        _ => return None,
    })
}

/// A milter's SMFIR_REPLYCODE text as one well-formed (possibly
/// multi-line) SMTP reply; anything but 4xx/5xx becomes a plain tempfail,
/// as Postfix does.
pub fn reply_code(text: &str) -> Final {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let Some(first) = lines.first() else {
        return Final::Tempfail(TEMPFAIL_REPLY.into());
    };
    // Byte-wise: the text is the milter's, and byte 3 may fall inside a
    // multi-byte character (`5\xff\xff` arrives as `5` + two U+FFFD).
    let code = match first.as_bytes() {
        [a @ (b'4' | b'5'), b, c, ..] if b.is_ascii_digit() && c.is_ascii_digit() => &first[..3],
        _ => return Final::Tempfail(TEMPFAIL_REPLY.into()),
    };
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let rest = if l.starts_with(code) { &l[3..] } else { l };
        let rest = rest.strip_prefix(['-', ' ']).unwrap_or(rest);
        if i > 0 {
            out.push_str("\r\n");
        }
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        // A bare CR or other control character would reach the client
        // inside our reply; Postfix's printable() makes them '?'.
        let rest: String = rest
            .chars()
            .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
            .collect();
        out.push_str(&format!("{code}{sep}{rest}"));
    }
    if code.starts_with('5') {
        Final::Reject(out)
    } else {
        Final::Tempfail(out)
    }
}

/// A header value as the milter expects it: folded lines joined by `\n`,
/// leading blanks removed unless SMFIP_HDR_LEADSPC.
fn header_value(v: &[u8], leadspc: bool) -> Vec<u8> {
    let v = if leadspc {
        v
    } else {
        let n = v.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        &v[n..]
    };
    let mut out = Vec::with_capacity(v.len());
    for (i, &b) in v.iter().enumerate() {
        if b == b'\r' && v.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

/// `<addr>` → `addr`.
fn bare(a: &str) -> &str {
    let a = a.trim();
    a.strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(a)
}

/// What applying a milter's edits did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub notes: Vec<String>,
    pub quarantine: Option<String>,
}

/// Applies a finished milter's edits to the message and the envelope.
pub fn apply(out: &Outcome, msg: &mut Message, env: &mut Envelope) -> Applied {
    let mut a = Applied::default();
    let mut body: Option<Vec<u8>> = None;
    for e in &out.edits {
        match e {
            Reply::AddHeader { name, value } => {
                msg.append(format_field(name, value, out.leadspc));
                a.notes.push(format!("add header {name}"));
            }
            Reply::InsHeader { index, name, value } => {
                msg.insert(*index as usize, format_field(name, value, out.leadspc));
                a.notes.push(format!("insert header {name} at {index}"));
            }
            Reply::ChgHeader { index, name, value } => {
                msg.change(name, *index as usize, value, out.leadspc);
                let what = if value.is_empty() { "delete" } else { "change" };
                a.notes.push(format!("{what} header {name}[{index}]"));
            }
            Reply::ReplBody(chunk) => body.get_or_insert_with(Vec::new).extend_from_slice(chunk),
            Reply::AddRcpt { rcpt, args } => {
                let addr = bare(rcpt).to_string();
                let notify = args.as_deref().and_then(|s| {
                    s.split_whitespace()
                        .find_map(|p| p.strip_prefix("NOTIFY="))
                        .map(|n| n.to_ascii_uppercase())
                });
                if !env
                    .recipients
                    .iter()
                    .any(|r| r.address.eq_ignore_ascii_case(&addr))
                {
                    env.recipients.push(NewRecipient {
                        address: addr.clone(),
                        notify,
                        orcpt: None,
                    });
                }
                a.notes.push(format!("add rcpt <{addr}>"));
            }
            Reply::DelRcpt(rcpt) => {
                let addr = bare(rcpt);
                env.recipients
                    .retain(|r| !r.address.eq_ignore_ascii_case(addr));
                a.notes.push(format!("delete rcpt <{addr}>"));
            }
            Reply::ChgFrom { from, .. } => {
                env.sender = bare(from).to_string();
                a.notes.push(format!("change sender <{}>", env.sender));
            }
            Reply::Quarantine(reason) => {
                a.quarantine = Some(reason.clone());
                a.notes.push(format!("quarantine ({reason})"));
            }
            _ => {}
        }
    }
    if let Some(b) = body {
        msg.replace_body(&b);
        a.notes
            .push(format!("replace body ({} bytes)", msg.body.len()));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::MailParams;

    fn env() -> Envelope {
        Envelope {
            id: "ID1".into(),
            sender: "a@s.example".into(),
            params: MailParams {
                body: Some("8BITMIME".into()),
                smtputf8: false,
                ret: Some("HDRS".into()),
                envid: Some("x+y=".into()),
            },
            recipients: vec![NewRecipient {
                address: "b@example.jp".into(),
                notify: Some("NEVER".into()),
                orcpt: Some("rfc822;b@example.jp".into()),
            }],
            client: "unknown[192.0.2.7]".into(),
            helo: "client.test".into(),
        }
    }

    #[test]
    fn transaction_details() {
        let e = env();
        let tx = Transaction {
            env: &e,
            hostname: "mx2.test",
        };
        assert_eq!(tx.client_ip(), Some("192.0.2.7".parse().unwrap()));
        assert_eq!(tx.client_name(), "[192.0.2.7]");
        assert_eq!(
            tx.mail_args(),
            [
                "<a@s.example>",
                "BODY=8BITMIME",
                "RET=HDRS",
                "ENVID=x+2By+3D"
            ]
        );
        assert_eq!(
            Transaction::rcpt_args(&e.recipients[0]),
            [
                "<b@example.jp>",
                "NOTIFY=NEVER",
                "ORCPT=rfc822;b@example.jp"
            ]
        );
    }

    #[test]
    fn reply_codes() {
        assert_eq!(
            reply_code("550 5.7.1 no"),
            Final::Reject("550 5.7.1 no".into())
        );
        assert_eq!(
            reply_code("451-4.7.1 a\r\n451 4.7.1 b\r\n"),
            Final::Tempfail("451-4.7.1 a\r\n451 4.7.1 b".into())
        );
        assert_eq!(reply_code("250 ok"), Final::Tempfail(TEMPFAIL_REPLY.into()));
        assert_eq!(reply_code(""), Final::Tempfail(TEMPFAIL_REPLY.into()));
    }

    /// Regression (issue 16): byte 3 inside a multi-byte character panicked.
    #[test]
    fn reply_code_with_invalid_utf8_is_a_plain_tempfail() {
        let Ok(Reply::Code(text)) = proto::parse_reply(proto::R_REPLYCODE, b"5\xff\xff reject\0")
        else {
            panic!("not a reply code");
        };
        assert_eq!(reply_code(&text), Final::Tempfail(TEMPFAIL_REPLY.into()));
        assert_eq!(reply_code("4é1 x"), Final::Tempfail(TEMPFAIL_REPLY.into()));
        assert_eq!(reply_code("45"), Final::Tempfail(TEMPFAIL_REPLY.into()));
        // A later line that starts like the code but breaks inside a character.
        assert_eq!(
            reply_code("550-5.7.1 a\n55é b"),
            Final::Reject("550-5.7.1 a\r\n550 55é b".into())
        );
        assert_eq!(
            reply_code("451 a\rRSET\x1b[2J"),
            Final::Tempfail("451 a?RSET?[2J".into())
        );
    }

    #[test]
    fn header_values_for_the_milter() {
        assert_eq!(
            header_value(b" No, score=1\r\n\ttests=A", false),
            b"No, score=1\n\ttests=A"
        );
        assert_eq!(header_value(b" v", true), b" v");
    }

    #[test]
    fn edits_apply_in_order() {
        let mut e = env();
        let mut m = Message::parse(
            b"Received: by mx2\r\nSubject: s\r\nX-Spam-Flag: NO\r\n\r\nold\r\n".to_vec(),
        );
        let out = Outcome {
            last: Final::Continue,
            leadspc: false,
            stage: "end of message",
            edits: vec![
                Reply::AddHeader {
                    name: "X-Virus-Status".into(),
                    value: b"Clean".to_vec(),
                },
                Reply::InsHeader {
                    index: 0,
                    name: "X-Top".into(),
                    value: b"1".to_vec(),
                },
                Reply::ChgHeader {
                    index: 1,
                    name: "X-Spam-Flag".into(),
                    value: b"YES".to_vec(),
                },
                Reply::ChgHeader {
                    index: 1,
                    name: "Subject".into(),
                    value: vec![],
                },
                Reply::ReplBody(b"new\n".to_vec()),
                Reply::ReplBody(b"body\n".to_vec()),
                Reply::AddRcpt {
                    rcpt: "<c@example.jp>".into(),
                    args: Some("NOTIFY=failure".into()),
                },
                Reply::DelRcpt("<B@example.jp>".into()),
                Reply::ChgFrom {
                    from: "<new@s.example>".into(),
                    args: None,
                },
                Reply::Quarantine("looks bad".into()),
            ],
        };
        let a = apply(&out, &mut m, &mut e);
        assert_eq!(
            m.to_bytes(),
            b"X-Top: 1\r\nReceived: by mx2\r\nX-Spam-Flag: YES\r\nX-Virus-Status: Clean\r\n\r\nnew\r\nbody\r\n"
        );
        assert_eq!(e.recipients.len(), 1);
        assert_eq!(e.recipients[0].address, "c@example.jp");
        assert_eq!(e.recipients[0].notify.as_deref(), Some("FAILURE"));
        assert_eq!(e.sender, "new@s.example");
        assert_eq!(a.quarantine.as_deref(), Some("looks bad"));
    }
}
