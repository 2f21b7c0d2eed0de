//! A small ESMTP client: connect, greeting, EHLO, STARTTLS, commands and
//! replies, with a timeout on every step.
//!
//! Why not lettre: its `AsyncSmtpConnection` validates addresses with its
//! own grammar (a quoted local part or an SMTPUTF8 address we accepted could
//! be refused on the way out), has no PIPELINING, and xtext-encodes
//! parameter values itself. A relay must pass on exactly what it accepted,
//! so the protocol is spoken here; it is the simple half of SMTP.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stream::Stream;
use tokio::time::timeout;

/// Longest reply line accepted (RFC 5321 says 512; be generous).
const MAX_LINE: usize = 8192;
/// Most lines in one multi-line reply.
const MAX_LINES: usize = 200;
/// Queued bytes and the next commands are joined into one write up to this size.
const JOIN_LIMIT: usize = 256 * 1024;

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Text of each line, without the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// The RFC 3463 enhanced status code at the start of the first line, if any.
    pub fn enhanced(&self) -> Option<String> {
        let first = self.lines.first()?;
        let word = first.split_whitespace().next()?;
        let parts: Vec<&str> = word.split('.').collect();
        let ok = parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[0].as_bytes()[0] == b'0' + (self.code / 100) as u8
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
        ok.then(|| word.to_string())
    }

    /// `451 4.3.0 text more text` — all lines joined, as logged.
    pub fn one_line(&self) -> String {
        let text = self
            .lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if text.is_empty() {
            self.code.to_string()
        } else {
            format!("{} {}", self.code, text)
        }
    }
}

/// Builds one reply from its lines, as they arrive (a pure parser, so the
/// fuzz target `relay_reply` drives the same code as the session).
#[derive(Debug, Default)]
pub struct ReplyReader {
    code: u16,
    lines: Vec<String>,
}

impl ReplyReader {
    /// Takes one line (without its line end): the finished reply after its
    /// last line, `None` while more lines follow. The text is kept as the
    /// server sent it (invalid UTF-8 replaced); printing it is the
    /// printer's business (`crate::cli::escape`).
    pub fn push(&mut self, line: &[u8]) -> Result<Option<Reply>, SmtpError> {
        let code = match line {
            [a, b, c, ..] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => {
                return Err(SmtpError::Protocol(format!(
                    "malformed reply: {:?}",
                    String::from_utf8_lossy(line)
                )))
            }
        };
        if self.lines.is_empty() {
            self.code = code;
        } else if code != self.code {
            return Err(SmtpError::Protocol(format!(
                "reply code changed within a reply: {:?}",
                String::from_utf8_lossy(line)
            )));
        }
        let more = line.get(3) == Some(&b'-');
        // Byte 3 is the separator; the text starts after it, whatever it is.
        let text = line.get(4..).unwrap_or_default();
        self.lines.push(String::from_utf8_lossy(text).into_owned());
        if !more {
            return Ok(Some(Reply {
                code: self.code,
                lines: std::mem::take(&mut self.lines),
            }));
        }
        if self.lines.len() >= MAX_LINES {
            return Err(SmtpError::Protocol("reply has too many lines".into()));
        }
        Ok(None)
    }
}

/// Why a session failed.
#[derive(Debug, Clone)]
pub enum SmtpError {
    /// Network error or unexpected close.
    Io(String),
    /// No reply (or no progress) within the timeout, during `stage`.
    Timeout(String),
    /// A malformed reply.
    Protocol(String),
    /// The TLS handshake failed.
    Tls(String),
}

impl std::fmt::Display for SmtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmtpError::Io(e) => write!(f, "{e}"),
            SmtpError::Timeout(stage) => write!(f, "conversation timed out {stage}"),
            SmtpError::Protocol(e) => write!(f, "protocol error: {e}"),
            SmtpError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

fn io_err(e: io::Error) -> SmtpError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        SmtpError::Io("lost connection".into())
    } else {
        SmtpError::Io(format!("lost connection: {e}"))
    }
}

