//! Content scanning against the real scanners (SPEC §1, §3 `[scan]`):
//! spamd and clamd spoken directly, and spamass-milter + clamav-milter
//! behind mx2's milter client, with the operator's exact header_checks
//! file. Needs the Debian packages named in `scan_support::PACKAGES`; a
//! scanner that cannot be started fails the test, it is never skipped.
//!
//! Also: scanner failures (`on_scanner_error`), timeouts, `max_scan_size`,
//! and a scripted milter that exercises every modification mx2 honours.

mod common;
mod scan_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_for, Daemon, OPERATOR_RULES};

const MAP: &str = "example.jp smtp:[127.0.0.1]:9\nexample.net smtp:[127.0.0.1]:9\n";

fn ham() -> Vec<u8> {
    b"From: Alice Example <alice@sender.example>\r\n\
To: Bob Example <bob@example.jp>\r\n\
Subject: Lunch on Friday\r\n\
Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <20261127100000.4711@sender.example>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
X-Keep-Me: yes\r\n\
\r\n\
Hi Bob,\r\n\
\r\n\
shall we meet for lunch on Friday at the usual place, around noon?\r\n\
I will bring the notes from the planning meeting.\r\n\
X-Spam-Status: No, this line is body text and stays\r\n\
.a line starting with a dot\r\n\
\r\n\
Alice\r\n"
        .to_vec()
}

fn gtube() -> Vec<u8> {
    b"From: Spammer <spam@sender.example>\r\n\
To: bob@example.jp\r\n\
Subject: Cheap stuff\r\n\
Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <gtube.4711@sender.example>\r\n\
\r\n\
XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
        .to_vec()
}

/// EICAR as a base64 attachment.
fn eicar() -> Vec<u8> {
    // base64 of the 68-byte EICAR test file.
    b"From: Mallory <mallory@sender.example>\r\n\
To: bob@example.jp\r\n\
Subject: invoice\r\n\
Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <eicar.4711@sender.example>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain\r\n\
\r\n\
see attachment\r\n\
--b1\r\n\
Content-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"eicar.com\"\r\n\
\r\n\
WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNU\r\n\
LUZJTEUhJEgrSCo=\r\n\
--b1--\r\n"
        .to_vec()
}

/// The stored message minus mx2's own `Received:` field (the first one,
/// with its continuation lines).
fn without_received(m: &[u8]) -> &[u8] {
    assert!(
        m.starts_with(b"Received: from "),
        "{}",
        String::from_utf8_lossy(m)
    );
    let mut pos = 0;
    loop {
        pos += m[pos..].iter().position(|&b| b == b'\n').expect("line end") + 1;
        if !matches!(m.get(pos), Some(b' ' | b'\t')) {
            return &m[pos..];
        }
    }
}

/// Header names (lower-case) of a message's top-level header block.
fn header_names(m: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(m);
    let mut names = Vec::new();
    for line in text.split("\r\n") {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((n, _)) = line.split_once(':') {
            names.push(n.to_ascii_lowercase());
        }
    }
    names
}

fn queue_id(reply: &str) -> String {
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    reply.rsplit(' ').next().unwrap_or("").to_string()
}

fn wait_log(d: &Daemon, needle: &str) -> String {
    wait_for(10, || d.log().contains(needle));
    let log = d.log();
    assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    log
}

