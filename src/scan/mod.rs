//! Content scanners: SpamAssassin's spamd, ClamAV's clamd, and milters.
//!
//! The first stage after DATA (see `crate::pipeline`). Scanners add or
//! change headers — milters may also replace the body and change the
//! envelope — and may end the message (discard, reject, tempfail, hold);
//! they never decide what the operator's header rules decide. The rules
//! run next, on the header block the scanners produced: that is how
//! `X-Spam-Flag: YES` gets discarded and `X-Spam-Status: No` stripped.
//!
//! Order: spamd and clamd (both only read the message, so they run at the
//! same time), then the milters one after another, each seeing the
//! previous one's result. The body is never touched except by a milter's
//! SMFIR_REPLBODY.
//!
//! Every exchange is bounded by `scan.timeout`. A scanner that cannot be
//! reached or misbehaves is logged and, by `scan.on_scanner_error`,
//! skipped (`accept`, Postfix's `milter_default_action = accept`) or the
//! message is refused with `451 4.7.1` (`tempfail`).
//!
//! Size: clamd gets every message (clamd's `StreamMaxLength` is the limit
//! that counts; see `clamd`). spamd and the milters skip messages larger
//! than `scan.max_scan_size` (spam is small, and spamd is slow on big
//! messages). Every skip is logged with the setting to raise.

pub mod clamd;
pub mod endpoint;
pub mod headers;
pub mod milter;
pub mod spamd;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::{Config, OnScannerError};
use crate::pipeline::Envelope;
use endpoint::Endpoint;
use headers::Message;
use milter::{Final, Milter, Transaction};

/// The reply when a scanner fails and `on_scanner_error = "tempfail"`.
pub const SCANNER_ERROR_REPLY: &str = "451 4.7.1 Service unavailable - try again later";

/// What the scanners decided, besides their header edits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// Queue it held, with this reason.
    Hold(String),
    /// Say 250 and drop it; the text says who decided.
    Discard(String),
    /// A complete reply (5xx).
    Reject(String),
    /// A complete reply (4xx).
    TempFail(String),
}

/// The configured scanners.
pub struct Scanners {
    spamd: Option<Endpoint>,
    clamd: Option<Endpoint>,
    milters: Vec<Milter>,
    on_error: OnScannerError,
    timeout: Duration,
    max_scan_size: u64,
    /// What clamd may be sent (the DATA limit), for the log.
    max_message_size: u64,
    hostname: String,
}

