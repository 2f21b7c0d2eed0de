//! A milter's replies: packet decoding, option negotiation, the verdict
//! text of SMFIR_REPLYCODE, and applying end-of-message edits. Nothing may
//! panic on any bytes a milter sends.
//!
//! - `parse_reply` and `parse_optneg` return errors, never panic.
//! - A reply code becomes one well-formed SMTP reply: every line starts
//!   with the same 4xx/5xx code and `-` (or ` ` on the last), lines are
//!   joined by CRLF, and no other control character (no bare CR or LF)
//!   reaches the client.
//! - Edits apply to a message and an envelope without panicking, and the
//!   body after `apply` is what SMFIR_REPLBODY sent (line ends made CRLF).
//!
//! Input: a sequence of packets, each `len` (1 byte) `cmd` (1 byte) and
//! `len` bytes of data (cut short at the end of the input).
//! `cd fuzz && cargo +nightly fuzz run milter_reply -- -max_total_time=30`

#![no_main]

use libfuzzer_sys::fuzz_target;
use mx2::pipeline::Envelope;
use mx2::queue::{MailParams, NewRecipient};
use mx2::scan::headers::Message;
use mx2::scan::milter::proto::{self, Reply};
use mx2::scan::milter::{self, Final, Outcome};

fn check_smtp_reply(r: &str, first: u8) {
    let lines: Vec<&str> = r.split("\r\n").collect();
    let code = &r.as_bytes()[..3];
    assert_eq!(code[0], first, "{r:?}");
    for (i, l) in lines.iter().enumerate() {
        let b = l.as_bytes();
        assert!(b.len() >= 4, "{r:?}");
        assert_eq!(&b[..3], code, "{r:?}");
        let sep = if i + 1 == lines.len() { b' ' } else { b'-' };
        assert_eq!(b[3], sep, "{r:?}");
        assert!(
            !l.chars().any(|c| c.is_control() && c != '\t'),
            "control character in {r:?}"
        );
    }
}

fn check_final(f: &Final) {
    match f {
        Final::Reject(r) => check_smtp_reply(r, b'5'),
        Final::Tempfail(r) => check_smtp_reply(r, b'4'),
        Final::Continue | Final::Accept | Final::Discard => {}
    }
}

fn envelope() -> Envelope {
    Envelope {
        id: "0PQ3Z8K1M2AB".into(),
        sender: "a@s.example".into(),
        params: MailParams::default(),
        recipients: vec![NewRecipient {
            address: "b@example.jp".into(),
            notify: None,
            orcpt: None,
        }],
        client: "unknown[192.0.2.7]".into(),
        helo: "client.test".into(),
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = proto::parse_optneg(data);
    let mut edits = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let (len, cmd) = (usize::from(rest[0]), rest[1]);
        let end = (2 + len).min(rest.len());
        let body = &rest[2..end];
        rest = &rest[end..];
        let Ok(r) = proto::parse_reply(cmd, body) else {
            continue;
        };
        if let Reply::Code(text) = &r {
            check_final(&milter::reply_code(text));
        }
        edits.push(r);
    }
    let out = Outcome {
        last: Final::Continue,
        leadspc: data.first().is_some_and(|b| b & 1 == 1),
        stage: "end of message",
        edits,
    };
    let mut msg = Message::parse(b"Received: by mx2\r\nSubject: s\r\n\r\nbody\r\n".to_vec());
    let mut env = envelope();
    let _ = milter::apply(&out, &mut msg, &mut env);
    let _ = msg.to_bytes();
    let replaced: Option<Vec<u8>> = out
        .edits
        .iter()
        .filter_map(|e| match e {
            Reply::ReplBody(b) => Some(b.clone()),
            _ => None,
        })
        .reduce(|mut a, b| {
            a.extend_from_slice(&b);
            a
        });
    if let Some(b) = replaced {
        assert_eq!(msg.body, mx2::scan::headers::crlf(&b));
    }
});