/// The headline story: ham arrives clean and byte-identical, GTUBE and
/// EICAR are discarded (250, nothing queued, the log says why).
fn headline(d: &Daemon, via_milters: bool) {
    let mut c = d.client();
    let t0 = Instant::now();
    let r = c.send_mail("alice@sender.example", &["bob@example.jp"], &ham());
    let ham_id = queue_id(&r);
    eprintln!("ham scanned and queued in {:?}", t0.elapsed());
    let stored = d.stored();
    assert_eq!(stored.len(), 1, "ham queued");
    let names = header_names(&stored[0]);
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("x-spam-") || n.starts_with("x-virus-")),
        "scanner headers left in the queued message: {names:?}\n{}",
        String::from_utf8_lossy(&stored[0])
    );
    assert_eq!(
        String::from_utf8_lossy(without_received(&stored[0])),
        String::from_utf8_lossy(&ham()),
        "ham must be byte-identical except for mx2's Received line"
    );
    let log = d.log();
    if via_milters {
        assert!(log.contains(&format!("{ham_id}: milter unix:")), "{log}");
    } else {
        assert!(log.contains(&format!("{ham_id}: spamd: score=")), "{log}");
        assert!(log.contains("spam=no"), "{log}");
        assert!(log.contains(&format!("{ham_id}: clamd: clean")), "{log}");
    }
    // Every scanner header was there and the rules removed it.
    assert!(
        log.contains(&format!("{ham_id}: ignore: header X-Spam-Status: No")),
        "{log}"
    );
    assert!(
        log.contains(&format!("{ham_id}: ignore: header X-Virus-Status: Clean")),
        "{log}"
    );

    c.cmd("RSET");
    let r = c.send_mail("spam@sender.example", &["bob@example.jp"], &gtube());
    let spam_id = queue_id(&r);
    let log = wait_log(d, &format!("{spam_id}: discard: header X-Spam-Flag: YES"));
    if !via_milters {
        assert!(log.contains(&format!("{spam_id}: spamd: score=")), "{log}");
        assert!(log.contains("spam=yes"), "{log}");
    }

    c.cmd("RSET");
    let r = c.send_mail("mallory@sender.example", &["bob@example.jp"], &eicar());
    let virus_id = queue_id(&r);
    if via_milters {
        // clamav-milter (OnInfected Blackhole) tells mx2 to discard.
        let log = wait_log(
            d,
            &format!("{virus_id}: discard: from=<mallory@sender.example>"),
        );
        assert!(log.contains("clamav-milter.sock: discard"), "{log}");
    } else {
        let log = wait_log(
            d,
            &format!("{virus_id}: discard: header X-Virus-Status: Yes"),
        );
        assert!(
            log.contains(&format!(
                "{virus_id}: clamd: FOUND Eicar-Test-Signature.UNOFFICIAL"
            )),
            "{log}"
        );
    }
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye");
    assert_eq!(d.stored().len(), 1, "spam and virus must not be queued");
}

#[test]
fn operator_rules_after_spamd_and_clamd() {
    let peers = scan_support::peers();
    let scan = format!(
        "[scan]\nspamd = \"127.0.0.1:{}\"\nclamd = \"unix:{}\"\ntimeout = \"60s\"\non_scanner_error = \"tempfail\"\n",
        peers.spamd.port,
        peers.clamd.socket.display()
    );
    let d = Daemon::start(MAP, OPERATOR_RULES, &scan);
    headline(&d, false);
}

#[test]
fn operator_rules_after_spamass_milter_and_clamav_milter() {
    let peers = scan_support::peers();
    let dir = tempfile::tempdir().expect("tempdir");
    let clamav = scan_support::ClamavMilter::start(dir.path(), &peers.clamd.socket);
    let spamass = scan_support::SpamassMilter::start(dir.path(), peers.spamd.port);
    // The operator's milter-manager order: clamav-milter, then spamass-milter.
    let scan = format!(
        "[scan]\nmilters = [\"unix:{}\", \"unix:{}\"]\ntimeout = \"60s\"\non_scanner_error = \"tempfail\"\n",
        clamav.socket.display(),
        spamass.socket.display()
    );
    let d = Daemon::start(MAP, OPERATOR_RULES, &scan);
    headline(&d, true);
    drop((spamass, clamav));
}

/// A socket path where nothing listens.
fn dead_socket(dir: &Path) -> String {
    format!("unix:{}", dir.join("nobody-home.sock").display())
}

