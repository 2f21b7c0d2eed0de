//! What a delivery attempt says about each recipient.
//!
//! Everything that can happen to a recipient — an SMTP reply, a refused
//! connection, a DNS failure, a timeout — is reduced to one `RcptResult`:
//! its class (sent / temporary / permanent), an RFC 3463 status code, the
//! text an administrator reads in the log and in `queue list`, and the
//! pieces a DSN needs (Remote-MTA, Diagnostic-Code). Deciding what to do
//! with a temporary result (retry or give up) is `retry`'s job, not this.

use std::time::Instant;

use super::job::Job;

/// The three ways a recipient's attempt can end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Sent,
    Temp,
    Perm,
}

/// The result for one recipient of a job.
#[derive(Debug, Clone)]
pub struct RcptResult {
    pub class: Class,
    /// RFC 3463 status, e.g. `4.4.1`.
    pub dsn: String,
    /// Human-readable reason as logged and stored in `last_reply`, e.g.
    /// `host mx.example[192.0.2.1] said: 451 4.3.0 Try later (in reply to
    /// RCPT TO command)` or `connect to mx.example[192.0.2.1]:25: Connection
    /// refused`.
    pub text: String,
    /// For a DSN: `smtp; 550 5.1.1 ...` or `X-mx2; connect to ...`.
    pub diagnostic: String,
    /// For a DSN: the host that gave the reply, if any.
    pub remote_mta: Option<String>,
}

impl RcptResult {
    /// A result that comes from mx2 itself (no remote reply).
    pub fn local(class: Class, dsn: &str, text: impl Into<String>) -> RcptResult {
        let text = text.into();
        RcptResult {
            class,
            dsn: dsn.to_string(),
            diagnostic: format!("X-mx2; {text}"),
            text,
            remote_mta: None,
        }
    }

    /// A result from an SMTP reply of `host` (`name[ip]`), given in reply to `stage`.
    pub fn from_reply(host: &str, reply: &super::client::Reply, stage: &str) -> RcptResult {
        let class = match reply.code {
            200..=299 => Class::Sent,
            500..=599 => Class::Perm,
            _ => Class::Temp,
        };
        let dsn = reply.enhanced().unwrap_or_else(|| {
            match class {
                Class::Sent => "2.0.0",
                Class::Temp => "4.0.0",
                Class::Perm => "5.0.0",
            }
            .to_string()
        });
        let one_line = reply.one_line();
        let text = if class == Class::Sent {
            one_line.clone()
        } else {
            format!("host {host} said: {one_line} (in reply to {stage} command)")
        };
        let name = host.split('[').next().unwrap_or(host);
        RcptResult {
            class,
            dsn,
            text,
            diagnostic: format!("smtp; {one_line}"),
            remote_mta: Some(format!("dns; {name}")),
        }
    }

    /// The same problem, reported for a recipient that did not cause it
    /// (the rest of a destination's backlog after its connection failed).
    pub fn suspended(&self) -> RcptResult {
        let mut r = self.clone();
        if !r.text.starts_with("delivery temporarily suspended: ") {
            r.text = format!("delivery temporarily suspended: {}", self.text);
        }
        r
    }
}

/// One finished delivery attempt of a job, handed to the recorder.
#[derive(Debug)]
pub struct Attempt {
    pub job: Job,
    /// `host[ip]:port` that was talked to, or `none`.
    pub relay: String,
    /// One per `job.rcpts`, in the same order.
    pub results: Vec<RcptResult>,
    /// The peer did not advertise DSN (matters for NOTIFY=SUCCESS: "relayed").
    pub peer_without_dsn: bool,
    /// When the attempt ended (for the delay= figure in logs).
    pub finished: Instant,
}

impl Attempt {
    /// Every recipient of `job` with the same result.
    pub fn all(job: Job, relay: &str, result: RcptResult) -> Attempt {
        let results = vec![result; job.rcpts.len()];
        Attempt {
            job,
            relay: relay.to_string(),
            results,
            peer_without_dsn: false,
            finished: Instant::now(),
        }
    }
}