/// ESMTP extensions the peer advertised that matter for relaying.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    pub esmtp: bool,
    pub pipelining: bool,
    /// `SIZE` advertised; the value if it gave one (0 = no limit).
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
}

impl Caps {
    /// Reads the extension lines of an EHLO reply (the first line is the greeting).
    pub fn from_ehlo(reply: &Reply) -> Caps {
        let mut c = Caps {
            esmtp: true,
            ..Caps::default()
        };
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let Some(kw) = words.next() else { continue };
            match kw.to_ascii_uppercase().as_str() {
                "PIPELINING" => c.pipelining = true,
                "SIZE" => c.size = Some(words.next().and_then(|v| v.parse().ok()).unwrap_or(0)),
                "8BITMIME" => c.eightbitmime = true,
                "SMTPUTF8" => c.smtputf8 = true,
                "DSN" => c.dsn = true,
                "STARTTLS" => c.starttls = true,
                _ => {}
            }
        }
        c
    }
}

/// An open SMTP session with one server.
pub struct Session {
    stream: Stream,
    buf: Vec<u8>,
    /// Start of unread bytes in `buf`.
    pos: usize,
    /// `name[ip]`, for messages.
    pub host: String,
    /// `name[ip]:port`, for the relay= log field.
    pub relay: String,
    pub caps: Caps,
    pub tls: bool,
    pub command_timeout: Duration,
    /// Transactions completed on this session (reuse counter).
    pub transactions: u32,
    /// The last transaction was abandoned: RSET before the next MAIL.
    pub needs_rset: bool,
    /// Bytes to go out with the next `send` (a message queued by
    /// `queue_out`, so it leaves in one write with the next commands).
    out: Vec<u8>,
}

