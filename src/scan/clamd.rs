//! ClamAV's clamd, spoken directly: `zINSTREAM` over a unix socket or TCP.
//!
//! The message goes in chunks (4-byte big-endian length, then the bytes;
//! a zero length ends it) and clamd answers one NUL-terminated line:
//! `stream: OK`, `stream: NAME FOUND` or `… ERROR`. mx2 then writes
//! `X-Virus-Scanned: clamav via mx2` and `X-Virus-Status: Clean` or
//! `X-Virus-Status: Yes` below its own `Received:` line, replacing any
//! such fields the message already had (clamav-milter's `AddHeader
//! Replace`); the signature name goes to the log.
//!
//! mx2 sends clamd every message (they are at most `max_message_size`);
//! clamd's own `StreamMaxLength` is the real limit. When clamd answers
//! `INSTREAM size limit exceeded`, the message was not scanned: the log
//! says which setting to raise, and the message goes on without a verdict
//! (like clamav-milter past its `MaxFileSize`), whatever
//! `on_scanner_error` says, because retrying cannot make it fit.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::endpoint::Endpoint;
use super::headers::{format_field, Message};

/// Bytes per INSTREAM chunk.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// The signature name, e.g. `Eicar-Test-Signature.UNOFFICIAL`.
    Found(String),
    /// Not scanned: larger than clamd's `StreamMaxLength`.
    TooBig,
}

impl Verdict {
    /// Writes the verdict fields into `msg` (nothing for `TooBig`: no verdict).
    pub fn apply(&self, msg: &mut Message) {
        if *self == Verdict::TooBig {
            return;
        }
        msg.remove_where(|n| {
            n.eq_ignore_ascii_case("X-Virus-Scanned") || n.eq_ignore_ascii_case("X-Virus-Status")
        });
        let status: &[u8] = match self {
            Verdict::Clean => b"Clean",
            Verdict::Found(_) | Verdict::TooBig => b"Yes",
        };
        let at = msg.after_trace();
        msg.insert(
            at,
            format_field("X-Virus-Scanned", b"clamav via mx2", false),
        );
        msg.insert(at + 1, format_field("X-Virus-Status", status, false));
    }
}

/// The whole request: command, chunks, terminator.
pub fn encode_request(message: &[u8]) -> Vec<u8> {
    let mut req = Vec::with_capacity(message.len() + 16 + 4 * (message.len() / CHUNK + 1));
    req.extend_from_slice(b"zINSTREAM\0");
    for chunk in message.chunks(CHUNK) {
        req.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        req.extend_from_slice(chunk);
    }
    req.extend_from_slice(&0u32.to_be_bytes());
    req
}

/// Parses clamd's answer line.
pub fn parse_response(resp: &[u8]) -> Result<Verdict> {
    let end = resp
        .iter()
        .position(|&b| b == 0 || b == b'\n')
        .unwrap_or(resp.len());
    let line = String::from_utf8_lossy(&resp[..end]);
    let line = line.trim();
    if line.is_empty() {
        bail!("clamd closed the connection without an answer");
    }
    let result = line.strip_prefix("stream:").map(str::trim).unwrap_or(line);
    if result == "OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(name) = result.strip_suffix(" FOUND") {
        return Ok(Verdict::Found(name.trim().to_string()));
    }
    if result.contains("size limit exceeded") {
        return Ok(Verdict::TooBig);
    }
    Err(anyhow!("clamd: {line}"))
}

/// Scans `message`; the whole exchange is bounded by `timeout`.
pub async fn scan(ep: &Endpoint, message: &[u8], timeout: Duration) -> Result<Verdict> {
    let exchange = async {
        let mut io = ep.connect(timeout).await?;
        // clamd may stop reading and answer early (size limit): then the
        // write fails but its answer is still worth reading.
        let sent = async {
            io.write_all(&encode_request(message)).await?;
            io.flush().await
        }
        .await;
        let mut resp = Vec::new();
        let read = (&mut io).take(4096).read_to_end(&mut resp).await;
        match (parse_response(&resp), sent) {
            (Ok(v), _) => Ok(v),
            (Err(_), Err(e)) => Err(e).context("sending to clamd"),
            (Err(e), Ok(())) => match read {
                Err(re) => Err(re).context("reading clamd's answer"),
                Ok(_) => Err(e),
            },
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow!("no answer within {}s", timeout.as_secs_f32()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks() {
        assert_eq!(encode_request(b""), b"zINSTREAM\0\0\0\0\0");
        assert_eq!(encode_request(b"abc"), b"zINSTREAM\0\0\0\0\x03abc\0\0\0\0");
        let big = vec![b'x'; CHUNK + 1];
        let r = encode_request(&big);
        assert_eq!(&r[10..14], &(CHUNK as u32).to_be_bytes());
        assert_eq!(&r[14 + CHUNK..18 + CHUNK], &1u32.to_be_bytes());
        assert_eq!(r.len(), 10 + 4 + CHUNK + 4 + 1 + 4);
    }

    #[test]
    fn answers() {
        assert_eq!(parse_response(b"stream: OK\0").unwrap(), Verdict::Clean);
        assert_eq!(
            parse_response(b"stream: Eicar-Test-Signature.UNOFFICIAL FOUND\0").unwrap(),
            Verdict::Found("Eicar-Test-Signature.UNOFFICIAL".into())
        );
        assert_eq!(
            parse_response(b"INSTREAM size limit exceeded. ERROR\0").unwrap(),
            Verdict::TooBig
        );
        assert!(parse_response(b"stream: Can't allocate memory ERROR\0").is_err());
        assert!(parse_response(b"").is_err());
    }

    #[test]
    fn apply_replaces_earlier_fields() {
        let mut m = Message::parse(
            b"Received: by mx2\r\nX-Virus-Status: Clean\r\nSubject: s\r\nx-virus-scanned: old\r\n\r\nb".to_vec(),
        );
        Verdict::Found("Eicar".into()).apply(&mut m);
        assert_eq!(
            m.to_bytes(),
            b"Received: by mx2\r\nX-Virus-Scanned: clamav via mx2\r\nX-Virus-Status: Yes\r\nSubject: s\r\n\r\nb"
        );
    }
}
