//! SpamAssassin's spamd, spoken directly (the SPAMC/SPAMD protocol).
//!
//! mx2 sends `HEADERS SPAMC/1.5` (SpamAssassin ≥ 3.4): spamd scans the
//! whole message and answers with the rewritten header block only. From it
//! mx2 takes SpamAssassin's own `X-Spam-*` fields (`X-Spam-Checker-Version`,
//! `X-Spam-Flag`, `X-Spam-Level`, `X-Spam-Status`, `X-Spam-Report`, …)
//! exactly as SpamAssassin folded them, and nothing else: the body,
//! `Subject:` and `Content-Type:` are never rewritten (report_safe and
//! rewrite_header are ignored). Like SpamAssassin itself, the message's
//! earlier `X-Spam-*` fields are removed first, so a sender cannot forge
//! a verdict.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::endpoint::Endpoint;
use super::headers::{self, Message};

/// Largest answer read from spamd (it sends headers only).
const MAX_RESPONSE: u64 = 8 << 20;

/// What spamd said about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub spam: bool,
    pub score: String,
    pub required: String,
    /// SpamAssassin's `X-Spam-*` fields, raw, CRLF line ends, in its order.
    pub fields: Vec<Vec<u8>>,
}

impl Report {
    /// Puts the verdict fields into `msg`: earlier `X-Spam-*` fields go,
    /// SpamAssassin's come in right below mx2's `Received:` line.
    pub fn apply(&self, msg: &mut Message) {
        msg.remove_where(is_spam_header);
        let at = msg.after_trace();
        for (i, f) in self.fields.iter().enumerate() {
            msg.insert(at + i, f.clone());
        }
    }
}

fn is_spam_header(name: &str) -> bool {
    name.len() > 7 && name[..7].eq_ignore_ascii_case("X-Spam-")
}

/// The request bytes.
pub fn encode_request(message: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "HEADERS SPAMC/1.5\r\nContent-length: {}\r\n\r\n",
        message.len()
    )
    .into_bytes();
    req.extend_from_slice(message);
    req
}

/// Parses spamd's whole answer.
pub fn parse_response(resp: &[u8]) -> Result<Report> {
    let head_end = find(resp, b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| find(resp, b"\n\n").map(|i| (i, i + 2)))
        .ok_or_else(|| anyhow!("spamd answer has no header end: {:?}", preview(resp)))?;
    let head = String::from_utf8_lossy(&resp[..head_end.0]);
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("");
    let mut parts = status.splitn(3, ' ');
    let proto = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    let text = parts.next().unwrap_or("").trim();
    if !proto.starts_with("SPAMD/") {
        bail!("not a spamd answer: {:?}", preview(resp));
    }
    if code != "0" {
        bail!("spamd error {code}: {text}");
    }
    let mut spam = None;
    let mut length = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            // `Spam: True ; 1004.2 / 5.0`
            "spam" => {
                let (flag, scores) = v.split_once(';').unwrap_or((v, ""));
                let (score, required) = scores.split_once('/').unwrap_or((scores, ""));
                let flag = flag.trim();
                spam = Some((
                    flag.eq_ignore_ascii_case("true") || flag.eq_ignore_ascii_case("yes"),
                    score.trim().to_string(),
                    required.trim().to_string(),
                ));
            }
            "content-length" => length = v.trim().parse::<usize>().ok(),
            _ => {}
        }
    }
    let (spam, score, required) = spam.ok_or_else(|| anyhow!("spamd answer has no Spam: line"))?;
    let mut body = &resp[head_end.1..];
    if let Some(n) = length {
        if body.len() < n {
            bail!("spamd answer cut short ({} of {n} bytes)", body.len());
        }
        body = &body[..n];
    }
    let rewritten = Message::parse(body.to_vec());
    let fields = rewritten
        .fields
        .iter()
        .filter(|f| is_spam_header(&String::from_utf8_lossy(headers::field_name(f))))
        .map(|f| headers::normalise_field(f))
        .collect();
    Ok(Report {
        spam,
        score,
        required,
        fields,
    })
}

