//! A client connection: plain or TLS, with a read buffer for pipelined
//! commands and a write buffer flushed only when the client has nothing
//! more queued (RFC 2920: answer a pipelined group in one write).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use crate::stream::Stream;

/// Longest command line accepted (RFC 5321 says 512; Postfix allows 2048).
pub const MAX_LINE: usize = 4096;

/// Free buffer space for a read between commands.
const COMMAND_READ: usize = 1024;

/// Free buffer space for a read during DATA (fewer, larger reads).
pub const DATA_READ: usize = 64 * 1024;

/// What reading a command line produced.
pub enum Line {
    /// A line without its ending.
    Ok(Vec<u8>),
    /// Longer than `MAX_LINE`; the rest up to the line end was discarded.
    TooLong,
    /// The client closed the connection.
    Eof,
}

pub struct Conn {
    pub stream: Stream,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    pub timeout: Duration,
}

impl Conn {
    pub fn new(tcp: TcpStream, timeout: Duration) -> Conn {
        Conn {
            stream: Stream::Plain(tcp),
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
            timeout,
        }
    }

    /// Bytes the client sent that were not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.rbuf[self.rpos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.rpos += n;
        if self.rpos >= self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        }
    }

    /// Throws away unread input (plaintext pipelined after STARTTLS).
    pub fn discard_buffered(&mut self) -> usize {
        let n = self.rbuf.len() - self.rpos;
        self.rbuf.clear();
        self.rpos = 0;
        n
    }

    /// Reads more input (commands: small reads keep idle sessions cheap);
    /// flushes pending replies first, since the client is waiting for them.
    pub async fn fill(&mut self) -> io::Result<usize> {
        self.fill_up_to(COMMAND_READ).await
    }

    /// Reads more input into at least `want` bytes of free buffer space.
    /// Reading straight into the buffer keeps no extra copy in the
    /// session's future: 10,000 idle sessions cost little memory.
    pub async fn fill_up_to(&mut self, want: usize) -> io::Result<usize> {
        self.flush().await?;
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if self.rbuf.capacity() - self.rbuf.len() < want {
            self.rbuf.reserve(want);
        }
        let n = tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.rbuf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "command timeout"))??;
        Ok(n)
    }

    /// Gives back a large buffer after DATA, so idle sessions stay small.
    pub fn shrink(&mut self) {
        if self.rbuf.capacity() > 4 * COMMAND_READ && self.rbuf.len() - self.rpos < COMMAND_READ {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
            self.rbuf.shrink_to(COMMAND_READ);
        }
    }

    /// Reads one command line (CRLF or bare LF ends it).
    pub async fn read_line(&mut self) -> io::Result<Line> {
        let mut too_long = false;
        loop {
            let buf = &self.rbuf[self.rpos..];
            if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let mut line = buf[..i].to_vec();
                self.consume(i + 1);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if too_long || line.len() > MAX_LINE {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Ok(line));
            }
            if buf.len() > MAX_LINE {
                // Drop the overlong prefix, keep looking for its end.
                too_long = true;
                self.rbuf.clear();
                self.rpos = 0;
            }
            if self.fill().await? == 0 {
                return Ok(Line::Eof);
            }
        }
    }

    /// Queues a reply; sent at the next `flush` (or read).
    pub fn reply(&mut self, text: &str) {
        self.wbuf.extend_from_slice(text.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let res = tokio::time::timeout(self.timeout, async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        })
        .await;
        self.wbuf.clear();
        match res {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timeout")),
        }
    }

    /// Sends a final reply and closes.
    pub async fn close_with(&mut self, text: &str) {
        self.reply(text);
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}
