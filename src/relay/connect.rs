//! Opening a session to a destination: try each address in order until one
//! greets, says hello and (per `relay.tls`) starts TLS.
//!
//! Every failure at this stage is temporary, whatever its reply code: a
//! secondary MX must not bounce its backlog because a primary said `554`
//! in its greeting during maintenance. The error of the last address tried
//! is the one reported (as Postfix does).

use std::sync::Arc;
use std::time::Duration;

use crate::config::TlsPolicy;

use super::client::{Session, SmtpError};
use super::deliver::session_failure;
use super::outcome::{Class, RcptResult};
use super::route::{Candidate, Destination, Resolver};
use super::tls::{server_name, verify_name, TlsClient};

/// Everything needed to open sessions.
pub struct Connector {
    pub myname: String,
    pub tls: TlsClient,
    pub resolver: Resolver,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

/// Why one address did not give a session.
enum OpenErr {
    /// The TLS handshake failed (opportunistic TLS may retry in plain text).
    Tls(RcptResult),
    Other(RcptResult),
}

impl Connector {
    /// A ready session to `dest` (after EHLO, and STARTTLS where it applies).
    pub async fn open(&self, dest: &Destination) -> Result<Session, RcptResult> {
        let candidates = self.resolver.candidates(dest).await?;
        let mut last = None;
        for c in &candidates {
            match self.open_one(c, true).await {
                Ok(s) => return Ok(s),
                Err(OpenErr::Tls(r)) if self.tls.policy == TlsPolicy::Opportunistic => {
                    tracing::info!("{} ; retrying without STARTTLS", r.text);
                    match self.open_one(c, false).await {
                        Ok(s) => return Ok(s),
                        Err(OpenErr::Tls(r)) | Err(OpenErr::Other(r)) => last = Some(r),
                    }
                }
                Err(OpenErr::Tls(r)) | Err(OpenErr::Other(r)) => last = Some(r),
            }
        }
        Err(last
            .unwrap_or_else(|| RcptResult::local(Class::Temp, "4.4.3", "no address to connect to")))
    }

    async fn open_one(&self, c: &Candidate, try_tls: bool) -> Result<Session, OpenErr> {
        let (mut s, greeting) =
            Session::connect(&c.name, c.addr, self.connect_timeout, self.command_timeout)
                .await
                .map_err(|e| OpenErr::Other(connect_failure(c, &e)))?;
        if greeting.code != 220 {
            let r = refused(&s.host, &greeting.one_line());
            s.quit().await;
            return Err(OpenErr::Other(r));
        }
        let hello = s
            .hello(&self.myname)
            .await
            .map_err(|e| OpenErr::Other(session_failure(&s.host, &e, "sending EHLO")))?;
        if hello.code != 250 {
            let r = hello_refused(&s, &hello);
            s.quit().await;
            return Err(OpenErr::Other(r));
        }
        let policy = self.tls.policy;
        let must = matches!(policy, TlsPolicy::Required | TlsPolicy::Verify);
        let Some(config) = self.tls.config() else {
            return Ok(s);
        };
        if !try_tls {
            return Ok(s);
        }
        if !s.caps.starttls {
            if must {
                let r = tls_required(&s.host, "was not offered by");
                s.quit().await;
                return Err(OpenErr::Other(r));
            }
            return Ok(s);
        }
        let host = s.host.clone();
        let name = if policy == TlsPolicy::Verify {
            verify_name(&c.name, &c.nexthop, c.addr.ip())
        } else {
            server_name(&c.name, c.addr.ip())
        };
        let (mut s, refused_reply) = match s.starttls(Arc::clone(&config), name).await {
            Ok(v) => v,
            Err(e @ SmtpError::Tls(_)) => {
                let mut r = session_failure(&host, &e, "starting TLS");
                r.dsn = "4.7.5".into();
                return Err(OpenErr::Tls(r));
            }
            Err(e) => {
                return Err(OpenErr::Other(session_failure(
                    &host,
                    &e,
                    "sending STARTTLS",
                )))
            }
        };
        if let Some(reply) = refused_reply {
            if must {
                let r = tls_required(&host, &format!("refused ({}) by", reply.one_line()));
                s.quit().await;
                return Err(OpenErr::Other(r));
            }
            return Ok(s);
        }
        let hello = s.hello(&self.myname).await.map_err(|e| {
            OpenErr::Other(session_failure(&host, &e, "sending EHLO after STARTTLS"))
        })?;
        if hello.code != 250 {
            let r = hello_refused(&s, &hello);
            s.quit().await;
            return Err(OpenErr::Other(r));
        }
        Ok(s)
    }
}

fn connect_failure(c: &Candidate, e: &SmtpError) -> RcptResult {
    match e {
        // `Session::connect` words connect errors fully already.
        SmtpError::Io(text) if text.starts_with("connect to ") => {
            RcptResult::local(Class::Temp, "4.4.1", text.clone())
        }
        other => session_failure(
            &format!("{}[{}]", c.name, c.addr.ip()),
            other,
            "receiving the initial server greeting",
        ),
    }
}

fn refused(host: &str, reply: &str) -> RcptResult {
    let mut r = RcptResult::local(
        Class::Temp,
        "4.3.0",
        format!("host {host} refused to talk to me: {reply}"),
    );
    r.diagnostic = format!("smtp; {reply}");
    r
}

fn hello_refused(s: &Session, reply: &super::client::Reply) -> RcptResult {
    let mut r = RcptResult::from_reply(&s.host, reply, "EHLO");
    r.class = Class::Temp;
    if !r.dsn.starts_with('4') {
        r.dsn = format!("4{}", &r.dsn[1..]);
    }
    r
}

fn tls_required(host: &str, how: &str) -> RcptResult {
    RcptResult::local(
        Class::Temp,
        "4.7.4",
        format!("TLS is required, but {how} host {host}"),
    )
}