#[test]
fn dead_scanner_accept_passes_unscanned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = dead_socket(dir.path());
    let d = Daemon::start(
        MAP,
        OPERATOR_RULES,
        &format!(
            "[scan]\nspamd = \"{dead}\"\nclamd = \"{dead}\"\nmilters = [\"{dead}\"]\non_scanner_error = \"accept\"\n"
        ),
    );
    let mut c = d.client();
    let id = queue_id(&c.send_mail("alice@sender.example", &["bob@example.jp"], &ham()));
    let stored = d.stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(without_received(&stored[0]), &ham()[..]);
    let log = d.log();
    for who in ["spamd", "clamd", "milter"] {
        assert!(
            log.contains(&format!("{id}: {who} {dead}: error: "))
                && log.contains("passed unscanned (on_scanner_error = accept)"),
            "{who}: {log}"
        );
    }
}

#[test]
fn dead_or_silent_scanner_tempfail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = dead_socket(dir.path());
    // A milter that accepts the connection and never says a word.
    let silent = UnixListener::bind(dir.path().join("silent.sock")).expect("bind");
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in silent.incoming().flatten() {
            h.lock().unwrap_or_else(|e| e.into_inner()).push(s);
        }
    });
    for (scanner, what) in [
        (format!("spamd = \"{dead}\""), "spamd"),
        (format!("milters = [\"{dead}\"]"), "milter"),
        (
            format!(
                "milters = [\"unix:{}\"]",
                dir.path().join("silent.sock").display()
            ),
            "milter",
        ),
    ] {
        let d = Daemon::start(
            MAP,
            OPERATOR_RULES,
            &format!("[scan]\n{scanner}\ntimeout = \"1s\"\non_scanner_error = \"tempfail\"\n"),
        );
        let mut c = d.client();
        let t0 = Instant::now();
        let r = c.send_mail("alice@sender.example", &["bob@example.jp"], &ham());
        assert_eq!(
            r, "451 4.7.1 Service unavailable - try again later",
            "{scanner}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{scanner}: {:?}",
            t0.elapsed()
        );
        assert!(d.stored().is_empty(), "{scanner}");
        let log = d.log();
        assert!(
            log.contains(&format!(": {what} ")) && log.contains("(on_scanner_error = tempfail)"),
            "{scanner}: {log}"
        );
        // The session goes on: the client may retry at once.
        assert!(c.cmd("RSET").starts_with("250"));
    }
}

/// A clamd stand-in with a `StreamMaxLength` of `limit` bytes: answers
/// `stream: OK` or, past the limit, what clamd answers. Serves `conns`
/// connections, then stops.
fn fake_clamd(dir: &Path, limit: usize, conns: usize) -> String {
    let path = dir.join("clamd.sock");
    let l = UnixListener::bind(&path).expect("bind fake clamd");
    std::thread::spawn(move || {
        for s in l.incoming().take(conns) {
            let Ok(mut s) = s else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut cmd = [0u8; 10];
            if s.read_exact(&mut cmd).is_err() || &cmd != b"zINSTREAM\0" {
                continue;
            }
            let mut total = 0usize;
            let answer: &[u8] = loop {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).is_err() {
                    break b"";
                }
                let n = u32::from_be_bytes(len) as usize;
                if n == 0 {
                    break b"stream: OK\0";
                }
                total += n;
                if total > limit {
                    break b"INSTREAM size limit exceeded. ERROR\0";
                }
                let mut chunk = vec![0u8; n];
                if s.read_exact(&mut chunk).is_err() {
                    break b"";
                }
            };
            let _ = s.write_all(answer);
        }
    });
    format!("unix:{}", path.display())
}

