//! Delivery status notifications (RFC 3464) mx2 sends to a sender:
//! failed (bounce), delayed (warning) and relayed (NOTIFY=SUCCESS to a
//! primary that does not speak DSN).
//!
//! A DSN is a `multipart/report; report-type=delivery-status` message from
//! `MAILER-DAEMON@hostname` with a null envelope sender (so it can never
//! cause another DSN): a human-readable part in the spirit of Postfix's, a
//! `message/delivery-status` part, and the original message's headers
//! (`text/rfc822-headers`) or, with `RET=FULL`, the whole message
//! (`message/rfc822`). It is queued like any mail, addressed to the
//! sender, and routed by the transport map (`*` allowed) or the sender
//! domain's MX.

use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

use crate::queue::{MailParams, NewMessage, NewRecipient};

/// The kind of report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Relayed,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Relayed => "relayed",
        }
    }
}

/// Largest original message returned whole with RET=FULL; above it only
/// the headers go back (as Postfix's bounce_size_limit does).
const FULL_RETURN_LIMIT: usize = 10_000_000;
/// Longest diagnostic text kept on one DSN field line.
const MAX_FIELD: usize = 900;

/// One recipient's entry in a report.
#[derive(Debug, Clone)]
pub struct ReportRcpt {
    pub address: String,
    /// `addr-type;address` from ORCPT.
    pub orcpt: Option<String>,
    /// RFC 3463 status.
    pub status: String,
    /// `dns; host` of the MTA that answered, if any.
    pub remote_mta: Option<String>,
    /// `smtp; 550 5.1.1 ...` or `X-mx2; ...`.
    pub diagnostic: String,
    /// The reason in words, for the human-readable part.
    pub text: String,
}

/// Everything a report is made from.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    pub action: Action,
    /// This host (Reporting-MTA, From: MAILER-DAEMON@…).
    pub hostname: &'a str,
    /// Queue id of the original message.
    pub queue_id: &'a str,
    /// Original envelope sender: the report's recipient.
    pub sender: &'a str,
    pub envid: Option<&'a str>,
    /// `RET=FULL` was asked for.
    pub ret_full: bool,
    /// Unix seconds.
    pub arrival: i64,
    pub now: i64,
    /// For delayed reports: when retrying stops (unix seconds).
    pub retry_until: Option<i64>,
    /// How long the message has waited, for delayed reports' text.
    pub delayed_for: Option<i64>,
    pub rcpts: Vec<ReportRcpt>,
    /// The original message (CRLF).
    pub original: &'a [u8],
}

/// Builds the report message to queue (origin `bounce`, null sender).
pub fn new_message(r: &Report<'_>) -> NewMessage {
    let id = crate::queue::id::new_id();
    let data = compose(r, &id);
    let smtputf8 = !r.sender.is_ascii() || r.rcpts.iter().any(|x| !x.address.is_ascii());
    let eight_bit = data.iter().any(|&b| b >= 0x80);
    NewMessage {
        id,
        arrival: r.now,
        sender: String::new(),
        params: MailParams {
            body: eight_bit.then(|| "8BITMIME".to_string()),
            smtputf8,
            ret: None,
            envid: None,
        },
        recipients: vec![NewRecipient {
            address: r.sender.to_string(),
            notify: Some("NEVER".into()),
            orcpt: None,
        }],
        client: "local".into(),
        helo: String::new(),
        hold_reason: None,
        origin: "bounce",
        data,
    }
}