/// Asks spamd about `message`; the whole exchange is bounded by `timeout`.
pub async fn check(ep: &Endpoint, message: &[u8], timeout: Duration) -> Result<Report> {
    let exchange = async {
        let mut io = ep.connect(timeout).await?;
        io.write_all(&encode_request(message))
            .await
            .context("sending to spamd")?;
        io.flush().await.context("sending to spamd")?;
        // spamd reads exactly Content-length bytes; the half-close is a courtesy.
        let _ = io.shutdown().await;
        let mut resp = Vec::new();
        io.take(MAX_RESPONSE)
            .read_to_end(&mut resp)
            .await
            .context("reading spamd's answer")?;
        parse_response(&resp)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow!("no answer within {}s", timeout.as_secs_f32()))?
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn preview(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_exact_length() {
        let r = encode_request(b"Subject: x\r\n\r\nhi\r\n");
        assert_eq!(
            r,
            b"HEADERS SPAMC/1.5\r\nContent-length: 18\r\n\r\nSubject: x\r\n\r\nhi\r\n"
        );
    }

    // Recorded from spamd 4.0.1 (Debian 12) for GTUBE with report_safe 1.
    const SPAM: &[u8] = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 587\r\nSpam: True ; 1004.2 / 5.0\r\n\r\nReceived: from localhost by vm\r\n\twith SpamAssassin (version 4.0.1);\r\n\tFri, 27 Nov 2026 11:28:56 +0000\r\nFrom: a@b.example\r\nSubject: test\r\nX-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on vm\r\nX-Spam-Flag: YES\r\nX-Spam-Level: **************************************************\r\nX-Spam-Status: Yes, score=1004.2 required=5.0 tests=GTUBE,MISSING_DATE,\r\n\tMISSING_HEADERS,MISSING_MID,NO_HEADERS_MESSAGE,NO_RECEIVED,NO_RELAYS,\r\n\tTVD_SPACE_RATIO autolearn=no autolearn_force=no version=4.0.1\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"----------=_6B096978.C66782E1\"\r\n\r\n";

    #[test]
    fn spam_answer() {
        let r = parse_response(SPAM).unwrap();
        assert!(r.spam);
        assert_eq!(r.score, "1004.2");
        assert_eq!(r.required, "5.0");
        let names: Vec<_> = r
            .fields
            .iter()
            .map(|f| String::from_utf8_lossy(headers::field_name(f)).into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "X-Spam-Checker-Version",
                "X-Spam-Flag",
                "X-Spam-Level",
                "X-Spam-Status"
            ]
        );
        assert!(r.fields[3]
            .ends_with(b"\tTVD_SPACE_RATIO autolearn=no autolearn_force=no version=4.0.1\r\n"));
    }

    #[test]
    fn ham_answer_and_apply() {
        let head = b"X-Spam-Level: \nX-Spam-Status: No, score=0.0 required=5.0\n\ttests=NONE\nSubject: s\n\n";
        let mut resp = format!(
            "SPAMD/1.1 0 EX_OK\nContent-length: {}\nSpam: False ; 0.0 / 5.0\n\n",
            head.len()
        )
        .into_bytes();
        resp.extend_from_slice(head);
        let r = parse_response(&resp).unwrap();
        assert!(!r.spam);
        assert_eq!(r.fields[0], b"X-Spam-Level: \r\n");
        assert_eq!(
            r.fields[1],
            b"X-Spam-Status: No, score=0.0 required=5.0\r\n\ttests=NONE\r\n"
        );
        let mut m = Message::parse(
            b"Received: by mx2\r\nX-Spam-Flag: YES\r\nSubject: s\r\nx-spam-foo: 1\r\n\r\nX-Spam-Flag: YES\r\n".to_vec(),
        );
        r.apply(&mut m);
        assert_eq!(
            m.to_bytes(),
            b"Received: by mx2\r\nX-Spam-Level: \r\nX-Spam-Status: No, score=0.0 required=5.0\r\n\ttests=NONE\r\nSubject: s\r\n\r\nX-Spam-Flag: YES\r\n"
        );
    }

    /// A bare CR in spamd's answer must not start a field of its own.
    #[test]
    fn bare_cr_cannot_add_a_field() {
        let head = b"X-Spam-Flag: YES\rBcc: victim@example.jp\n\n";
        let mut resp = format!(
            "SPAMD/1.1 0 EX_OK\nContent-length: {}\nSpam: True ; 9 / 5\n\n",
            head.len()
        )
        .into_bytes();
        resp.extend_from_slice(head);
        let r = parse_response(&resp).unwrap();
        assert_eq!(
            r.fields,
            [b"X-Spam-Flag: YES\r\n\tBcc: victim@example.jp\r\n".to_vec()]
        );
        let mut m = Message::parse(b"Subject: s\r\n\r\nb".to_vec());
        r.apply(&mut m);
        let again = Message::parse(m.to_bytes());
        assert_eq!(again.fields.len(), 2);
    }

    #[test]
    fn errors() {
        assert!(parse_response(b"SPAMD/1.0 76 Bad header line: x\r\n\r\n")
            .unwrap_err()
            .to_string()
            .contains("spamd error 76: Bad header line"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_response(
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 90\r\nSpam: False ; 0 / 5\r\n\r\nX"
        )
        .is_err());
        assert!(parse_response(b"").is_err());
    }
}
