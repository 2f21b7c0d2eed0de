//! One SMTP session: the command loop and the envelope it builds.
//!
//! Replies follow Postfix's wording and enhanced codes where an admin or a
//! test would compare them. Policy decisions (relay control, limits) are
//! made here, right where the command is answered; what happens to the
//! data after the final dot is `crate::pipeline`'s job.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::address::{self, AddressError};
use super::command::{self, Command, Param};
use super::conn::{Conn, Line, Stream};
use super::data::DataReader;
use super::received;
use super::Shared;
use crate::domain;
use crate::pipeline::{self, Disposition, Envelope};
use crate::queue::{self, MailParams, NewRecipient};

/// Errors before the session is dropped (Postfix smtpd_hard_error_limit).
const MAX_ERRORS: u32 = 20;
/// NOOP/RSET/VRFY/ETRN allowed per session (Postfix smtpd_junk_command_limit).
const MAX_JUNK: u32 = 100;

struct Txn {
    sender: String,
    params: MailParams,
    rcpts: Vec<NewRecipient>,
    rcpt_attempts: u32,
}

struct Session {
    shared: Arc<Shared>,
    peer: SocketAddr,
    helo: Option<String>,
    esmtp: bool,
    tls: bool,
    txn: Option<Txn>,
    errors: u32,
    junk: u32,
}

/// Why the command loop ended.
enum End {
    Quit,
    Close,
}

/// Runs a session on an accepted connection until QUIT, EOF, a timeout or shutdown.
pub async fn run(shared: Arc<Shared>, tcp: tokio::net::TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let cfg = shared.cfg.clone();
    let mut conn = Conn::new(tcp, cfg.smtp.command_timeout);
    let deadline = Instant::now() + cfg.smtp.session_timeout;

    // Early talkers (clients that speak before the greeting) are spam engines.
    if !shared.greet_pause.is_zero() {
        let probe = tokio::time::timeout(shared.greet_pause, conn.fill()).await;
        match probe {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {
                tracing::info!("reject: early talker client=[{}]", peer.ip());
                conn.close_with("554 5.5.1 Error: SMTP protocol synchronization")
                    .await;
                return;
            }
            Err(_) => {}
        }
    }
    conn.reply(&format!("220 {} ESMTP mx2", cfg.hostname));

    let mut s = Session {
        shared: shared.clone(),
        peer,
        helo: None,
        esmtp: false,
        tls: false,
        txn: None,
        errors: 0,
        junk: 0,
    };
    let mut shutdown = shared.shutdown.clone();
    loop {
        if *shutdown.borrow() {
            conn.close_with("421 4.3.2 Service shutting down, closing transmission channel")
                .await;
            return;
        }
        let line = tokio::select! {
            l = conn.read_line() => l,
            _ = shutdown.changed() => continue,
            _ = tokio::time::sleep_until(deadline) => {
                conn.close_with("421 4.4.2 Error: session time limit exceeded").await;
                return;
            }
        };
        let line = match line {
            Ok(Line::Ok(l)) => l,
            Ok(Line::TooLong) => {
                conn.reply("500 5.5.2 Error: line too long");
                if s.error() {
                    conn.close_with("421 4.7.0 Error: too many errors").await;
                    return;
                }
                continue;
            }
            Ok(Line::Eof) => return,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                conn.close_with("421 4.4.2 Error: timeout exceeded").await;
                return;
            }
            Err(_) => return,
        };
        let end = tokio::select! {
            r = s.command(&mut conn, &line) => r,
            _ = tokio::time::sleep_until(deadline) => {
                conn.close_with("421 4.4.2 Error: session time limit exceeded").await;
                return;
            }
        };
        match end {
            None => {}
            Some(End::Quit) => {
                conn.close_with("221 2.0.0 Bye").await;
                return;
            }
            Some(End::Close) => {
                let _ = conn.flush().await;
                return;
            }
        }
        if s.errors >= MAX_ERRORS {
            conn.close_with("421 4.7.0 Error: too many errors").await;
            return;
        }
    }
}

impl Session {
    /// Counts an error; true when the limit is reached.
    fn error(&mut self) -> bool {
        self.errors += 1;
        self.errors >= MAX_ERRORS
    }

