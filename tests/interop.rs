//! The interoperability matrix (docs/interop.md): real MTAs and clients
//! against `mx2 serve`, one test per cell. Every peer is started by its
//! test from a fresh temp dir on free loopback ports and stopped on drop;
//! a peer that cannot start fails the test (no skips). The peers are
//! installed by `scripts/interop-setup.sh`.
//!
//! - Senders → mx2: Postfix, Exim, OpenSMTPD, swaks and Python's smtplib
//!   send to mx2, which relays to the in-test sink (`common::sink`), so
//!   the cell sees exactly what mx2 passed on: MAIL/RCPT parameters
//!   (BODY, SMTPUTF8, RET, ENVID, NOTIFY, ORCPT), mx2's Received: line
//!   (`with ESMTPS` after STARTTLS, `UTF8SMTP` for SMTPUTF8) and the body,
//!   byte for byte.
//! - mx2 → primaries: mx2 relays to a real Postfix or Exim that delivers
//!   into Maildirs; the cells compare the delivered files with the corpus
//!   (`support::corpus` says exactly what is stripped) and check DSNs and
//!   TLS in the primary's log.
//!
//! Each test prints `interop-time NAME SECONDS` to stderr (`--nocapture`).
//! Debugging: `MX2_INTEROP_KEEP=1` keeps the peers' directories
//! (/tmp/mx2-interop-*), `MX2_INTEROP_DUMP=DIR` writes delivered corpus files.

mod common;
#[path = "interop/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::sink::{Sink, Txn};
use common::{Client, Daemon};
use support::corpus;
use support::exim::{self, Exim};
use support::opensmtpd::OpenSmtpd;
use support::postfix::{self, Postfix};
use support::{cert, run_timeout, text, wait_maildir, Cert};

const SENDER: &str = "alice@sender.example";
const UTF8_SENDER: &str = "アリス@sender.example";
const UTF8_RCPT: &str = "しげる@example.jp";
const BOB: &str = "bob@example.jp";

/// Prints the test's wall time when it ends (pass or fail).
struct Timer(&'static str, Instant);

fn timer(name: &'static str) -> Timer {
    Timer(name, Instant::now())
}

impl Drop for Timer {
    fn drop(&mut self) {
        eprintln!(
            "interop-time {} {:.1}s {}",
            self.0,
            self.1.elapsed().as_secs_f64(),
            if std::thread::panicking() {
                "FAILED"
            } else {
                "ok"
            }
        );
    }
}

/// mx2 with the operator's rules; `relay` keys join `[relay]`; with `tls`
/// it offers STARTTLS (Postfix sends no SNI: mx2 uses `[smtp] tls_cert`).
fn mx2(transport: &str, relay: &str, tls: Option<&Cert>) -> Daemon {
    let mut extra = relay.to_string();
    if let Some(c) = tls {
        extra.push_str(&format!(
            "[smtp]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            c.cert.display(),
            c.key.display()
        ));
    }
    Daemon::start(transport, common::OPERATOR_RULES, &extra)
}

/// mx2 relaying example.jp to a fresh sink.
fn mx2_to_sink(tls: Option<&Cert>) -> (Sink, Daemon) {
    let sink = Sink::start();
    let d = mx2(
        &format!("example.jp smtp:[127.0.0.1]:{}\n", sink.port),
        "",
        tls,
    );
    (sink, d)
}

/// The one transaction mx2 relayed to the sink.
fn relayed(sink: &Sink, d: &Daemon, peer_log: &dyn Fn() -> String) -> Txn {
    if !common::wait_for(30, || sink.count() >= 1) {
        panic!(
            "mx2 relayed nothing\nmx2 log:\n{}\npeer:\n{}",
            d.log(),
            peer_log()
        );
    }
    sink.txns().remove(0)
}

fn corpus_file(name: &str) -> (PathBuf, Vec<u8>) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop/corpus")
        .join(name);
    let b = std::fs::read(&p).unwrap();
    (p, b)
}

/// The 8-bit message of the sender cells: UTF-8 Japanese body
/// (Content-Transfer-Encoding: 8bit), headers ASCII.
fn eightbit() -> (PathBuf, Vec<u8>) {
    corpus_file("05-utf8-japanese-8bit.eml")
}

fn body(msg: &[u8]) -> Vec<u8> {
    let (_, mut b) = corpus::headers(msg);
    if !b.ends_with(b"\n") {
        b.extend_from_slice(b"\r\n");
    }
    b
}

/// Space-separated parameters, NOTIFY keywords sorted (peers reorder them).
fn params(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|p| match p.strip_prefix("NOTIFY=") {
            Some(n) => {
                let mut k: Vec<&str> = n.split(',').collect();
                k.sort();
                format!("NOTIFY={}", k.join(","))
            }
            None => p.to_string(),
        })
        .collect()
}

/// What a sender cell checks in the transaction mx2 relayed to the sink.
struct Expect<'a> {
    /// mx2's Received: protocol keyword (ESMTP, ESMTPS, UTF8SMTP, UTF8SMTPS).
    with: &'a str,
    /// MAIL FROM parameters that must be there, as tokens.
    mail: &'a [&'a str],
    /// RCPT parameters of the first recipient that must be there.
    rcpt: &'a [&'a str],
    sender: &'a str,
    rcpts: &'a [&'a str],
}