impl Session {
    /// Connects and reads the greeting. A non-2xx greeting is an error
    /// (`host X refused to talk to me: …`) carrying the reply.
    pub async fn connect(
        name: &str,
        addr: SocketAddr,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<(Session, Reply), SmtpError> {
        let host = format!("{name}[{}]", addr.ip());
        let relay = format!("{host}:{}", addr.port());
        let tcp = match timeout(connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err(SmtpError::Io(format!(
                    "connect to {relay}: Connection timed out"
                )))
            }
            Ok(Err(e)) => {
                return Err(SmtpError::Io(format!(
                    "connect to {relay}: {}",
                    os_text(&e)
                )))
            }
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let mut s = Session {
            stream: Stream::Plain(tcp),
            buf: Vec::with_capacity(4096),
            pos: 0,
            host,
            relay,
            caps: Caps::default(),
            tls: false,
            command_timeout,
            transactions: 0,
            needs_rset: false,
            out: Vec::new(),
        };
        let greeting = s
            .read_reply("while receiving the initial server greeting")
            .await?;
        Ok((s, greeting))
    }

    /// Reads one (possibly multi-line) reply within the command timeout.
    pub async fn read_reply(&mut self, stage: &str) -> Result<Reply, SmtpError> {
        let t = self.command_timeout;
        self.read_reply_within(t, stage).await
    }

    /// Reads one reply within `limit`.
    pub async fn read_reply_within(
        &mut self,
        limit: Duration,
        stage: &str,
    ) -> Result<Reply, SmtpError> {
        match timeout(limit, self.read_reply_inner()).await {
            Ok(r) => r,
            Err(_) => Err(SmtpError::Timeout(stage.to_string())),
        }
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, SmtpError> {
        let mut reader = ReplyReader::default();
        loop {
            let line = self.read_line().await?;
            if let Some(reply) = reader.push(&line)? {
                return Ok(reply);
            }
        }
    }

    /// One line without its CRLF (a bare LF is accepted).
    async fn read_line(&mut self) -> Result<Vec<u8>, SmtpError> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let end = self.pos + i;
                let mut line = self.buf[self.pos..end].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.pos = end + 1;
                if self.pos == self.buf.len() {
                    self.buf.clear();
                    self.pos = 0;
                }
                return Ok(line);
            }
            if self.buf.len() - self.pos > MAX_LINE {
                return Err(SmtpError::Protocol("reply line too long".into()));
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.map_err(io_err)?;
            if n == 0 {
                return Err(SmtpError::Io("lost connection".into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Writes whatever `queue_out` left, then `bytes`, and flushes. Small
    /// enough together, they go out in one write (one segment for the peer
    /// to read, not two).
    pub async fn send(&mut self, bytes: &[u8], stage: &str) -> Result<(), SmtpError> {
        let mut queued = std::mem::take(&mut self.out);
        if !queued.is_empty() && queued.len() + bytes.len() <= JOIN_LIMIT {
            queued.extend_from_slice(bytes);
            return self.write_flush(&[&queued], stage).await;
        }
        self.write_flush(&[&queued, bytes], stage).await
    }

    /// Keeps `bytes` to go out in front of the next `send`.
    pub fn queue_out(&mut self, bytes: Vec<u8>) {
        if self.out.is_empty() {
            self.out = bytes;
        } else {
            self.out.extend_from_slice(&bytes);
        }
    }

    /// Whether bytes wait for the next `send`.
    pub fn has_queued_out(&self) -> bool {
        !self.out.is_empty()
    }

    async fn write_flush(&mut self, parts: &[&[u8]], stage: &str) -> Result<(), SmtpError> {
        let t = self.command_timeout;
        // A per-chunk deadline: a large message may take long, a stalled peer may not.
        for chunk in parts.iter().flat_map(|p| p.chunks(256 * 1024)) {
            match timeout(t, self.stream.write_all(chunk)).await {
                Ok(r) => r.map_err(io_err)?,
                Err(_) => return Err(SmtpError::Timeout(stage.to_string())),
            }
        }
        match timeout(t, self.stream.flush()).await {
            Ok(r) => r.map_err(io_err),
            Err(_) => Err(SmtpError::Timeout(stage.to_string())),
        }
    }

    /// Sends one command line and reads its reply.
    pub async fn command(&mut self, line: &str, stage: &str) -> Result<Reply, SmtpError> {
        let mut b = Vec::with_capacity(line.len() + 2);
        b.extend_from_slice(line.as_bytes());
        b.extend_from_slice(b"\r\n");
        self.send(&b, stage).await?;
        self.read_reply(stage).await
    }

    /// EHLO (HELO if EHLO is refused); records the capabilities.
    pub async fn hello(&mut self, myname: &str) -> Result<Reply, SmtpError> {
        let r = self
            .command(&format!("EHLO {myname}"), "after sending EHLO")
            .await?;
        if r.code == 250 {
            self.caps = Caps::from_ehlo(&r);
            return Ok(r);
        }
        if r.code == 421 {
            return Ok(r);
        }
        let r = self
            .command(&format!("HELO {myname}"), "after sending HELO")
            .await?;
        self.caps = Caps::default();
        Ok(r)
    }

    /// STARTTLS and the handshake. `Ok(Some(reply))` when the server refused
    /// the command (session still usable in plain text).
    pub async fn starttls(
        mut self,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Result<(Session, Option<Reply>), SmtpError> {
        let r = self.command("STARTTLS", "after sending STARTTLS").await?;
        if r.code != 220 {
            return Ok((self, Some(r)));
        }
        if self.pos < self.buf.len() {
            // Plain-text bytes sent after the 220 would be read as if they
            // came over TLS: a response-injection attempt.
            return Err(SmtpError::Protocol(
                "server sent data after its STARTTLS reply".into(),
            ));
        }
        let tcp = match self.stream {
            Stream::Plain(t) => t,
            Stream::Tls(_) | Stream::Gone => {
                return Err(SmtpError::Protocol("STARTTLS twice".into()))
            }
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = match timeout(self.command_timeout, connector.connect(server_name, tcp)).await {
            Err(_) => return Err(SmtpError::Timeout("during the TLS handshake".into())),
            Ok(Err(e)) => return Err(SmtpError::Tls(e.to_string())),
            Ok(Ok(s)) => s,
        };
        self.stream = Stream::Tls(Box::new(tls.into()));
        self.buf.clear();
        self.pos = 0;
        self.tls = true;
        self.caps = Caps::default();
        Ok((self, None))
    }

    /// QUIT, politely and briefly; errors do not matter any more.
    pub async fn quit(mut self) {
        let short = Duration::from_secs(5).min(self.command_timeout);
        let _ = timeout(short, async {
            if self.stream.write_all(b"QUIT\r\n").await.is_ok() {
                let _ = self.stream.flush().await;
                let _ = self.read_reply_inner().await;
            }
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

/// The operating system's wording for a connect error, as Postfix logs it.
fn os_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "Connection refused".into(),
        io::ErrorKind::TimedOut => "Connection timed out".into(),
        io::ErrorKind::HostUnreachable => "No route to host".into(),
        io::ErrorKind::NetworkUnreachable => "Network is unreachable".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, lines: &[&str]) -> Reply {
        Reply {
            code,
            lines: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn enhanced_codes_are_recognised_only_when_consistent() {
        assert_eq!(
            reply(550, &["5.1.1 no such user"]).enhanced().as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            reply(451, &["4.3.0 later"]).enhanced().as_deref(),
            Some("4.3.0")
        );
        assert_eq!(reply(550, &["4.1.1 mismatch"]).enhanced(), None);
        assert_eq!(reply(550, &["no code here"]).enhanced(), None);
        assert_eq!(reply(250, &["2.0.0"]).enhanced().as_deref(), Some("2.0.0"));
        assert_eq!(reply(250, &["1.2.3.4 addr"]).enhanced(), None);
    }

    fn read_all(lines: &[&[u8]]) -> Result<Option<Reply>, SmtpError> {
        let mut r = ReplyReader::default();
        for l in lines {
            if let Some(reply) = r.push(l)? {
                return Ok(Some(reply));
            }
        }
        Ok(None)
    }

    #[test]
    fn reply_reader() {
        let r = read_all(&[b"250-mx.example", b"250-PIPELINING", b"250 DSN"])
            .unwrap()
            .unwrap();
        assert_eq!(r, reply(250, &["mx.example", "PIPELINING", "DSN"]));
        assert_eq!(read_all(&[b"250-a"]).unwrap(), None);
        assert!(read_all(&[b"250-a", b"251 b"]).is_err());
        assert!(read_all(&[b"25"]).is_err());
        assert!(read_all(&[b"x50 a"]).is_err());
        assert_eq!(read_all(&[b"354"]).unwrap().unwrap(), reply(354, &[""]));
        // Invalid UTF-8 right after the code: no panic, the text is kept.
        let r = read_all(&[b"550\xff\xffx", b""]).unwrap().unwrap();
        assert_eq!(r.code, 550);
        assert_eq!(r.lines, ["\u{fffd}x"]);
        let many: Vec<&[u8]> = std::iter::repeat_n(&b"250-x"[..], MAX_LINES + 1).collect();
        assert!(read_all(&many).is_err());
    }

    #[test]
    fn one_line_joins_multiline_replies() {
        let r = reply(550, &["5.7.1 first", "5.7.1 second"]);
        assert_eq!(r.one_line(), "550 5.7.1 first 5.7.1 second");
        assert_eq!(reply(354, &[""]).one_line(), "354");
    }

    #[test]
    fn ehlo_capabilities() {
        let r = reply(
            250,
            &[
                "mx.example Hello",
                "PIPELINING",
                "SIZE 10240000",
                "8BITMIME",
                "smtputf8",
                "DSN",
                "STARTTLS",
                "ENHANCEDSTATUSCODES",
            ],
        );
        let c = Caps::from_ehlo(&r);
        assert!(c.esmtp && c.pipelining && c.eightbitmime && c.smtputf8 && c.dsn && c.starttls);
        assert_eq!(c.size, Some(10_240_000));
        let c = Caps::from_ehlo(&reply(250, &["mx.example", "SIZE"]));
        assert_eq!(c.size, Some(0));
        assert!(!c.dsn);
    }
}