/// A message of about `n` bytes.
fn sized(n: usize) -> Vec<u8> {
    let mut m = b"Subject: size\r\n\r\n".to_vec();
    while m.len() < n {
        m.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    m
}

/// spamd (and milters) skip messages over `max_scan_size`, with a log
/// line; smaller ones are still scanned.
#[test]
fn messages_over_max_scan_size_skip_spamd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = dead_socket(dir.path());
    let d = Daemon::start(
        MAP,
        OPERATOR_RULES,
        &format!(
            "[scan]\nspamd = \"{dead}\"\nmilters = [\"{dead}\"]\non_scanner_error = \"tempfail\"\nmax_scan_size = \"200\"\n"
        ),
    );
    let mut c = d.client();
    let id = queue_id(&c.send_mail("alice@sender.example", &["bob@example.jp"], &ham()));
    assert_eq!(d.stored().len(), 1);
    wait_log(&d, &format!("{id}: spamd: skipped: size "));
    wait_log(&d, &format!("{id}: milters: skipped: size "));
    // A small one is scanned (and the dead scanner tempfails it).
    c.cmd("RSET");
    let r = c.send_mail(
        "a@sender.example",
        &["bob@example.jp"],
        b"Subject: s\r\n\r\nx\r\n",
    );
    assert!(r.starts_with("451 4.7.1"), "{r}");
}

/// Regression (issue 16): messages over `max_scan_size` (10 MB by
/// default) skipped clamd entirely. Now clamd scans every message and its
/// own StreamMaxLength is the limit: past it, the message goes on
/// unscanned (even with `on_scanner_error = "tempfail"`: a retry cannot
/// make it fit) and the log names the setting to raise.
#[test]
fn clamd_scans_past_max_scan_size_and_names_the_limit_to_raise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clamd = fake_clamd(dir.path(), 4000, 4);
    let d = Daemon::start(
        MAP,
        "",
        &format!(
            "[scan]\nclamd = \"{clamd}\"\non_scanner_error = \"tempfail\"\nmax_scan_size = \"200\"\n"
        ),
    );
    let mut c = d.client();
    // Over max_scan_size, under clamd's limit: scanned.
    let id = queue_id(&c.send_mail("a@sender.example", &["bob@example.jp"], &sized(1000)));
    wait_log(&d, &format!("{id}: clamd: clean"));
    let stored = d.stored();
    assert_eq!(stored.len(), 1);
    assert!(
        String::from_utf8_lossy(&stored[0]).contains("X-Virus-Status: Clean\r\n"),
        "{}",
        String::from_utf8_lossy(&stored[0])
    );
    // Over clamd's StreamMaxLength: passed on, unscanned, and said so.
    c.cmd("RSET");
    let id = queue_id(&c.send_mail("a@sender.example", &["bob@example.jp"], &sized(9000)));
    let log = wait_log(&d, &format!("{id}: clamd: not scanned: size "));
    assert!(
        log.contains("exceeds clamd's StreamMaxLength; raise StreamMaxLength in clamd.conf"),
        "{log}"
    );
    let stored = d.stored();
    assert_eq!(stored.len(), 2);
    assert!(!String::from_utf8_lossy(&stored[1]).contains("X-Virus-"));
}

fn packet(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    p.push(cmd);
    p.extend_from_slice(data);
    p
}

fn read_packet(s: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    let cmd = buf.remove(0);
    Some((cmd, buf))
}

fn cstr(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p);
        v.push(0);
    }
    v
}