/// The report's bytes (CRLF line endings). `id` is the report's own queue id.
pub fn compose(r: &Report<'_>, id: &str) -> Vec<u8> {
    let boundary = format!("{id}.{}/{}", r.now, r.hostname);
    let utf8 = !r.sender.is_ascii() || r.rcpts.iter().any(|x| !x.address.is_ascii());
    let mut m = String::new();
    let (subject, desc) = match r.action {
        Action::Failed => ("Undelivered Mail Returned to Sender", "Undelivered Message"),
        Action::Delayed => ("Delayed Mail (still being retried)", "Delayed Message"),
        Action::Relayed => ("Successful Mail Delivery Report", "Delivered Message"),
    };
    let line = |m: &mut String, s: &str| {
        m.push_str(s);
        m.push_str("\r\n");
    };
    line(
        &mut m,
        &format!("From: MAILER-DAEMON@{} (Mail Delivery System)", r.hostname),
    );
    line(&mut m, &format!("To: <{}>", r.sender));
    line(&mut m, &format!("Subject: {subject}"));
    line(&mut m, &format!("Date: {}", date(r.now)));
    line(&mut m, &format!("Message-Id: <{id}@{}>", r.hostname));
    line(&mut m, "Auto-Submitted: auto-replied");
    line(&mut m, "MIME-Version: 1.0");
    line(
        &mut m,
        &format!("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\""),
    );
    line(&mut m, "Content-Transfer-Encoding: 8bit");
    line(&mut m, "");
    line(&mut m, "This is a MIME-encapsulated message.");
    line(&mut m, "");

    // 1. The words.
    line(&mut m, &format!("--{boundary}"));
    line(&mut m, "Content-Description: Notification");
    line(&mut m, "Content-Type: text/plain; charset=utf-8");
    line(&mut m, "Content-Transfer-Encoding: 8bit");
    line(&mut m, "");
    for l in human_text(r) {
        line(&mut m, &l);
    }
    line(&mut m, "");

    // 2. The machine-readable report.
    line(&mut m, &format!("--{boundary}"));
    line(&mut m, "Content-Description: Delivery report");
    line(
        &mut m,
        if utf8 {
            "Content-Type: message/global-delivery-status"
        } else {
            "Content-Type: message/delivery-status"
        },
    );
    line(&mut m, "");
    line(&mut m, &format!("Reporting-MTA: dns; {}", r.hostname));
    line(&mut m, &format!("X-Mx2-Queue-ID: {}", r.queue_id));
    if let Some(e) = r.envid {
        line(&mut m, &format!("Original-Envelope-Id: {}", clip(e)));
    }
    line(&mut m, &format!("X-Mx2-Sender: rfc822; {}", r.sender));
    line(&mut m, &format!("Arrival-Date: {}", date(r.arrival)));
    for x in &r.rcpts {
        line(&mut m, "");
        let kind = if x.address.is_ascii() {
            "rfc822"
        } else {
            "utf-8"
        };
        line(&mut m, &format!("Final-Recipient: {kind}; {}", x.address));
        if let Some(o) = &x.orcpt {
            line(&mut m, &format!("Original-Recipient: {}", clip(o)));
        }
        line(&mut m, &format!("Action: {}", r.action.word()));
        line(&mut m, &format!("Status: {}", x.status));
        if let Some(mta) = &x.remote_mta {
            line(&mut m, &format!("Remote-MTA: {mta}"));
        }
        if r.action != Action::Relayed {
            line(&mut m, &format!("Diagnostic-Code: {}", clip(&x.diagnostic)));
        }
        line(&mut m, &format!("Last-Attempt-Date: {}", date(r.now)));
        if let (Action::Delayed, Some(until)) = (r.action, r.retry_until) {
            line(&mut m, &format!("Will-Retry-Until: {}", date(until)));
        }
    }
    line(&mut m, "");

    // 3. The original (headers, or all of it).
    line(&mut m, &format!("--{boundary}"));
    let full = r.ret_full && r.original.len() <= FULL_RETURN_LIMIT;
    line(
        &mut m,
        &format!(
            "Content-Description: {desc}{}",
            if full { "" } else { " Headers" }
        ),
    );
    // RFC 6533: returned content with raw UTF-8 headers is message/global*.
    let returned = if full {
        r.original
    } else {
        header_block(r.original)
    };
    let global = utf8 || !header_block(r.original).is_ascii();
    line(
        &mut m,
        match (full, global) {
            (true, false) => "Content-Type: message/rfc822",
            (true, true) => "Content-Type: message/global",
            (false, false) => "Content-Type: text/rfc822-headers",
            (false, true) => "Content-Type: message/global-headers",
        },
    );
    line(&mut m, "");
    let mut out = m.into_bytes();
    let part = returned;
    out.extend_from_slice(part);
    if !part.is_empty() && !part.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

fn human_text(r: &Report<'_>) -> Vec<String> {
    let mut t = vec![
        format!("This is the mail system at host {}.", r.hostname),
        String::new(),
    ];
    match r.action {
        Action::Failed => {
            t.push("I'm sorry to have to inform you that your message could not".into());
            t.push(
                "be delivered to one or more recipients. Its headers are attached below.".into(),
            );
            t.push(String::new());
            t.push("For further assistance, please send mail to postmaster.".into());
            t.push(String::new());
            t.push("If you do so, please include this problem report.".into());
        }
        Action::Delayed => {
            t.push("####################################################################".into());
            t.push("# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #".into());
            t.push("####################################################################".into());
            t.push(String::new());
            if let Some(d) = r.delayed_for {
                t.push(format!(
                    "Your message could not be delivered for {}.",
                    human_duration(d)
                ));
            }
            if let Some(until) = r.retry_until {
                t.push(format!("It will be retried until {}.", date(until)));
            }
        }
        Action::Relayed => {
            t.push("Your message was successfully relayed to the destination(s) listed".into());
            t.push("below. That mail system does not report delivery status, so you".into());
            t.push("will not hear from it again.".into());
        }
    }
    t.push(String::new());
    t.push("                   The mail system".into());
    for x in &r.rcpts {
        t.push(String::new());
        t.push(format!("<{}>: {}", x.address, clip(&x.text)));
    }
    t
}

/// The top-level header block, including the CRLF that ends its last line.
pub fn header_block(data: &[u8]) -> &[u8] {
    if data.starts_with(b"\r\n") {
        return &[];
    }
    match data.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &data[..i + 2],
        None => data,
    }
}