fn check(t: &Txn, sent: &[u8], e: Expect<'_>) {
    eprintln!("relayed: MAIL FROM:{} RCPT {:?}", t.mail_from, t.rcpt_lines);
    let mail = params(&t.mail_from);
    for p in params(&e.mail.join(" ")) {
        assert!(mail.contains(&p), "no {p} in MAIL FROM:{}", t.mail_from);
    }
    let rcpt = params(&t.rcpt_lines[0]);
    for p in params(&e.rcpt.join(" ")) {
        assert!(rcpt.contains(&p), "no {p} in RCPT TO:{}", t.rcpt_lines[0]);
    }
    assert_eq!(t.sender(), e.sender);
    assert_eq!(t.rcpts, e.rcpts);
    // mx2's Received: is the first header, the only one from mx2
    let (hs, _) = corpus::headers(&t.data);
    let first = text(&hs[0]);
    assert!(
        first.starts_with("Received: ")
            && first.contains(&format!("by mx2.test (mx2) with {} id ", e.with)),
        "mx2's Received (with {}) is not first:\n{}",
        e.with,
        t.text()
    );
    assert_eq!(corpus::mx2_received_count(&t.data), 1, "{}", t.text());
    let (want, got) = (body(sent), body(&t.data));
    assert!(
        want == got,
        "body changed: {}\n{}",
        corpus::first_diff(&want, &got),
        t.text()
    );
}

/// One smtplib transaction (tests/interop/send.py); panics on any non-2xx.
struct Py<'a> {
    port: u16,
    starttls: bool,
    from: &'a str,
    to: &'a [&'a str],
    mail: &'a [&'a str],
    rcpt: &'a [&'a str],
    file: &'a Path,
}

fn py(p: Py<'_>, peer_log: &dyn Fn() -> String) -> String {
    let mut args = vec![
        "--port".to_string(),
        p.port.to_string(),
        "--from".into(),
        p.from.into(),
        "--file".into(),
        p.file.display().to_string(),
    ];
    if p.starttls {
        args.push("--starttls".into());
    }
    for (flag, vals) in [
        ("--to", p.to),
        ("--mail-opt", p.mail),
        ("--rcpt-opt", p.rcpt),
    ] {
        for v in vals {
            args.push(flag.into());
            args.push(v.to_string());
        }
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = support::py_send(&a);
    let s = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "smtplib:\n{s}\npeer:\n{}", peer_log());
    s
}

/// One transaction with every byte on the wire under our control (mx2 →
/// primary cells): `mail` and `rcpts` are the full arguments after `FROM:`
/// / `TO:`. Returns the reply to the final dot.
fn send_raw(port: u16, mail: &str, rcpts: &[&str], msg: &[u8]) -> String {
    let mut c = Client::connect(port);
    let r = c.send_mail_args(mail, rcpts, msg);
    c.cmd("QUIT");
    assert!(r.starts_with("250"), "end of data: {r}");
    r
}

/// A DSN field line `Field: value` (field name caseless, whitespace in the
/// value ignored: Postfix writes `rfc822; a@b`, Exim `rfc822;a@b`).
fn dsn_has(dsn: &str, field: &str, value: &str) -> bool {
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    dsn.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(f, v)| f.eq_ignore_ascii_case(field) && squash(v) == squash(value))
    })
}

// ---------------------------------------------------------------- senders → mx2

fn postfix_sender(d: &Daemon, smtp_tls: &str) -> Postfix {
    Postfix::start(postfix::Role::Sender { relay_port: d.port }, None, smtp_tls)
}

/// Postfix's smtp client (sendmail -B 8BITMIME -N -R -V) → mx2, plain.
#[test]
fn postfix_to_mx2_plain_8bitmime_dsn() {
    let _t = timer("postfix_to_mx2_plain_8bitmime_dsn");
    let (sink, d) = mx2_to_sink(None);
    let pf = postfix_sender(&d, "none");
    let (_, msg) = eightbit();
    pf.sendmail(
        &[
            "-f",
            SENDER,
            "-B",
            "8BITMIME",
            "-N",
            "success,delay,failure",
            "-R",
            "hdrs",
            "-V",
            "pf-envid-1",
            BOB,
        ],
        &msg,
    );
    let t = relayed(&sink, &d, &|| pf.log());
    check(
        &t,
        &msg,
        Expect {
            with: "ESMTP",
            mail: &["BODY=8BITMIME", "RET=HDRS", "ENVID=pf-envid-1"],
            rcpt: &[
                "NOTIFY=SUCCESS,DELAY,FAILURE",
                "ORCPT=rfc822;bob@example.jp",
            ],
            sender: SENDER,
            rcpts: &[BOB],
        },
    );
    assert!(pf.wait_log("status=sent", 10), "{}", pf.log());
}

/// Postfix with smtp_tls_security_level = encrypt (no SNI) → mx2 STARTTLS.
#[test]
fn postfix_to_mx2_starttls() {
    let _t = timer("postfix_to_mx2_starttls");
    let c = cert("mx2.test");
    let (sink, d) = mx2_to_sink(Some(&c));
    let pf = postfix_sender(&d, "encrypt");
    let (_, msg) = eightbit();
    pf.sendmail(&["-f", SENDER, "-B", "8BITMIME", BOB], &msg);
    let t = relayed(&sink, &d, &|| pf.log());
    check(
        &t,
        &msg,
        Expect {
            with: "ESMTPS",
            mail: &["BODY=8BITMIME"],
            rcpt: &[],
            sender: SENDER,
            rcpts: &[BOB],
        },
    );
    assert!(pf.wait_log("status=sent", 10), "{}", pf.log());
    let needle = format!(
        "TLS connection established to 127.0.0.1[127.0.0.1]:{}",
        d.port
    );
    assert!(pf.log().contains(&needle), "no '{needle}':\n{}", pf.log());
}

