//! Primaries that misbehave: one that accepts the connection and never
//! speaks, one that answers a byte at a time, one that hangs up after the
//! data, one that never answers the final dot, one that talks garbage, one
//! with non-UTF-8 replies, one that injects plain text after its STARTTLS
//! 220, one with a certificate that does not verify. In every case mx2
//! times out (short `[relay]` timeouts here), defers with a reason, retries,
//! delivers once the primary behaves, and meanwhile a second, healthy
//! destination keeps receiving mail without delay.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sink::Sink;
use common::{wait_for, Daemon};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A correct primary (records what it accepts).
    Good,
    /// Accepts the TCP connection, never sends a byte.
    Silent,
    /// Sends its greeting one byte every 400 ms.
    ByteByByte,
    /// Takes the whole message, then closes without a reply.
    DropAfterData,
    /// Takes the whole message, then says nothing.
    StallAfterData,
    /// Answers with text that is not SMTP.
    Garbage,
    /// Replies carrying invalid UTF-8 (a 4xx to RCPT).
    NonUtf8,
    /// Offers STARTTLS and sends plain-text replies right after its 220.
    InjectAfterStartTls,
}

struct BadPrimary {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    /// Message-ID tokens accepted in Good mode.
    got: Arc<Mutex<Vec<String>>>,
    /// Bytes the client sent after STARTTLS (InjectAfterStartTls).
    after_starttls: Arc<Mutex<Vec<Vec<u8>>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl BadPrimary {
    fn start(mode: Mode) -> BadPrimary {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = BadPrimary {
            port: l.local_addr().unwrap().port(),
            mode: Arc::new(Mutex::new(mode)),
            got: Arc::default(),
            after_starttls: Arc::default(),
            connections: Arc::default(),
            stop: Arc::default(),
            streams: Arc::default(),
        };
        let (m, got, inj, n, stop, streams) = (
            p.mode.clone(),
            p.got.clone(),
            p.after_starttls.clone(),
            p.connections.clone(),
            p.stop.clone(),
            p.streams.clone(),
        );
        std::thread::spawn(move || {
            for c in l.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(c) = c else { continue };
                n.fetch_add(1, Ordering::SeqCst);
                if let Ok(c2) = c.try_clone() {
                    streams.lock().unwrap().push(c2);
                }
                let (m, got, inj, stop) = (m.clone(), got.clone(), inj.clone(), stop.clone());
                std::thread::spawn(move || {
                    let _ = bad_session(&m, c, &got, &inj, &stop);
                });
            }
        });
        p
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn got(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for BadPrimary {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn sleep_until_stopped(stop: &AtomicBool, max: Duration) {
    let end = Instant::now() + max;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One session; the mode is read at the greeting and again at each command
/// (mx2 reuses sessions, so a change must show in an open one).
fn bad_session(
    current: &Mutex<Mode>,
    conn: TcpStream,
    got: &Mutex<Vec<String>>,
    after_starttls: &Mutex<Vec<Vec<u8>>>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    let mode = || *current.lock().unwrap();
    match mode() {
        Mode::Silent => {
            sleep_until_stopped(stop, Duration::from_secs(60));
            return Ok(());
        }
        Mode::ByteByByte => {
            for b in b"220 slow.test ESMTP at your service\r\n" {
                out.write_all(&[*b])?;
                std::thread::sleep(Duration::from_millis(400));
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
            }
        }
        Mode::Garbage => {
            out.write_all(b"HTTP/1.1 400 Bad Request\r\n\xff\xfe\x00garbage\r\n\r\n")?;
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line)? > 0 {
                out.write_all(b"?? what\r\n")?;
                line.clear();
            }
            return Ok(());
        }
        _ => out.write_all(b"220 bad.test ESMTP\r\n")?,
    }
    let mut line = Vec::new();
    let mut rcpt_ok = false;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end()
            .to_ascii_uppercase();
        if text.starts_with("EHLO") {
            if mode() == Mode::InjectAfterStartTls {
                out.write_all(b"250-bad.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")?;
            } else {
                out.write_all(b"250-bad.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")?;
            }
        } else if text == "STARTTLS" {
            // The 220 and, in the same packet, replies for what comes next.
            out.write_all(
                b"220 2.0.0 Ready to start TLS\r\n250-bad.test\r\n250 PIPELINING\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n250 2.0.0 injected\r\n",
            )?;
            let mut rest = vec![0u8; 4096];
            let n = r.read(&mut rest).unwrap_or(0);
            after_starttls.lock().unwrap().push(rest[..n].to_vec());
            return Ok(());
        } else if text.starts_with("MAIL") {
            rcpt_ok = false;
            out.write_all(b"250 2.1.0 Ok\r\n")?;
        } else if text.starts_with("RCPT") {
            if mode() == Mode::NonUtf8 {
                out.write_all(b"451 4.3.0 \xff\xfe\xc3\x28 try \x80later\r\n")?;
            } else {
                rcpt_ok = true;
                out.write_all(b"250 2.1.5 Ok\r\n")?;
            }
        } else if text == "DATA" {
            if !rcpt_ok {
                out.write_all(b"554 5.5.1 no valid recipients\r\n")?;
                continue;
            }
            out.write_all(b"354 go ahead\r\n")?;
            let Some(data) = common::sink::read_data(&mut r)? else {
                return Ok(());
            };
            match mode() {
                Mode::DropAfterData => {
                    let _ = out.shutdown(Shutdown::Both);
                    return Ok(());
                }
                Mode::StallAfterData => {
                    sleep_until_stopped(stop, Duration::from_secs(60));
                    return Ok(());
                }
                _ => {}
            }
            let t = common::token_of(&data);
            if !t.is_empty() {
                got.lock().unwrap().push(t);
            }
            out.write_all(b"250 2.0.0 Ok: queued\r\n")?;
        } else if text == "QUIT" {
            out.write_all(b"221 2.0.0 Bye\r\n")?;
            return Ok(());
        } else {
            out.write_all(b"250 2.0.0 Ok\r\n")?;
        }
    }
}

fn message(token: &str) -> Vec<u8> {
    format!("Subject: {token}\r\nMessage-ID: <{token}@test>\r\n\r\nbody of {token}\r\n")
        .into_bytes()
}

fn send(d: &Daemon, rcpt: &str, token: &str) {
    let r = d
        .client()
        .send_mail("s@sender.test", &[rcpt], &message(token));
    assert!(r.starts_with("250"), "{token}: {r}");
}

/// `(status, attempts, last_reply)` of every recipient of `domain`.
fn rows(d: &Daemon, domain: &str) -> Vec<(String, i64, String)> {
    let db = d.db();
    let mut st = db
        .prepare(
            "SELECT status, attempts, coalesce(last_reply, '') FROM recipients WHERE address LIKE ?1",
        )
        .unwrap();
    st.query_map([format!("%@{domain}")], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

/// Sends one message to the healthy destination every 250 ms for `dur` and
/// returns the worst time one took to reach it.
fn good_mail_flows(d: &Daemon, good: &Sink, tag: &str, dur: Duration) -> Duration {
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut i = 0;
    while start.elapsed() < dur {
        let token = format!("{tag}-good{i}");
        let sent = Instant::now();
        send(d, "u@good.example", &token);
        assert!(
            wait_for(10, || good
                .txns()
                .iter()
                .any(|t| common::token_of(&t.data) == token)),
            "healthy destination held up: {token} not delivered in 10 s\n{}",
            d.log()
        );
        worst = worst.max(sent.elapsed());
        i += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    worst
}

const RELAY: &str = "connect_timeout = \"2s\"\ncommand_timeout = \"2s\"\n";

/// The scenario for one kind of misbehaviour: `n` messages to the bad
/// primary are deferred with a reply containing `expect`, the healthy
/// destination is not held up, and once the primary behaves, a retry
/// (no flush) delivers every message once.
fn misbehaving(mode: Mode, expect: &str) {
    let started = Instant::now();
    let bad = BadPrimary::start(mode);
    let good = Sink::start();
    let map = format!(
        "bad.example smtp:[127.0.0.1]:{}\ngood.example smtp:[127.0.0.1]:{}\n",
        bad.port, good.port
    );
    let d = Daemon::start_with(
        &map,
        "",
        "min_backoff = \"2s\"\nmax_backoff = \"3s\"\n",
        RELAY,
    );
    let tag = format!("{mode:?}");
    // A primary that stalls after the data costs 2 × command_timeout per
    // message on the (at first) 2 sessions mx2 opens to a destination.
    let n = if mode == Mode::StallAfterData { 6 } else { 25 };
    for i in 0..n {
        send(&d, "u@bad.example", &format!("{tag}-bad{i}"));
    }
    let worst = good_mail_flows(&d, &good, &tag, Duration::from_secs(3));
    // Every message was tried and deferred (some may be in a retry now).
    assert!(
        wait_for(20, || {
            let r = rows(&d, "bad.example");
            r.len() == n && r.iter().all(|(_, a, reply)| *a >= 1 && !reply.is_empty())
        }),
        "{mode:?}: not all tried and deferred: {:?}\n{}",
        rows(&d, "bad.example"),
        d.log()
    );
    let replies: HashSet<String> = rows(&d, "bad.example").into_iter().map(|r| r.2).collect();
    assert!(
        replies.iter().all(|r| r.contains(expect)),
        "{mode:?}: expected a reply with {expect:?}, got {replies:?}"
    );
    // Retried, not given up: still deferred after another round, still 4xx.
    assert!(
        wait_for(15, || rows(&d, "bad.example").iter().any(|r| r.1 >= 2)),
        "{mode:?}: no retry\n{:?}",
        rows(&d, "bad.example")
    );
    let worst2 = good_mail_flows(&d, &good, &format!("{tag}b"), Duration::from_secs(1));
    assert!(
        good.count() >= 4,
        "healthy destination received {}",
        good.count()
    );
    // The JSON queue listing copes with whatever the primary said.
    let (code, out, err) = d.cli(&["queue", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("queue list --json parses");
    assert_eq!(v.as_array().map(|a| a.len()), Some(n));

    // The primary gets better: everything arrives, once, by retry alone.
    bad.set(Mode::Good);
    assert!(
        wait_for(30, || bad.got().len() >= n
            && rows(&d, "bad.example").is_empty()),
        "{mode:?}: after recovery {} of {n} delivered; {:?}\n{}",
        bad.got().len(),
        rows(&d, "bad.example"),
        d.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let got = bad.got();
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), n, "{got:?}");
    let dups = got.len() - unique.len();
    eprintln!(
        "{mode:?}: {n} deferred with {:?}; healthy destination worst delay {:?}; after recovery {} delivered ({dups} duplicates); {} connections; {:?}",
        replies.iter().next(),
        worst.max(worst2),
        got.len(),
        bad.connections.load(Ordering::SeqCst),
        started.elapsed()
    );
    // A primary that never answered the final dot may have kept the
    // message: one copy more is the SMTP duplicate problem (RFC 1047);
    // otherwise none.
    if mode != Mode::StallAfterData && mode != Mode::DropAfterData {
        assert_eq!(dups, 0, "{got:?}");
    }
    // mx2 itself never stopped answering.
    assert!(d.client().cmd("NOOP").starts_with("250"));
}

#[test]
fn silent_primary_times_out() {
    misbehaving(
        Mode::Silent,
        "timed out while receiving the initial server greeting",
    );
}

#[test]
fn byte_by_byte_primary_times_out() {
    misbehaving(Mode::ByteByByte, "timed out");
}

#[test]
fn primary_dropping_after_data_is_retried() {
    misbehaving(Mode::DropAfterData, "lost connection");
}

#[test]
fn primary_silent_after_data_times_out() {
    misbehaving(Mode::StallAfterData, "timed out");
}

#[test]
fn garbage_speaking_primary_is_a_protocol_error() {
    misbehaving(Mode::Garbage, "malformed reply");
}

#[test]
fn non_utf8_replies_are_kept_and_retried() {
    misbehaving(Mode::NonUtf8, "4.3.0");
}

#[test]
fn plaintext_injected_after_starttls_is_refused() {
    // Under tls = "required": the injected replies are never believed.
    let bad = BadPrimary::start(Mode::InjectAfterStartTls);
    let map = format!("bad.example smtp:[127.0.0.1]:{}\n", bad.port);
    let relay = format!("{RELAY}tls = \"required\"\n");
    let d = Daemon::start_with(
        &map,
        "",
        "min_backoff = \"1h\"\nmax_backoff = \"1h\"\n",
        &relay,
    );
    send(&d, "u@bad.example", "inject");
    assert!(
        wait_for(15, || rows(&d, "bad.example")
            .iter()
            .any(|r| r.0 == "deferred")),
        "{:?}\n{}",
        rows(&d, "bad.example"),
        d.log()
    );
    let reply = rows(&d, "bad.example")[0].2.clone();
    assert!(
        reply.contains("server sent data after its STARTTLS reply"),
        "{reply}"
    );
    assert!(bad.got().is_empty());
    // mx2 sent nothing in plain text after STARTTLS: not a command.
    for after in bad.after_starttls.lock().unwrap().iter() {
        let text = String::from_utf8_lossy(after).to_ascii_uppercase();
        assert!(
            !text.contains("MAIL FROM") && !text.contains("EHLO"),
            "{text}"
        );
    }
    eprintln!("STARTTLS injection: deferred with {reply:?}");

    // Opportunistic TLS does not fall back to plain text for this: the
    // server is not merely unable to do TLS, it lied. Deferred as well.
    let d2 = Daemon::start_with(
        &map,
        "",
        "min_backoff = \"1h\"\nmax_backoff = \"1h\"\n",
        RELAY,
    );
    send(&d2, "u@bad.example", "inject2");
    assert!(
        wait_for(15, || rows(&d2, "bad.example")
            .iter()
            .any(|r| r.0 == "deferred")),
        "{:?}\n{}",
        rows(&d2, "bad.example"),
        d2.log()
    );
    assert!(bad.got().is_empty(), "{:?}", bad.got());
}

#[test]
fn bad_certificate_defers_under_verify_and_is_used_opportunistically() {
    let started = Instant::now();
    let behind = Sink::start();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = common::make_cert(certs.path(), "wrong-name.test");
    // The TLS primary: another mx2 with a self-signed, wrongly named
    // certificate, passing mail on to `behind`.
    let primary = Daemon::start(
        &format!("bad.example smtp:[127.0.0.1]:{}\n", behind.port),
        "",
        &format!("[smtp]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n"),
    );
    let map = format!("bad.example smtp:[127.0.0.1]:{}\n", primary.port);

    // (No healthy second destination here: under "verify" the test sink,
    // which has no certificate at all, would be refused as well.)
    let strict = Daemon::start_with(
        &map,
        "",
        "min_backoff = \"1s\"\nmax_backoff = \"1s\"\n",
        &format!("{RELAY}tls = \"verify\"\n"),
    );
    for i in 0..5 {
        send(&strict, "u@bad.example", &format!("verify{i}"));
    }
    assert!(
        wait_for(15, || rows(&strict, "bad.example")
            .iter()
            .all(|r| r.0 == "deferred" && r.1 >= 2)),
        "{:?}\n{}",
        rows(&strict, "bad.example"),
        strict.log()
    );
    let reply = rows(&strict, "bad.example")[0].2.clone();
    assert!(reply.contains("TLS"), "{reply}");
    assert_eq!(
        behind.count(),
        0,
        "nothing passed a certificate that does not verify"
    );

    // Opportunistic: encrypts without checking the certificate.
    let opp = Daemon::start_with(&map, "", "", RELAY);
    send(&opp, "u@bad.example", "opportunistic");
    assert!(
        wait_for(15, || behind.count() == 1),
        "{}\n{}",
        opp.log(),
        primary.log()
    );
    let text = behind.txns()[0].text();
    assert!(text.contains("with ESMTPS"), "went over TLS:\n{text}");
    eprintln!(
        "bad certificate: verify deferred with {reply:?}; opportunistic delivered over TLS; {:?}",
        started.elapsed()
    );
}
