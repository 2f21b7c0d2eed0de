//! Where a scanner listens: a unix socket or a TCP address.
//!
//! Accepted spellings (the first three are Postfix's milter syntax):
//! `unix:/path`, `local:/path`, `inet:port@host`, `/path`, `host:port`,
//! `[v6addr]:port`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// A byte stream to a scanner.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port` as given (host may be a name or `[v6]`).
    Tcp(String),
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("local:")) {
            if p.is_empty() {
                bail!("{s:?}: empty socket path");
            }
            return Ok(Endpoint::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        if let Some(rest) = s.strip_prefix("inet:").or_else(|| s.strip_prefix("inet6:")) {
            // Postfix: inet:port@host (host defaults to localhost); also accept inet:host:port.
            let (host, port) = match rest.split_once('@') {
                Some((port, host)) => (host.to_string(), port.to_string()),
                None => match rest.rsplit_once(':') {
                    Some((h, p)) => (h.to_string(), p.to_string()),
                    None => ("localhost".to_string(), rest.to_string()),
                },
            };
            return Self::tcp(s, &host, &port);
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => Self::tcp(s, host, port),
            _ => Err(anyhow!(
                "{s:?} is not a scanner address (use unix:/path, host:port or inet:port@host)"
            )),
        }
    }

    fn tcp(orig: &str, host: &str, port: &str) -> Result<Endpoint> {
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow!("{orig:?}: bad port {port:?}"))?;
        if host.is_empty() {
            bail!("{orig:?}: empty host");
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Ok(Endpoint::Tcp(format!("{host}:{port}")))
    }

    /// Connects within `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<Box<dyn Io>> {
        let fut = async {
            Ok::<Box<dyn Io>, std::io::Error>(match self {
                Endpoint::Unix(p) => Box::new(UnixStream::connect(p).await?),
                Endpoint::Tcp(a) => {
                    let s = TcpStream::connect(a.as_str()).await?;
                    let _ = s.set_nodelay(true);
                    Box::new(s)
                }
            })
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| anyhow!("connect to {self}: timed out"))?
            .with_context(|| format!("connect to {self}"))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => f.write_str(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let u = |p: &str| Endpoint::Unix(PathBuf::from(p));
        let t = |a: &str| Endpoint::Tcp(a.to_string());
        assert_eq!(
            Endpoint::parse("unix:/run/x.sock").unwrap(),
            u("/run/x.sock")
        );
        assert_eq!(
            Endpoint::parse("local:/run/x.sock").unwrap(),
            u("/run/x.sock")
        );
        assert_eq!(Endpoint::parse("/run/x.sock").unwrap(), u("/run/x.sock"));
        assert_eq!(
            Endpoint::parse("inet:8891@127.0.0.1").unwrap(),
            t("127.0.0.1:8891")
        );
        assert_eq!(Endpoint::parse("inet:8891@[::1]").unwrap(), t("[::1]:8891"));
        assert_eq!(Endpoint::parse("inet:8891").unwrap(), t("localhost:8891"));
        assert_eq!(
            Endpoint::parse("127.0.0.1:783").unwrap(),
            t("127.0.0.1:783")
        );
        assert_eq!(Endpoint::parse("[::1]:783").unwrap(), t("[::1]:783"));
        assert_eq!(
            Endpoint::parse("spamd.lan:783").unwrap(),
            t("spamd.lan:783")
        );
        assert!(Endpoint::parse("unix:").is_err());
        assert!(Endpoint::parse("localhost").is_err());
        assert!(Endpoint::parse("host:notaport").is_err());
        assert!(Endpoint::parse("inet:99999@h").is_err());
    }
}