/// Postfix → mx2 with UTF-8 envelope addresses (SMTPUTF8; Postfix's
/// sendmail flags them itself: smtputf8_autodetect_classes).
#[test]
fn postfix_to_mx2_smtputf8() {
    let _t = timer("postfix_to_mx2_smtputf8");
    let (sink, d) = mx2_to_sink(None);
    let pf = postfix_sender(&d, "none");
    let (_, msg) = eightbit();
    pf.sendmail(&["-f", UTF8_SENDER, UTF8_RCPT], &msg);
    let t = relayed(&sink, &d, &|| pf.log());
    check(
        &t,
        &msg,
        Expect {
            with: "UTF8SMTP",
            mail: &["SMTPUTF8"],
            rcpt: &[],
            sender: UTF8_SENDER,
            rcpts: &[UTF8_RCPT],
        },
    );
}

fn exim_sender(d: &Daemon, require_tls: bool) -> Exim {
    Exim::start(
        exim::Role::Sender {
            relay_port: d.port,
            require_tls,
        },
        None,
    )
}

/// `exim -odf` submission, manualroute to mx2, plain. Exim ignores
/// -B8BITMIME and never sends BODY= (its accept_8bitmime only accepts
/// it), so this checks that the 8-bit body passes intact without it.
#[test]
fn exim_to_mx2_plain_8bit() {
    let _t = timer("exim_to_mx2_plain_8bit");
    let (sink, d) = mx2_to_sink(None);
    let ex = exim_sender(&d, false);
    let (_, msg) = eightbit();
    let out = ex.submit(SENDER, &["-B8BITMIME"], &[BOB], &msg);
    assert!(
        out.status.success(),
        "exim -odf: {}\n{}",
        text(&out.stderr),
        ex.logs()
    );
    let t = relayed(&sink, &d, &|| ex.logs());
    check(
        &t,
        &msg,
        Expect {
            with: "ESMTP",
            mail: &[],
            rcpt: &[],
            sender: SENDER,
            rcpts: &[BOB],
        },
    );
    let log = ex.mainlog();
    assert!(
        log.lines().any(|l| l.contains("=> bob@example.jp")
            && l.contains(&format!("[127.0.0.1]:{}", d.port))
            && !l.contains(" X=")),
        "{log}"
    );
}

/// `exim -odf` with hosts_require_tls = * → mx2 STARTTLS.
#[test]
fn exim_to_mx2_starttls() {
    let _t = timer("exim_to_mx2_starttls");
    let c = cert("mx2.test");
    let (sink, d) = mx2_to_sink(Some(&c));
    let ex = exim_sender(&d, true);
    let (_, msg) = eightbit();
    let out = ex.submit(SENDER, &[], &[BOB], &msg);
    assert!(
        out.status.success(),
        "exim -odf: {}\n{}",
        text(&out.stderr),
        ex.logs()
    );
    let t = relayed(&sink, &d, &|| ex.logs());
    check(
        &t,
        &msg,
        Expect {
            with: "ESMTPS",
            mail: &[],
            rcpt: &[],
            sender: SENDER,
            rcpts: &[BOB],
        },
    );
    let log = ex.mainlog();
    let line = log
        .lines()
        .find(|l| l.contains("=> bob@example.jp"))
        .unwrap_or_else(|| panic!("no delivery line:\n{log}"));
    assert!(line.contains(" X=TLS"), "not TLS: {line}");
}

/// smtplib → Exim's smtpd (SMTPUTF8, DSN) → manualroute → mx2.
#[test]
fn exim_to_mx2_smtputf8_dsn() {
    let _t = timer("exim_to_mx2_smtputf8_dsn");
    let (sink, d) = mx2_to_sink(None);
    let ex = exim_sender(&d, false);
    let (path, msg) = eightbit();
    py(
        Py {
            port: ex.port,
            starttls: false,
            from: UTF8_SENDER,
            to: &[BOB],
            mail: &[
                "SMTPUTF8",
                "BODY=8BITMIME",
                "RET=HDRS",
                "ENVID=exim-envid-1",
            ],
            rcpt: &["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@example.jp"],
            file: &path,
        },
        &|| ex.logs(),
    );
    let t = relayed(&sink, &d, &|| ex.logs());
    check(
        &t,
        &msg,
        Expect {
            with: "UTF8SMTP",
            // no BODY=8BITMIME: Exim does not pass it on
            mail: &["SMTPUTF8", "RET=HDRS", "ENVID=exim-envid-1"],
            rcpt: &["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@example.jp"],
            sender: UTF8_SENDER,
            rcpts: &[BOB],
        },
    );
}

/// smtplib → OpenSMTPD (BODY=8BITMIME, DSN) → relay host smtp+notls:// mx2.
/// OpenSMTPD 6.8 keeps the DSN parameters but not BODY=.
#[test]
fn opensmtpd_to_mx2_plain_8bit_dsn() {
    let _t = timer("opensmtpd_to_mx2_plain_8bit_dsn");
    let (sink, d) = mx2_to_sink(None);
    let os = OpenSmtpd::start(d.port, false);
    let (path, msg) = eightbit();
    py(
        Py {
            port: os.port,
            starttls: false,
            from: SENDER,
            to: &[BOB],
            mail: &["BODY=8BITMIME", "RET=HDRS", "ENVID=osmtpd-envid-1"],
            rcpt: &["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@example.jp"],
            file: &path,
        },
        &|| os.log(),
    );
    let t = relayed(&sink, &d, &|| os.log());
    check(
        &t,
        &msg,
        Expect {
            with: "ESMTP",
            mail: &["RET=HDRS", "ENVID=osmtpd-envid-1"],
            rcpt: &["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@example.jp"],
            sender: SENDER,
            rcpts: &[BOB],
        },
    );
}