/// RFC 5322 date in UTC.
pub fn date(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc2822).ok())
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".into())
}

fn human_duration(secs: i64) -> String {
    match secs {
        s if s >= 86400 => format!("{} day(s)", s / 86400),
        s if s >= 3600 => format!("{} hour(s)", s / 3600),
        s if s >= 60 => format!("{} minute(s)", s / 60),
        s => format!("{s} second(s)"),
    }
}

/// Cuts a field value at `MAX_FIELD` bytes (on a character boundary) and
/// removes line breaks, so a long or hostile reply cannot break the format.
fn clip(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.len() <= MAX_FIELD {
        return flat;
    }
    let mut end = MAX_FIELD;
    while !flat.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &flat[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(original: &[u8], ret_full: bool) -> Report<'_> {
        Report {
            action: Action::Failed,
            hostname: "mx2.example",
            queue_id: "0ABCDEFGHJKM",
            sender: "alice@sender.example",
            envid: Some("env-42"),
            ret_full,
            arrival: 1_700_000_000,
            now: 1_700_000_100,
            retry_until: None,
            delayed_for: None,
            rcpts: vec![ReportRcpt {
                address: "bob@example.jp".into(),
                orcpt: Some("rfc822;Bob@Example.JP".into()),
                status: "5.1.1".into(),
                remote_mta: Some("dns; primary.example".into()),
                diagnostic: "smtp; 550 5.1.1 <bob@example.jp>: User unknown".into(),
                text: "host primary.example[192.0.2.1] said: 550 5.1.1 <bob@example.jp>: User unknown (in reply to RCPT TO command)".into(),
            }],
            original,
        }
    }

    const ORIGINAL: &[u8] = b"Received: from x\r\nFrom: Alice <alice@sender.example>\r\nSubject: hi\r\n\r\nsecret body\r\n";

    #[test]
    fn failed_report_structure() {
        let out = compose(&report(ORIGINAL, false), "0ZZZZZZZZZZZ");
        let s = String::from_utf8(out.clone()).unwrap();
        assert!(
            s.starts_with("From: MAILER-DAEMON@mx2.example (Mail Delivery System)\r\n"),
            "{s}"
        );
        assert!(s.contains("\r\nTo: <alice@sender.example>\r\n"));
        assert!(s.contains("\r\nSubject: Undelivered Mail Returned to Sender\r\n"));
        assert!(s.contains("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"0ZZZZZZZZZZZ.1700000100/mx2.example\""));
        let boundary = "--0ZZZZZZZZZZZ.1700000100/mx2.example";
        assert_eq!(s.matches(boundary).count(), 4, "{s}");
        assert!(s.ends_with(&format!("{boundary}--\r\n")));
        for f in [
            "Reporting-MTA: dns; mx2.example\r\n",
            "Original-Envelope-Id: env-42\r\n",
            "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n",
            "Final-Recipient: rfc822; bob@example.jp\r\n",
            "Original-Recipient: rfc822;Bob@Example.JP\r\n",
            "Action: failed\r\n",
            "Status: 5.1.1\r\n",
            "Remote-MTA: dns; primary.example\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.jp>: User unknown\r\n",
            "Content-Type: message/delivery-status\r\n",
            "Content-Type: text/rfc822-headers\r\n\r\nReceived: from x\r\nFrom: Alice",
        ] {
            assert!(s.contains(f), "missing {f:?} in\n{s}");
        }
        // Headers only: the body stays private.
        assert!(!s.contains("secret body"));
        // Every line ends in CRLF.
        assert!(!s.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn ret_full_returns_the_whole_message() {
        let s = String::from_utf8(compose(&report(ORIGINAL, true), "0ZZZZZZZZZZZ")).unwrap();
        assert!(s.contains("Content-Type: message/rfc822\r\n\r\nReceived: from x\r\n"));
        assert!(s.contains("secret body\r\n\r\n--0ZZZZZZZZZZZ"));
    }

    #[test]
    fn delayed_report_and_new_message() {
        let mut r = report(ORIGINAL, false);
        r.action = Action::Delayed;
        r.retry_until = Some(1_700_400_000);
        r.delayed_for = Some(4 * 3600);
        let m = new_message(&r);
        assert_eq!(m.sender, "");
        assert_eq!(m.origin, "bounce");
        assert_eq!(m.recipients.len(), 1);
        assert_eq!(m.recipients[0].address, "alice@sender.example");
        let s = String::from_utf8(m.data).unwrap();
        assert!(s.contains("Subject: Delayed Mail (still being retried)"));
        assert!(s.contains("Action: delayed\r\n"));
        assert!(s.contains("Will-Retry-Until: "));
        assert!(s.contains("could not be delivered for 4 hour(s)"));
    }

    #[test]
    fn utf8_headers_are_returned_as_message_global() {
        let original = "Received: from x\r\nSubject: セカンダリ\r\n\r\nbody\r\n".as_bytes();
        let s = String::from_utf8(compose(&report(original, false), "0ZZZZZZZZZZZ")).unwrap();
        assert!(s.contains("Content-Type: message/global-headers\r\n\r\nReceived: from x\r\nSubject: セカンダリ\r\n"), "{s}");
        let s = String::from_utf8(compose(&report(original, true), "0ZZZZZZZZZZZ")).unwrap();
        assert!(
            s.contains("Content-Type: message/global\r\n\r\nReceived: from x\r\n"),
            "{s}"
        );
    }

    #[test]
    fn header_block_edges() {
        assert_eq!(header_block(b"A: b\r\n\r\nbody\r\n"), b"A: b\r\n");
        assert_eq!(header_block(b"A: b\r\n"), b"A: b\r\n");
        assert_eq!(header_block(b"\r\nbody"), b"");
        assert_eq!(header_block(b""), b"");
    }

    #[test]
    fn hostile_diagnostics_are_flattened_and_clipped() {
        let long = "x".repeat(5000);
        assert_eq!(clip(&long).len(), MAX_FIELD + 3);
        assert_eq!(clip("a\r\nb"), "a  b");
    }
}