/// What the scripted milter saw of one message.
#[derive(Default, Debug, Clone)]
struct Seen {
    commands: String,
    macros: Vec<String>,
    mail: Vec<String>,
    rcpts: Vec<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

const NOHELO: u32 = 0x02;
const NR_HDR: u32 = 0x80;
const NODATA: u32 = 0x200;

/// Serves one milter connection: asks to skip HELO and DATA and not to
/// answer headers; what the `first` milter of the chain does at RCPT and
/// end of message depends on the sender's local part; the second one only
/// looks and adds `X-Second`.
fn scripted_milter(mut s: impl Read + Write, first: bool, log: Arc<Mutex<Vec<Seen>>>) {
    let mut seen = Seen::default();
    let mut script = String::new();
    while let Some((cmd, data)) = read_packet(&mut s) {
        seen.commands.push(cmd as char);
        let strings: Vec<String> = data
            .split(|&b| b == 0)
            .map(|x| String::from_utf8_lossy(x).into_owned())
            .collect();
        let reply: Vec<Vec<u8>> = match cmd {
            b'O' => {
                let mut d = Vec::new();
                for w in [6u32, 0x1ff, NOHELO | NR_HDR | NODATA] {
                    d.extend_from_slice(&w.to_be_bytes());
                }
                vec![packet(b'O', &d)]
            }
            b'D' => {
                seen.macros
                    .push(String::from_utf8_lossy(&data).replace('\0', " "));
                vec![]
            }
            b'C' => vec![packet(b'c', b"")],
            b'M' => {
                seen.mail = strings.into_iter().filter(|x| !x.is_empty()).collect();
                script = seen.mail[0].clone();
                vec![packet(b'c', b"")]
            }
            b'R' => {
                seen.rcpts.push(strings[0].clone());
                if first && script.starts_with("<reject@") {
                    vec![packet(
                        b'y',
                        b"550 5.7.1 <bob@example.jp>: scripted milter says no\0",
                    )]
                } else {
                    vec![packet(b'c', b"")]
                }
            }
            b'L' => {
                seen.headers.push((strings[0].clone(), strings[1].clone()));
                vec![]
            }
            b'N' => vec![packet(b'c', b"")],
            b'B' => {
                seen.body.extend_from_slice(&data);
                vec![packet(b'c', b"")]
            }
            b'E' if !first => vec![
                packet(b'h', &cstr(&[b"X-Second", b"saw it"])),
                packet(b'a', b""),
            ],
            b'E' => {
                if script.starts_with("<tempfail@") {
                    vec![packet(b'p', b""), packet(b't', b"")]
                } else {
                    let idx = |i: u32, rest: &[&[u8]]| {
                        let mut d = i.to_be_bytes().to_vec();
                        d.extend_from_slice(&cstr(rest));
                        d
                    };
                    vec![
                        packet(b'p', b""),
                        packet(b'h', &cstr(&[b"X-Added", b"at the end"])),
                        packet(b'i', &idx(1, &[b"X-Inserted", b"below Received"])),
                        packet(b'm', &idx(1, &[b"Subject", b"changed by milter"])),
                        packet(b'm', &idx(1, &[b"X-Remove-Me", b""])),
                        packet(b'h', &cstr(&[b"X-Folded", b"line one\n\tline two"])),
                        packet(b'+', &cstr(&[b"<carol@example.net>"])),
                        packet(b'-', &cstr(&[b"<bob@example.jp>"])),
                        packet(b'b', b"replaced body\n"),
                        packet(b'b', b".second chunk\n"),
                        packet(b'q', &cstr(&[b"scripted milter wants a look"])),
                        packet(b'c', b""),
                    ]
                }
            }
            b'Q' => break,
            b'A' => vec![],
            _ => vec![packet(b'c', b"")],
        };
        for p in reply {
            if s.write_all(&p).is_err() {
                break;
            }
        }
    }
    if !first {
        seen.commands.insert(0, '2');
    }
    log.lock().unwrap_or_else(|e| e.into_inner()).push(seen);
}

#[test]
fn milter_modifications_and_verdicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("scripted.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let l = s2.clone();
            std::thread::spawn(move || scripted_milter(s, true, l));
        }
    });
    // The second milter of the chain listens on TCP (Postfix's inet: syntax).
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let tcp_port = tcp.local_addr().expect("addr").port();
    let s3 = seen.clone();
    std::thread::spawn(move || {
        for s in tcp.incoming().flatten() {
            let l = s3.clone();
            std::thread::spawn(move || scripted_milter(s, false, l));
        }
    });
    let d = Daemon::start(
        MAP,
        OPERATOR_RULES,
        &format!(
            "[scan]\nmilters = [\"unix:{}\", \"inet:{tcp_port}@127.0.0.1\"]\ntimeout = \"10s\"\non_scanner_error = \"tempfail\"\n",
            sock.display()
        ),
    );
    let mut c = d.client();
    let msg = b"Subject: original\r\nX-Remove-Me: please\r\nTo: bob@example.jp\r\n\r\nold body\r\n";
    let id = queue_id(&c.send_mail("edit@sender.example", &["bob@example.jp"], msg));

    let stored = d.stored();
    assert_eq!(stored.len(), 1);
    let m = &stored[0];
    let rest = without_received(m);
    assert_eq!(
        String::from_utf8_lossy(rest),
        "X-Inserted: below Received\r\n\
Subject: changed by milter\r\n\
To: bob@example.jp\r\n\
X-Added: at the end\r\n\
X-Folded: line one\r\n\tline two\r\n\
X-Second: saw it\r\n\
\r\n\
replaced body\r\n\
.second chunk\r\n"
    );
    let db = d.db();
    let rcpts: Vec<String> = db
        .prepare("SELECT address FROM recipients ORDER BY idx")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rcpts, ["carol@example.net"]);
    let (held, reason): (i64, String) = db
        .query_row("SELECT held, hold_reason FROM messages", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(held, 1);
    assert!(reason.contains("scripted milter wants a look"), "{reason}");
    let log = d.log();
    assert!(log.contains(&format!("{id}: milter unix:")), "{log}");
    assert!(log.contains("replace body"), "{log}");

    // What the milter was shown: no HELO, no DATA (it asked), the
    // envelope, every header with mx2's Received first, the body in CRLF.
    wait_for(5, || {
        seen.lock().unwrap_or_else(|e| e.into_inner()).len() >= 2
    });
    let all = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let first = all
        .iter()
        .find(|s| !s.commands.starts_with('2'))
        .expect("first milter")
        .clone();
    let second = all
        .iter()
        .find(|s| s.commands.starts_with('2'))
        .expect("second milter")
        .clone();
    assert!(
        !first.commands.contains('H') && !first.commands.contains('T'),
        "{first:?}"
    );
    assert!(first.commands.starts_with("ODCDM"), "{first:?}");
    assert_eq!(first.mail, ["<edit@sender.example>"]);
    assert_eq!(first.rcpts, ["<bob@example.jp>"]);
    assert_eq!(first.headers[0].0, "Received");
    assert!(
        first.headers[0].1.starts_with("from client.test"),
        "{first:?}"
    );
    assert!(
        first.headers[0].1.contains("\n\t"),
        "folded lines joined by \\n: {first:?}"
    );
    assert_eq!(first.headers[1], ("Subject".into(), "original".into()));
    assert_eq!(first.body, b"old body\r\n");
    assert!(
        first.macros.iter().any(|m| m.contains(&format!("i {id}"))),
        "{first:?}"
    );
    assert!(
        first
            .macros
            .iter()
            .any(|m| m.starts_with("C") && m.contains("j mx2.test")),
        "{first:?}"
    );

    // The second milter saw the first one's result: envelope, headers, body.
    assert_eq!(second.rcpts, ["<carol@example.net>"]);
    assert!(
        second
            .headers
            .contains(&("X-Inserted".into(), "below Received".into())),
        "{second:?}"
    );
    assert!(
        second
            .headers
            .contains(&("Subject".into(), "changed by milter".into())),
        "{second:?}"
    );
    assert!(
        !second.headers.iter().any(|h| h.0 == "X-Remove-Me"),
        "{second:?}"
    );
    assert_eq!(second.body, b"replaced body\r\n.second chunk\r\n");

    // A refusal at RCPT refuses the message with the milter's own reply.
    c.cmd("RSET");
    let r = c.send_mail(
        "reject@sender.example",
        &["bob@example.jp"],
        b"Subject: s\r\n\r\nx\r\n",
    );
    assert_eq!(r, "550 5.7.1 <bob@example.jp>: scripted milter says no");
    // A bare tempfail (after a progress report) gives Postfix's text.
    c.cmd("RSET");
    let r = c.send_mail(
        "tempfail@sender.example",
        &["bob@example.jp"],
        b"Subject: s\r\n\r\nx\r\n",
    );
    assert_eq!(r, "451 4.7.1 Service unavailable - try again later");
    assert_eq!(d.stored().len(), 1);
}