/// OpenSMTPD relaying with mandatory STARTTLS (smtp+tls://, tls no-verify).
/// (OpenSMTPD 6.8 offers no SMTPUTF8, so it has no SMTPUTF8 cell.)
#[test]
fn opensmtpd_to_mx2_starttls() {
    let _t = timer("opensmtpd_to_mx2_starttls");
    let c = cert("mx2.test");
    let (sink, d) = mx2_to_sink(Some(&c));
    let os = OpenSmtpd::start(d.port, true);
    let (path, msg) = eightbit();
    py(
        Py {
            port: os.port,
            starttls: false,
            from: SENDER,
            to: &[BOB],
            mail: &["BODY=8BITMIME"],
            rcpt: &[],
            file: &path,
        },
        &|| os.log(),
    );
    let t = relayed(&sink, &d, &|| os.log());
    check(
        &t,
        &msg,
        Expect {
            with: "ESMTPS",
            mail: &[],
            rcpt: &[],
            sender: SENDER,
            rcpts: &[BOB],
        },
    );
    assert!(
        os.wait_log(" mta tls ciphers=TLSv1.", 10),
        "no TLS in log:\n{}",
        os.log()
    );
}

/// swaks appends CRLF.CRLF after the data as given, so it gets the message
/// without its final CRLF (else the body would grow by an empty line).
fn swaks_data(msg: &[u8]) -> (tempfile::NamedTempFile, String) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, msg.strip_suffix(b"\r\n").unwrap_or(msg)).unwrap();
    let arg = format!("@{}", f.path().display());
    (f, arg)
}

fn swaks(args: &[&str]) -> String {
    let out = run_timeout(Command::new("swaks").args(args), b"", 60);
    let s = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "swaks failed:\n{s}");
    s
}

/// swaks --pipeline, two recipients, 8-bit body (swaks 20201014 has no
/// option for BODY=, SMTPUTF8 or DSN parameters: those cells use smtplib).
#[test]
fn swaks_to_mx2_pipelining_8bit() {
    let _t = timer("swaks_to_mx2_pipelining_8bit");
    let (sink, d) = mx2_to_sink(None);
    let (_, msg) = eightbit();
    let (_f, data) = swaks_data(&msg);
    let server = format!("127.0.0.1:{}", d.port);
    let out = swaks(&[
        "--server",
        &server,
        "--ehlo",
        "swaks.test",
        "--from",
        SENDER,
        "--to",
        "bob@example.jp,carol@example.jp",
        "--pipeline",
        "--data",
        &data,
        "--timeout",
        "20",
    ]);
    assert!(out.contains("<-  250-PIPELINING"), "{out}");
    let t = relayed(&sink, &d, &|| out.clone());
    check(
        &t,
        &msg,
        Expect {
            with: "ESMTP",
            mail: &[],
            rcpt: &[],
            sender: SENDER,
            rcpts: &[BOB, "carol@example.jp"],
        },
    );
}

/// swaks --tls (STARTTLS required) --pipeline.
#[test]
fn swaks_to_mx2_starttls() {
    let _t = timer("swaks_to_mx2_starttls");
    let c = cert("mx2.test");
    let (sink, d) = mx2_to_sink(Some(&c));
    let (_, msg) = eightbit();
    let (_f, data) = swaks_data(&msg);
    let server = format!("127.0.0.1:{}", d.port);
    let out = swaks(&[
        "--server",
        &server,
        "--ehlo",
        "swaks.test",
        "--from",
        SENDER,
        "--to",
        BOB,
        "--tls",
        "--pipeline",
        "--data",
        &data,
        "--timeout",
        "20",
    ]);
    assert!(out.contains("TLS started"), "{out}");
    let t = relayed(&sink, &d, &|| out.clone());
    check(
        &t,
        &msg,
        Expect {
            with: "ESMTPS",
            mail: &[],
            rcpt: &[],
            sender: SENDER,
            rcpts: &[BOB],
        },
    );
}

/// smtplib with SMTPUTF8, BODY=8BITMIME and every DSN parameter.
fn python_cell(starttls: bool) {
    let c = cert("mx2.test");
    let (sink, d) = mx2_to_sink(Some(&c));
    let (path, msg) = eightbit();
    let out = py(
        Py {
            port: d.port,
            starttls,
            from: UTF8_SENDER,
            to: &[BOB],
            mail: &["SMTPUTF8", "BODY=8BITMIME", "RET=FULL", "ENVID=py+2Benvid"],
            rcpt: &["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;bob@example.jp"],
            file: &path,
        },
        &|| d.log(),
    );
    assert_eq!(out.contains("TLS TLSv1."), starttls, "{out}");
    let t = relayed(&sink, &d, &|| out.clone());
    check(
        &t,
        &msg,
        Expect {
            with: if starttls { "UTF8SMTPS" } else { "UTF8SMTP" },
            mail: &["SMTPUTF8", "BODY=8BITMIME", "RET=FULL", "ENVID=py+2Benvid"],
            rcpt: &["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;bob@example.jp"],
            sender: UTF8_SENDER,
            rcpts: &[BOB],
        },
    );
}

#[test]
fn python_to_mx2_smtputf8_dsn() {
    let _t = timer("python_to_mx2_smtputf8_dsn");
    python_cell(false);
}

#[test]
fn python_to_mx2_starttls_smtputf8_dsn() {
    let _t = timer("python_to_mx2_starttls_smtputf8_dsn");
    python_cell(true);
}

// ------------------------------------------------------------- mx2 → primaries