    async fn command(&mut self, conn: &mut Conn, line: &[u8]) -> Option<End> {
        let cmd = command::parse(line);
        if matches!(
            cmd,
            Command::Noop | Command::Rset | Command::Vrfy | Command::Etrn(_)
        ) {
            self.junk += 1;
            if self.junk > MAX_JUNK {
                conn.reply("421 4.7.0 Error: too many junk commands");
                return Some(End::Close);
            }
        }
        match cmd {
            Command::Ehlo(name) => {
                self.helo = Some(name);
                self.esmtp = true;
                self.txn = None;
                let cfg = &self.shared.cfg;
                let mut lines = vec![
                    cfg.hostname.clone(),
                    "PIPELINING".into(),
                    format!("SIZE {}", cfg.smtp.max_message_size),
                    "ETRN".into(),
                ];
                if self.shared.tls_acceptor().is_some() && !self.tls {
                    lines.push("STARTTLS".into());
                }
                lines.extend(
                    ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"]
                        .iter()
                        .map(|s| s.to_string()),
                );
                let n = lines.len();
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i + 1 == n { ' ' } else { '-' };
                    conn.reply(&format!("250{sep}{l}"));
                }
            }
            Command::Helo(name) => {
                self.helo = Some(name);
                self.esmtp = false;
                self.txn = None;
                conn.reply(&format!("250 {}", self.shared.cfg.hostname));
            }
            Command::Mail { path, params } => self.mail(conn, &path, &params),
            Command::Rcpt { path, params } => self.rcpt(conn, &path, &params).await,
            Command::Data => return self.data(conn).await,
            Command::Rset => {
                self.txn = None;
                conn.reply("250 2.0.0 Ok");
            }
            Command::Noop => conn.reply("250 2.0.0 Ok"),
            Command::Quit => return Some(End::Quit),
            Command::Vrfy => conn
                .reply("252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"),
            Command::Etrn(domain) => self.etrn(conn, &domain).await,
            Command::StartTls => return self.starttls(conn).await,
            Command::NotImplemented(_) => {
                self.error();
                conn.reply("502 5.5.1 Error: command not implemented");
            }
            Command::Unknown(_) => {
                self.error();
                conn.reply("502 5.5.2 Error: command not recognized");
            }
            Command::Syntax(msg) => {
                self.error();
                conn.reply(&format!("501 5.5.4 {msg}"));
            }
        }
        None
    }

    fn mail(&mut self, conn: &mut Conn, path: &str, params: &[Param]) {
        if self.txn.is_some() {
            self.error();
            return conn.reply("503 5.5.1 Error: nested MAIL command");
        }
        let mut p = MailParams::default();
        for param in params {
            let v = param.value.as_deref();
            match (param.key.as_str(), v) {
                ("SIZE", Some(n)) => match n.parse::<u64>() {
                    Ok(n) if n > self.shared.cfg.smtp.max_message_size => {
                        return conn.reply("552 5.3.4 Message size exceeds fixed limit")
                    }
                    Ok(_) => {}
                    Err(_) => return conn.reply("501 5.5.4 Bad SIZE parameter"),
                },
                ("BODY", Some(b))
                    if b.eq_ignore_ascii_case("7BIT") || b.eq_ignore_ascii_case("8BITMIME") =>
                {
                    p.body = Some(b.to_ascii_uppercase())
                }
                ("BODY", _) => return conn.reply("501 5.5.4 Bad BODY parameter"),
                ("SMTPUTF8", None) => p.smtputf8 = true,
                ("RET", Some(r))
                    if r.eq_ignore_ascii_case("FULL") || r.eq_ignore_ascii_case("HDRS") =>
                {
                    p.ret = Some(r.to_ascii_uppercase())
                }
                ("RET", _) => return conn.reply("501 5.5.4 Bad RET parameter"),
                ("ENVID", Some(e)) => match command::parse_envid(e) {
                    Some(d) => p.envid = Some(d),
                    None => return conn.reply("501 5.5.4 Bad ENVID parameter"),
                },
                ("AUTH", Some(_)) => {}
                (k, _) => {
                    self.error();
                    return conn.reply(&format!("555 5.5.4 Unsupported option: {k}"));
                }
            }
        }
        let sender = if path.is_empty() {
            String::new()
        } else {
            if !path.is_ascii() && !p.smtputf8 {
                return conn.reply("553 5.6.7 Must declare SMTPUTF8 to send unicode address");
            }
            let refused = match address::parse(path) {
                Ok(a) => match self.sender_refused(&a) {
                    None => Ok(a.canonical),
                    Some(why) => Err((a.canonical, why)),
                },
                Err(AddressError::Domain(e)) => Err((domain::visible(path), e.to_string())),
                Err(_) => {
                    self.error();
                    return conn.reply("501 5.1.7 Bad sender address syntax");
                }
            };
            match refused {
                Ok(sender) => sender,
                Err((shown, why)) => {
                    self.error();
                    tracing::info!(
                        "reject: MAIL from [{}]: <{shown}>: Sender address rejected: {why}",
                        self.peer.ip()
                    );
                    return conn.reply(&format!(
                        "553 5.1.7 <{shown}>: Sender address rejected: {why}"
                    ));
                }
            }
        };
        self.txn = Some(Txn {
            sender,
            params: p,
            rcpts: Vec::new(),
            rcpt_attempts: 0,
        });
        conn.reply("250 2.1.0 Ok");
    }

    /// Why a sender is refused (`553 5.1.7`), if it is: a bounce to it
    /// would go where the local part or an address literal says, not where
    /// its domain's MX does (see `relay::internal`). A literal the
    /// transport map routes to is the admin's own host and is accepted.
    fn sender_refused(&self, a: &address::Address) -> Option<String> {
        if address::check_routing(a).is_err() {
            return Some("routing in the local part is not allowed".into());
        }
        let ip = domain::literal_ip(&a.domain)?;
        if crate::relay::internal::named_in_map(&self.shared.tables.transport(), ip) {
            return None;
        }
        Some("address literals are not accepted as sender".into())
    }

    async fn rcpt(&mut self, conn: &mut Conn, path: &str, params: &[Param]) {
        let max = self.shared.cfg.smtp.max_recipients;
        let Some(txn) = self.txn.as_mut() else {
            self.error();
            return conn.reply("503 5.5.1 Error: need MAIL command");
        };
        txn.rcpt_attempts += 1;
        if txn.rcpts.len() >= max {
            return conn.reply("452 4.5.3 Error: too many recipients");
        }
        if !path.is_ascii() && !txn.params.smtputf8 {
            return conn.reply("553 5.6.7 Must declare SMTPUTF8 to send unicode address");
        }
        let addr = match address::parse(path) {
            Ok(a) => a,
            Err(AddressError::Domain(e)) => {
                self.errors += 1;
                let shown = domain::visible(path);
                tracing::info!(
                    "reject: RCPT from [{}]: <{shown}>: {e}; from=<{}>",
                    self.peer.ip(),
                    txn.sender
                );
                return conn.reply(&format!(
                    "553 5.1.3 <{shown}>: Recipient address rejected: {e}"
                ));
            }
            Err(_) => {
                self.errors += 1;
                return conn.reply("501 5.1.3 Bad recipient address syntax");
            }
        };
        let shown = &addr.canonical;
        if let Err(AddressError::Routing) = address::check_routing(&addr) {
            self.errors += 1;
            tracing::info!(
                "reject: RCPT from [{}]: <{shown}>: routing in local part; from=<{}>",
                self.peer.ip(),
                txn.sender
            );
            return conn.reply(&format!(
                "550 5.7.1 <{shown}>: Recipient address rejected: routing in the local part is not allowed"
            ));
        }
        if !self.shared.tables.transport().is_relay_domain(&addr.domain) {
            self.errors += 1;
            tracing::info!(
                "reject: RCPT from [{}]: <{shown}>: Relay access denied; from=<{}>",
                self.peer.ip(),
                txn.sender
            );
            return conn.reply(&format!("554 5.7.1 <{shown}>: Relay access denied"));
        }
        if self.shared.verifier.active() {
            let v = self
                .shared
                .verifier
                .check(&addr.local, &addr.domain, &addr.canonical)
                .await;
            if let Some(reply) = v.reply(shown) {
                self.errors += 1;
                crate::metrics::get().recipients_rejected.inc();
                tracing::info!(
                    "reject: RCPT from [{}]: <{shown}>: {}; from=<{}>",
                    self.peer.ip(),
                    v.source,
                    txn.sender
                );
                return conn.reply(&reply);
            }
        }
        let mut r = NewRecipient {
            address: addr.canonical.clone(),
            notify: None,
            orcpt: None,
        };
        for param in params {
            match (param.key.as_str(), param.value.as_deref()) {
                ("NOTIFY", Some(v)) => match parse_notify(v) {
                    Some(n) => r.notify = Some(n),
                    None => return conn.reply("501 5.5.4 Bad NOTIFY parameter"),
                },
                ("ORCPT", Some(v)) => match command::parse_orcpt(v) {
                    Some(o) => r.orcpt = Some(o),
                    None => return conn.reply("501 5.5.4 Bad ORCPT parameter"),
                },
                (k, _) => return conn.reply(&format!("555 5.5.4 Unsupported option: {k}")),
            }
        }
        if !txn.rcpts.iter().any(|x| x.address == r.address) {
            txn.rcpts.push(r);
        }
        conn.reply("250 2.1.5 Ok");
    }

    async fn data(&mut self, conn: &mut Conn) -> Option<End> {
        let Some(txn) = self.txn.as_ref() else {
            self.error();
            conn.reply("503 5.5.1 Error: need RCPT command");
            return None;
        };
        if txn.rcpts.is_empty() {
            let attempted = txn.rcpt_attempts > 0;
            self.error();
            if attempted {
                conn.reply("554 5.5.1 Error: no valid recipients");
            } else {
                conn.reply("503 5.5.1 Error: need RCPT command");
            }
            return None;
        }
        let cfg = self.shared.cfg.clone();
        let id = queue::id::new_id();
        let helo = self
            .helo
            .clone()
            .unwrap_or_else(|| format!("[{}]", self.peer.ip()));
        let trace = received::header(&received::Trace {
            helo: &helo,
            client_ip: self.peer.ip(),
            hostname: &cfg.hostname,
            esmtp: self.esmtp,
            tls: self.tls,
            smtputf8: txn.params.smtputf8,
            queue_id: &id,
            single_rcpt: (txn.rcpts.len() == 1).then(|| txn.rcpts[0].address.as_str()),
        });
        conn.reply("354 End data with <CR><LF>.<CR><LF>");
        let mut reader = DataReader::new(trace, cfg.smtp.max_message_size)
            .with_header_limits(cfg.smtp.max_header_size, cfg.smtp.max_header_count);
        loop {
            if let Some(n) = reader.feed(conn.buffered()) {
                conn.consume(n);
                break;
            }
            let n = conn.buffered().len();
            conn.consume(n);
            match conn.fill_up_to(super::conn::DATA_READ).await {
                Ok(0) => {
                    tracing::info!("{id}: lost connection after DATA from [{}]", self.peer.ip());
                    return Some(End::Close);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::info!("{id}: {e} after DATA from [{}]", self.peer.ip());
                    if e.kind() == std::io::ErrorKind::TimedOut {
                        conn.reply("421 4.4.2 Error: timeout exceeded");
                    }
                    return Some(End::Close);
                }
            }
        }
        conn.shrink();
        let txn = self.txn.take()?;
        let result = reader.finish();
        if result.bare_newlines {
            tracing::info!(
                "{id}: bare CR or LF in data from [{}], stored as CRLF",
                self.peer.ip()
            );
        }
        if result.too_big {
            tracing::info!(
                "{id}: reject: message from [{}] too big ({} bytes)",
                self.peer.ip(),
                result.size
            );
            crate::metrics::get().rejected.inc();
            conn.reply("552 5.3.4 Error: message file too big");
            return None;
        }
        if let Some(over) = result.header_overflow {
            tracing::info!(
                "{id}: reject: message header from [{}] too large ({over})",
                self.peer.ip()
            );
            crate::metrics::get().rejected.inc();
            conn.reply("552 5.3.4 Message header too large");
            return None;
        }
        if result.saw_nul {
            tracing::info!(
                "{id}: reject: message from [{}] contains NUL",
                self.peer.ip()
            );
            crate::metrics::get().rejected.inc();
            conn.reply("554 5.6.0 Error: message contains NUL characters");
            return None;
        }
        let env = Envelope {
            id: id.clone(),
            sender: txn.sender,
            params: txn.params,
            recipients: txn.rcpts,
            client: format!("unknown[{}]", self.peer.ip()),
            helo,
        };
        let dot = std::time::Instant::now();
        let disposition = pipeline::accept(&self.shared.pipeline, env, result.message).await;
        crate::metrics::get().accept_seconds.observe(dot.elapsed());
        let reply = match disposition {
            Disposition::Queued => format!("250 2.0.0 Ok: queued as {id}"),
            Disposition::Discarded => format!("250 2.0.0 Ok: queued as {id}"),
            Disposition::Rejected(r) | Disposition::TempFail(r) => r,
        };
        conn.reply(&reply);
        None
    }

    async fn etrn(&mut self, conn: &mut Conn, domain: &str) {
        if self.helo.is_none() {
            return conn.reply("503 5.5.1 Error: send HELO/EHLO first");
        }
        if self.txn.is_some() {
            return conn.reply("503 5.5.1 Error: MAIL transaction in progress");
        }
        let d = domain
            .trim_start_matches(['@', '#'])
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if !self.shared.tables.transport().is_relay_domain(&d) {
            return conn.reply(&format!("459 4.7.1 <{d}>: service unavailable"));
        }
        // One ETRN per client every 10 s (RFC 1985's 458: "unable to queue
        // messages", temporary; 459 would say the node is not allowed).
        let key = super::limits::client_key(self.peer.ip(), self.shared.cfg.smtp.ipv6_prefix);
        let allowed = self
            .shared
            .etrn
            .lock()
            .map(|mut g| g.allow(key, std::time::Instant::now()))
            .unwrap_or(false);
        if !allowed {
            tracing::info!(
                "reject: ETRN {d} from [{}]: too many ETRN requests",
                self.peer.ip()
            );
            return conn.reply("458 4.7.1 Error: too many ETRN requests, try again later");
        }
        match self.shared.pipeline.queue_flush_domain(&d).await {
            Ok(n) => {
                tracing::info!("ETRN {d} from [{}]: {n} recipients due now", self.peer.ip());
                conn.reply("250 Queuing started");
            }
            Err(e) => {
                tracing::error!("ETRN {d}: {e:#}");
                conn.reply("458 Unable to queue messages");
            }
        }
    }

    async fn starttls(&mut self, conn: &mut Conn) -> Option<End> {
        let Some(acceptor) = self.shared.tls_acceptor() else {
            conn.reply("502 5.5.1 Error: command not implemented");
            return None;
        };
        if self.tls {
            conn.reply("554 5.5.1 Error: TLS already active");
            return None;
        }
        conn.reply("220 2.0.0 Ready to start TLS");
        if conn.flush().await.is_err() {
            return Some(End::Close);
        }
        // Anything sent after STARTTLS before the handshake is an injection
        // attempt (CVE-2011-0411): it must never be read as a command.
        let dropped = conn.discard_buffered();
        if dropped > 0 {
            tracing::warn!(
                "[{}]: discarded {dropped} bytes pipelined after STARTTLS",
                self.peer.ip()
            );
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut conn.stream, Stream::Gone) else {
            return Some(End::Close);
        };
        match tokio::time::timeout(Duration::from_secs(60), acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                conn.stream = Stream::Tls(Box::new(tls.into()));
                self.tls = true;
                self.helo = None;
                self.esmtp = false;
                self.txn = None;
                None
            }
            Ok(Err(e)) => {
                tracing::info!("[{}]: TLS handshake failed: {e}", self.peer.ip());
                Some(End::Close)
            }
            Err(_) => Some(End::Close),
        }
    }
}

/// `NEVER` alone, or any of SUCCESS / FAILURE / DELAY (RFC 3461 §4.1).
fn parse_notify(v: &str) -> Option<String> {
    let up = v.to_ascii_uppercase();
    let parts: Vec<&str> = up.split(',').collect();
    if parts == ["NEVER"] {
        return Some(up);
    }
    if parts
        .iter()
        .all(|p| matches!(*p, "SUCCESS" | "FAILURE" | "DELAY"))
    {
        Some(up)
    } else {
        None
    }
}