impl Scanners {
    /// Reads `[scan]`; a malformed scanner address is an error.
    pub fn from_config(cfg: &Config) -> Result<Scanners> {
        let s = &cfg.scan;
        let spamd = s
            .spamd
            .as_deref()
            .map(Endpoint::parse)
            .transpose()
            .context("scan.spamd")?;
        let clamd = s
            .clamd
            .as_deref()
            .map(Endpoint::parse)
            .transpose()
            .context("scan.clamd")?;
        let milters = s
            .milters
            .iter()
            .filter(|m| !m.trim().is_empty())
            .map(|m| {
                Ok(Milter {
                    name: m.trim().to_string(),
                    endpoint: Endpoint::parse(m).context("scan.milters")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Scanners {
            spamd,
            clamd,
            milters,
            on_error: s.on_scanner_error,
            timeout: s.timeout,
            max_scan_size: s.max_scan_size,
            max_message_size: cfg.smtp.max_message_size,
            hostname: cfg.hostname.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.spamd.is_none() && self.clamd.is_none() && self.milters.is_empty()
    }

    /// One line for the startup log.
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(e) = &self.spamd {
            v.push(format!("spamd={e}"));
        }
        if let Some(e) = &self.clamd {
            v.push(format!("clamd={e}"));
        }
        for m in &self.milters {
            v.push(format!("milter={}", m.name));
        }
        if v.is_empty() {
            "none".into()
        } else {
            v.join(" ")
        }
    }

    /// Scans one message. Returns the (possibly edited) message and the
    /// verdict; `env` may have new recipients or a new sender (milters).
    pub async fn scan(&self, env: &mut Envelope, data: Vec<u8>) -> (Vec<u8>, Verdict) {
        if self.is_empty() {
            return (data, Verdict::Continue);
        }
        let id = env.id.clone();
        let size = data.len() as u64;
        let small = size <= self.max_scan_size;
        if !small {
            let skipped = [
                ("spamd", self.spamd.is_some()),
                ("milters", !self.milters.is_empty()),
            ];
            for (who, _) in skipped.iter().filter(|w| w.1) {
                tracing::info!(
                    "{id}: {who}: skipped: size {size} exceeds max_scan_size {}",
                    self.max_scan_size
                );
            }
        }

        let started = Instant::now();
        let spam = async {
            match &self.spamd {
                Some(ep) if small => Some(spamd::check(ep, &data, self.timeout).await),
                _ => None,
            }
        };
        let virus = async {
            match &self.clamd {
                Some(ep) => Some(clamd::scan(ep, &data, self.timeout).await),
                None => None,
            }
        };
        let (spam, virus) = tokio::join!(spam, virus);
        let took = started.elapsed().as_secs_f64();
        let mut msg = Message::parse(data);

        match spam {
            None => {}
            Some(Ok(r)) => {
                tracing::info!(
                    "{id}: spamd: score={}/required={} spam={} time={took:.2}s",
                    r.score,
                    r.required,
                    if r.spam { "yes" } else { "no" }
                );
                r.apply(&mut msg);
            }
            Some(Err(e)) => {
                let name = format!(
                    "spamd {}",
                    self.spamd
                        .as_ref()
                        .map(|e| e.to_string())
                        .unwrap_or_default()
                );
                if let Some(v) = self.failed(&id, &name, &e) {
                    return (msg.to_bytes(), v);
                }
            }
        }
        match virus {
            None => {}
            Some(Ok(v)) => {
                match &v {
                    clamd::Verdict::Clean => tracing::info!("{id}: clamd: clean time={took:.2}s"),
                    clamd::Verdict::Found(sig) => {
                        tracing::info!("{id}: clamd: FOUND {sig} time={took:.2}s")
                    }
                    clamd::Verdict::TooBig => tracing::warn!(
                        "{id}: clamd: not scanned: size {size} exceeds clamd's StreamMaxLength; \
                         raise StreamMaxLength in clamd.conf (to max_message_size, {}) to scan it",
                        self.max_message_size
                    ),
                }
                v.apply(&mut msg);
            }
            Some(Err(e)) => {
                let name = format!(
                    "clamd {}",
                    self.clamd
                        .as_ref()
                        .map(|e| e.to_string())
                        .unwrap_or_default()
                );
                if let Some(v) = self.failed(&id, &name, &e) {
                    return (msg.to_bytes(), v);
                }
            }
        }

        let mut hold = None;
        let milters = if small { &self.milters[..] } else { &[] };
        for m in milters {
            let started = Instant::now();
            let tx = Transaction {
                env: &*env,
                hostname: &self.hostname,
            };
            let res = milter::run(m, &tx, &msg, self.timeout).await;
            let took = started.elapsed().as_secs_f64();
            let name = format!("milter {}", m.name);
            let out = match res {
                Ok(o) => o,
                Err(e) => {
                    if let Some(v) = self.failed(&id, &name, &e) {
                        return (msg.to_bytes(), v);
                    }
                    continue;
                }
            };
            match out.last {
                Final::Continue | Final::Accept => {
                    let word = if out.last == Final::Accept {
                        "accept"
                    } else {
                        "continue"
                    };
                    let applied = milter::apply(&out, &mut msg, env);
                    let notes = if applied.notes.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", applied.notes.join(", "))
                    };
                    tracing::info!(
                        "{id}: {name}: {word} at {}{notes} time={took:.2}s",
                        out.stage
                    );
                    if let Some(q) = applied.quarantine {
                        hold = Some(format!("{name}: {q}"));
                    }
                }
                Final::Discard => {
                    tracing::info!("{id}: {name}: discard at {} time={took:.2}s", out.stage);
                    return (msg.to_bytes(), Verdict::Discard(format!("{name}: discard")));
                }
                Final::Reject(r) => {
                    let line = r.replace("\r\n", " ");
                    tracing::info!(
                        "{id}: {name}: reject at {}: {line} time={took:.2}s",
                        out.stage
                    );
                    return (msg.to_bytes(), Verdict::Reject(r));
                }
                Final::Tempfail(r) => {
                    let line = r.replace("\r\n", " ");
                    tracing::info!(
                        "{id}: {name}: tempfail at {}: {line} time={took:.2}s",
                        out.stage
                    );
                    return (msg.to_bytes(), Verdict::TempFail(r));
                }
            }
            if env.recipients.is_empty() {
                return (
                    msg.to_bytes(),
                    Verdict::Discard(format!("{name}: every recipient removed")),
                );
            }
        }
        let verdict = match hold {
            Some(h) => Verdict::Hold(h),
            None => Verdict::Continue,
        };
        (msg.to_bytes(), verdict)
    }

    /// Logs a scanner failure; with `tempfail`, the verdict that ends the message.
    fn failed(&self, id: &str, name: &str, e: &anyhow::Error) -> Option<Verdict> {
        match self.on_error {
            OnScannerError::Accept => {
                tracing::warn!(
                    "{id}: {name}: error: {e:#}; passed unscanned (on_scanner_error = accept)"
                );
                None
            }
            OnScannerError::Tempfail => {
                tracing::warn!(
                    "{id}: {name}: error: {e:#}; {SCANNER_ERROR_REPLY} (on_scanner_error = tempfail)"
                );
                Some(Verdict::TempFail(SCANNER_ERROR_REPLY.into()))
            }
        }
    }
}