/// Sends every corpus message through mx2 to bob@example.jp (BODY=8BITMIME
/// when it has 8-bit bytes) and compares each delivered file.
fn corpus_through(port: u16, maildir: &Path, primary_mark: &str, logs: &dyn Fn() -> String) {
    let files = corpus::load();
    for (_, msg) in &files {
        let body = if msg.iter().any(|&b| b >= 0x80) {
            " BODY=8BITMIME"
        } else {
            ""
        };
        send_raw(
            port,
            &format!("<{SENDER}>{body}"),
            &["<bob@example.jp>"],
            msg,
        );
    }
    let got = wait_maildir(maildir, files.len(), 60);
    assert_eq!(
        got.len(),
        files.len(),
        "delivered {} of {}\n{}",
        got.len(),
        files.len(),
        logs()
    );
    if let Some(dump) = std::env::var_os("MX2_INTEROP_DUMP") {
        let dir = Path::new(&dump).join(primary_mark.split(' ').nth(1).unwrap_or("primary"));
        std::fs::create_dir_all(&dir).unwrap();
        for (k, m) in got.iter().enumerate() {
            std::fs::write(dir.join(format!("{k:02}.eml")), m).unwrap();
        }
    }
    let mut failures = Vec::new();
    for (name, msg) in &files {
        let id = format!("Message-ID: <corpus-{}.", &name[..2]);
        let Some(m) = got.iter().find(|m| text(m).contains(&id)) else {
            failures.push(format!("{name}: not delivered"));
            continue;
        };
        if let Err(e) =
            corpus::split_delivered(m, primary_mark).and_then(|dl| corpus::compare(msg, &dl.rest))
        {
            failures.push(format!("{name}: {e}\n--- delivered:\n{}", text(m)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Queues the corpus with the primary's route pointing nowhere, then
/// points it at the primary and flushes: the whole backlog leaves at once,
/// several messages per session, each message's content pipelined with the
/// next message's commands. Every message must arrive intact.
fn backlog_through(
    d: &Daemon,
    primary_port: u16,
    maildir: &Path,
    primary_mark: &str,
    logs: &dyn Fn() -> String,
    sessions: &dyn Fn(&str) -> usize,
) {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    std::fs::write(
        d.path("transport.map"),
        format!("example.jp smtp:[127.0.0.1]:{dead_port}\n"),
    )
    .unwrap();
    d.signal("HUP");
    std::thread::sleep(Duration::from_millis(1500));
    let files = corpus::load();
    for round in 0..3 {
        for (name, msg) in &files {
            let msg = text(msg).replace(
                &format!("Message-ID: <corpus-{}.", &name[..2]),
                &format!("Message-ID: <backlog{round}-{}.", &name[..2]),
            );
            let body = if msg.bytes().any(|b| b >= 0x80) {
                " BODY=8BITMIME"
            } else {
                ""
            };
            send_raw(
                d.port,
                &format!("<{SENDER}>{body}"),
                &["<bob@example.jp>"],
                msg.as_bytes(),
            );
        }
    }
    let n = 3 * files.len();
    std::fs::write(
        d.path("transport.map"),
        format!("example.jp smtp:[127.0.0.1]:{primary_port}\n"),
    )
    .unwrap();
    d.signal("HUP");
    std::thread::sleep(Duration::from_millis(1500));
    d.cli(&["queue", "flush"]);
    let got = wait_maildir(maildir, n, 60);
    assert_eq!(got.len(), n, "delivered {} of {n}\n{}", got.len(), logs());
    // Several messages shared a session (so content rode with the next
    // message's commands), as the primary's own log shows.
    let log = logs();
    let used = sessions(&log);
    assert!(
        used > 0 && used < n,
        "{n} messages over {used} sessions\n{log}"
    );
    for round in 0..3 {
        for (name, msg) in &files {
            let id = format!("Message-ID: <backlog{round}-{}.", &name[..2]);
            let Some(m) = got.iter().find(|m| text(m).contains(&id)) else {
                panic!("{id} not delivered\n{}", logs());
            };
            let want = text(msg).replace(&format!("Message-ID: <corpus-{}.", &name[..2]), &id);
            let dl = corpus::split_delivered(m, primary_mark).unwrap();
            if let Err(e) = corpus::compare(want.as_bytes(), &dl.rest) {
                panic!("{id}: {e}");
            }
        }
    }
}

/// A Postfix primary and mx2 in front of it; `*` sends mx2's own DSNs
/// there too (it hosts sender.example, where they land).
fn postfix_primary(tls: bool, relay: &str) -> (Option<Cert>, Postfix, Daemon) {
    let c = tls.then(|| cert("pf-primary.test"));
    let pf = Postfix::start(postfix::Role::Primary, c.as_ref(), "none");
    let map = format!(
        "example.jp smtp:[127.0.0.1]:{p}\n* smtp:[127.0.0.1]:{p}\n",
        p = pf.port
    );
    let d = mx2(&map, relay, None);
    (c, pf, d)
}

#[test]
fn mx2_to_postfix_corpus() {
    let _t = timer("mx2_to_postfix_corpus");
    let (_c, pf, d) = postfix_primary(false, "");
    corpus_through(
        d.port,
        &pf.maildir("bob"),
        "by pf-primary.test (Postfix) with ESMTP id",
        &|| format!("{}\nmx2:\n{}", pf.log(), d.log()),
    );
    assert!(!pf.log().contains("TLS connection established"));
}

/// A backlog of 30 messages drained into Postfix in pipelined sessions.
#[test]
fn mx2_to_postfix_backlog() {
    let _t = timer("mx2_to_postfix_backlog");
    let (_c, pf, d) = postfix_primary(false, "");
    backlog_through(
        &d,
        pf.port,
        &pf.maildir("bob"),
        "by pf-primary.test (Postfix) with ESMTP id",
        &|| format!("{}\nmx2:\n{}", pf.log(), d.log()),
        &|log| {
            log.lines()
                .filter(|l| l.contains("postfix/smtpd[") && l.contains(": connect from"))
                .count()
        },
    );
}

/// Postfix offers STARTTLS, mx2 has `[relay] tls = "required"`.
#[test]
fn mx2_to_postfix_starttls_required_corpus() {
    let _t = timer("mx2_to_postfix_starttls_required_corpus");
    let (_c, pf, d) = postfix_primary(true, "tls = \"required\"\n");
    corpus_through(
        d.port,
        &pf.maildir("bob"),
        "by pf-primary.test (Postfix) with ESMTPS id",
        &|| format!("{}\nmx2:\n{}", pf.log(), d.log()),
    );
    assert!(
        pf.log()
            .contains("Anonymous TLS connection established from unknown[127.0.0.1]"),
        "{}",
        pf.log()
    );
}

#[test]
fn mx2_to_postfix_smtputf8() {
    let _t = timer("mx2_to_postfix_smtputf8");
    let (_c, pf, d) = postfix_primary(false, "");
    let (_, msg) = eightbit();
    send_raw(
        d.port,
        &format!("<{UTF8_SENDER}> SMTPUTF8 BODY=8BITMIME"),
        &[&format!("<{UTF8_RCPT}>")],
        &msg,
    );
    let got = wait_maildir(&pf.maildir("shigeru"), 1, 30);
    assert_eq!(got.len(), 1, "{}\nmx2:\n{}", pf.log(), d.log());
    let dl = corpus::split_delivered(&got[0], "by pf-primary.test (Postfix) with UTF8SMTP id")
        .unwrap_or_else(|e| panic!("{e}\n{}", text(&got[0])));
    corpus::compare(&msg, &dl.rest).unwrap();
    assert!(
        dl.mx2_received.contains("with UTF8SMTP"),
        "{}",
        dl.mx2_received
    );
    let m = text(&got[0]);
    assert!(m.contains(&format!("Delivered-To: {UTF8_RCPT}")), "{m}");
    assert!(m.contains(&format!("Return-Path: <{UTF8_SENDER}>")), "{m}");
}

/// Postfix accepts unknown users and bounces them (virtual(8)): with
/// NOTIFY=NEVER the sender hears nothing; the control (no NOTIFY) bounces.
#[test]
fn mx2_to_postfix_dsn_notify_never() {
    let _t = timer("mx2_to_postfix_dsn_notify_never");
    let (_c, pf, d) = postfix_primary(false, "");
    let (_, msg) = corpus_file("08-no-final-crlf.eml");
    send_raw(
        d.port,
        &format!("<{SENDER}>"),
        &["<nobody1@example.jp> NOTIFY=NEVER"],
        &msg,
    );
    send_raw(
        d.port,
        &format!("<{SENDER}> ENVID=control-1"),
        &["<nobody2@example.jp>"],
        &msg,
    );
    wait_maildir(&pf.maildir("alice"), 1, 30);
    let bounced = |n: &str| {
        pf.log()
            .lines()
            .any(|l| l.contains(&format!("to=<{n}@example.jp>")) && l.contains("status=bounced"))
    };
    assert!(
        support::wait_until(10, || bounced("nobody1") && bounced("nobody2")),
        "Postfix did not bounce both:\n{}",
        pf.log()
    );
    // time for a bounce for nobody1 to show up, if it (wrongly) would
    std::thread::sleep(Duration::from_secs(2));
    let got = support::maildir(&pf.maildir("alice"));
    assert_eq!(
        got.len(),
        1,
        "want exactly the control's bounce\n{}\nmx2:\n{}",
        pf.log(),
        d.log()
    );
    let b = text(&got[0]);
    assert!(dsn_has(&b, "Action", "failed"), "{b}");
    assert!(dsn_has(&b, "Original-Envelope-Id", "control-1"), "{b}");
    assert!(
        b.contains("nobody2@example.jp") && !b.contains("nobody1@example.jp"),
        "{b}"
    );
    // mx2 relayed both: the suppression is Postfix honouring the NOTIFY=NEVER mx2 passed on
    assert_eq!(d.log().matches("status=sent").count(), 2, "{}", d.log());
}

/// NOTIFY=SUCCESS RET=HDRS ENVID ORCPT through mx2: Postfix's success DSN.
#[test]
fn mx2_to_postfix_dsn_notify_success() {
    let _t = timer("mx2_to_postfix_dsn_notify_success");
    let (_c, pf, d) = postfix_primary(false, "");
    let (_, msg) = corpus_file("03-quoted-printable.eml");
    send_raw(
        d.port,
        &format!("<{SENDER}> RET=HDRS ENVID=mx2+2Dinterop-42"),
        &["<bob@example.jp> NOTIFY=SUCCESS ORCPT=rfc822;Bob@Example.JP"],
        &msg,
    );
    assert_eq!(
        wait_maildir(&pf.maildir("bob"), 1, 30).len(),
        1,
        "{}",
        pf.log()
    );
    let got = wait_maildir(&pf.maildir("alice"), 1, 30);
    assert_eq!(
        got.len(),
        1,
        "no success DSN\n{}\nmx2:\n{}",
        pf.log(),
        d.log()
    );
    let dsn = text(&got[0]);
    assert!(dsn.starts_with("Return-Path: <>"), "{dsn}");
    assert!(dsn.contains("report-type=delivery-status"), "{dsn}");
    for (field, value) in [
        ("Original-Envelope-Id", "mx2-interop-42"),
        ("Original-Recipient", "rfc822;Bob@Example.JP"),
        ("Final-Recipient", "rfc822;bob@example.jp"),
        ("Action", "delivered"),
        ("Status", "2.0.0"),
    ] {
        assert!(dsn_has(&dsn, field, value), "no {field}: {value}:\n{dsn}");
    }
    // RET=HDRS: the original headers come back, the body does not
    assert!(dsn.contains("Message-ID: <corpus-03."), "{dsn}");
    assert!(
        !dsn.contains("header_checks =3D pcre"),
        "RET=HDRS but the body came back:\n{dsn}"
    );
}

/// Postfix refuses a recipient at RCPT (550 5.1.1): mx2 bounces it with its
/// own DSN, relayed through the `*` route to Postfix, unless NOTIFY=NEVER.
#[test]
fn mx2_bounce_via_postfix() {
    let _t = timer("mx2_bounce_via_postfix");
    let (_c, pf, d) = postfix_primary(false, "");
    let (_, msg) = corpus_file("04-iso-2022-jp.eml");
    send_raw(
        d.port,
        &format!("<{SENDER}>"),
        &["<rejectme@example.jp> NOTIFY=NEVER"],
        &msg,
    );
    send_raw(
        d.port,
        &format!("<{SENDER}> RET=HDRS ENVID=mx2-bounce-1"),
        &[
            "<rejectme@example.jp> ORCPT=rfc822;rejectme@example.jp",
            "<bob@example.jp>",
        ],
        &msg,
    );
    assert_eq!(
        wait_maildir(&pf.maildir("bob"), 1, 30).len(),
        1,
        "{}",
        pf.log()
    );
    wait_maildir(&pf.maildir("alice"), 1, 30);
    std::thread::sleep(Duration::from_secs(2)); // a second (wrong) DSN, if any
    let got = support::maildir(&pf.maildir("alice"));
    assert_eq!(
        got.len(),
        1,
        "want one DSN from mx2\n{}\nmx2:\n{}",
        pf.log(),
        d.log()
    );
    let dsn = text(&got[0]);
    assert!(dsn.starts_with("Return-Path: <>"), "{dsn}");
    assert!(dsn.contains("MAILER-DAEMON@mx2.test"), "{dsn}");
    assert!(dsn.contains("report-type=delivery-status"), "{dsn}");
    for (field, value) in [
        ("Reporting-MTA", "dns;mx2.test"),
        ("Original-Envelope-Id", "mx2-bounce-1"),
        ("Final-Recipient", "rfc822;rejectme@example.jp"),
        ("Original-Recipient", "rfc822;rejectme@example.jp"),
        ("Action", "failed"),
        ("Status", "5.1.1"),
    ] {
        assert!(dsn_has(&dsn, field, value), "no {field}: {value}:\n{dsn}");
    }
    assert!(dsn.contains("no such user here"), "{dsn}");
    // and Postfix took mx2's null-sender DSN as it takes any bounce
    assert!(pf.log().contains("from=<>"), "{}", pf.log());
}

fn exim_primary(tls: bool, relay: &str) -> (Option<Cert>, Exim, Daemon) {
    exim_primary_with(tls, relay, true, true)
}

fn exim_primary_with(
    tls: bool,
    relay: &str,
    dsn: bool,
    smtputf8: bool,
) -> (Option<Cert>, Exim, Daemon) {
    let c = tls.then(|| cert("exim-primary.test"));
    let ex = Exim::start(exim::Role::Primary { dsn, smtputf8 }, c.as_ref());
    let map = format!(
        "example.jp smtp:[127.0.0.1]:{p}\n* smtp:[127.0.0.1]:{p}\n",
        p = ex.port
    );
    let d = mx2(&map, relay, None);
    (c, ex, d)
}

#[test]
fn mx2_to_exim_corpus() {
    let _t = timer("mx2_to_exim_corpus");
    let (_c, ex, d) = exim_primary(false, "");
    corpus_through(
        d.port,
        &ex.maildir("bob"),
        "by exim-primary.test with esmtp (Exim 4.96)",
        &|| format!("{}\nmx2:\n{}", ex.logs(), d.log()),
    );
}

/// A backlog of 30 messages drained into Exim in pipelined sessions.
#[test]
fn mx2_to_exim_backlog() {
    let _t = timer("mx2_to_exim_backlog");
    let (_c, ex, d) = exim_primary(false, "");
    backlog_through(
        &d,
        ex.port,
        &ex.maildir("bob"),
        "by exim-primary.test with esmtp (Exim 4.96)",
        &|| format!("{}\nmx2:\n{}", ex.logs(), d.log()),
        &|log| {
            // Exim forks per connection; the id's middle part is that pid.
            let pids: std::collections::HashSet<&str> = log
                .lines()
                .filter(|l| l.contains(" <= "))
                .filter_map(|l| l.split_whitespace().nth(2)?.split('-').nth(1))
                .collect();
            pids.len()
        },
    );
}

/// Exim offers STARTTLS (GnuTLS), mx2 has `[relay] tls = "required"`.
#[test]
fn mx2_to_exim_starttls_required_corpus() {
    let _t = timer("mx2_to_exim_starttls_required_corpus");
    let (_c, ex, d) = exim_primary(true, "tls = \"required\"\n");
    corpus_through(
        d.port,
        &ex.maildir("bob"),
        "by exim-primary.test with esmtps ",
        &|| format!("{}\nmx2:\n{}", ex.logs(), d.log()),
    );
    let log = ex.mainlog();
    let recv: Vec<&str> = log.lines().filter(|l| l.contains(" <= ")).collect();
    assert!(
        !recv.is_empty() && recv.iter().all(|l| l.contains(" X=TLS")),
        "{log}"
    );
}

#[test]
fn mx2_to_exim_smtputf8() {
    let _t = timer("mx2_to_exim_smtputf8");
    let (_c, ex, d) = exim_primary(false, "");
    let (_, msg) = eightbit();
    send_raw(
        d.port,
        &format!("<{UTF8_SENDER}> SMTPUTF8 BODY=8BITMIME"),
        &[&format!("<{UTF8_RCPT}>")],
        &msg,
    );
    let got = wait_maildir(&ex.maildir("shigeru"), 1, 30);
    assert_eq!(got.len(), 1, "{}\nmx2:\n{}", ex.logs(), d.log());
    let dl = corpus::split_delivered(&got[0], "by exim-primary.test with utf8esmtp (Exim 4.96)")
        .unwrap_or_else(|e| panic!("{e}\n{}", text(&got[0])));
    corpus::compare(&msg, &dl.rest).unwrap();
    assert!(
        dl.mx2_received.contains("with UTF8SMTP"),
        "{}",
        dl.mx2_received
    );
}

/// Exim: NOTIFY=SUCCESS gives a success DSN, NOTIFY=NEVER suppresses the
/// bounce for an unknown user, the default (control) does not.
#[test]
fn mx2_to_exim_dsn() {
    let _t = timer("mx2_to_exim_dsn");
    let (_c, ex, d) = exim_primary(false, "");
    let (_, msg) = corpus_file("09-leading-dot.eml");
    send_raw(
        d.port,
        &format!("<{SENDER}> RET=HDRS ENVID=exim-success-1"),
        &["<bob@example.jp> NOTIFY=SUCCESS ORCPT=rfc822;bob@example.jp"],
        &msg,
    );
    send_raw(
        d.port,
        &format!("<{SENDER}>"),
        &["<nobody1@example.jp> NOTIFY=NEVER"],
        &msg,
    );
    send_raw(
        d.port,
        &format!("<{SENDER}>"),
        &["<nobody2@example.jp>"],
        &msg,
    );
    assert_eq!(
        wait_maildir(&ex.maildir("bob"), 1, 30).len(),
        1,
        "{}",
        ex.logs()
    );
    wait_maildir(&ex.maildir("alice"), 2, 30);
    assert!(ex.wait_log("nobody1@example.jp", 10), "{}", ex.logs());
    // time for a bounce for nobody1 to show up, if it (wrongly) would
    std::thread::sleep(Duration::from_secs(2));
    let all: Vec<String> = support::maildir(&ex.maildir("alice"))
        .iter()
        .map(|m| text(m))
        .collect();
    assert_eq!(
        all.len(),
        2,
        "want a success DSN and one bounce:\n{}\n{}\nmx2:\n{}",
        all.join("\n----\n"),
        ex.logs(),
        d.log()
    );
    let success = all
        .iter()
        .find(|m| dsn_has(m, "Action", "delivered"))
        .unwrap_or_else(|| panic!("{all:?}"));
    assert!(
        dsn_has(success, "Original-Envelope-Id", "exim-success-1"),
        "{success}"
    );
    assert!(
        dsn_has(success, "Original-Recipient", "rfc822;bob@example.jp"),
        "{success}"
    );
    let bounce = all
        .iter()
        .find(|m| dsn_has(m, "Action", "failed"))
        .unwrap_or_else(|| panic!("{all:?}"));
    assert!(bounce.contains("nobody2@example.jp"), "{bounce}");
    assert!(
        all.iter().all(|m| !m.contains("nobody1@example.jp")),
        "{all:?}"
    );
}

/// A primary without DSN: mx2 passes no NOTIFY/RET/ENVID/ORCPT (the
/// primary would refuse them) and, for NOTIFY=SUCCESS, tells the sender
/// itself with a "relayed" DSN (RFC 3461 §4.2), routed by `*` to Exim.
#[test]
fn mx2_to_exim_without_dsn() {
    let _t = timer("mx2_to_exim_without_dsn");
    let (_c, ex, d) = exim_primary_with(false, "", false, true);
    let (_, msg) = corpus_file("01-multipart-alternative.eml");
    send_raw(
        d.port,
        &format!("<{SENDER}> RET=HDRS ENVID=no-dsn-1 BODY=8BITMIME"),
        &["<bob@example.jp> NOTIFY=SUCCESS ORCPT=rfc822;bob@example.jp"],
        &msg,
    );
    assert_eq!(
        wait_maildir(&ex.maildir("bob"), 1, 30).len(),
        1,
        "{}\nmx2:\n{}",
        ex.logs(),
        d.log()
    );
    let got = wait_maildir(&ex.maildir("alice"), 1, 30);
    assert_eq!(
        got.len(),
        1,
        "no relayed DSN\n{}\nmx2:\n{}",
        ex.logs(),
        d.log()
    );
    let dsn = text(&got[0]);
    assert!(dsn.contains("MAILER-DAEMON@mx2.test"), "{dsn}");
    for (field, value) in [
        ("Reporting-MTA", "dns;mx2.test"),
        ("Original-Envelope-Id", "no-dsn-1"),
        ("Final-Recipient", "rfc822;bob@example.jp"),
        ("Action", "relayed"),
    ] {
        assert!(dsn_has(&dsn, field, value), "no {field}: {value}:\n{dsn}");
    }
    // Exim got the DSN from mx2 with a null sender
    assert!(ex.mainlog().contains(" <= <> "), "{}", ex.logs());
}

/// A primary without SMTPUTF8: mail with a UTF-8 recipient cannot be
/// relayed; mx2 bounces it (5.6.7) to the ASCII sender instead of sending
/// it, and the bounce itself reaches the sender through that primary.
#[test]
fn mx2_to_exim_without_smtputf8() {
    let _t = timer("mx2_to_exim_without_smtputf8");
    let (_c, ex, d) = exim_primary_with(false, "", true, false);
    let (_, msg) = eightbit();
    send_raw(
        d.port,
        &format!("<{SENDER}> SMTPUTF8 BODY=8BITMIME"),
        &[&format!("<{UTF8_RCPT}>")],
        &msg,
    );
    let got = wait_maildir(&ex.maildir("alice"), 1, 30);
    assert_eq!(got.len(), 1, "no bounce\n{}\nmx2:\n{}", ex.logs(), d.log());
    let dsn = text(&got[0]);
    assert!(dsn.contains("MAILER-DAEMON@mx2.test"), "{dsn}");
    assert!(dsn_has(&dsn, "Action", "failed"), "{dsn}");
    assert!(dsn_has(&dsn, "Status", "5.6.7"), "{dsn}");
    assert!(support::maildir(&ex.maildir("shigeru")).is_empty());
    assert!(!ex.mainlog().contains(UTF8_RCPT), "{}", ex.logs());
}
