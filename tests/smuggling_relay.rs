//! SMTP smuggling end to end: every known end-of-data variant, each with a
//! whole second message (its own MAIL, RCPT, DATA) behind it, sent to mx2
//! and relayed to a *lenient* primary, one that ends DATA at any lone dot
//! line whatever its line endings (bare LF, bare CR, NULs around the dot):
//! the vulnerable receiver of the smuggling papers. The primary never
//! receives a second message, nor anything for the smuggled recipient, and
//! what it receives is CRLF-only, NUL-free and dot-stuffed on every line.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_for, Daemon};

/// One transaction as the lenient primary understood it.
#[derive(Debug, Clone, Default)]
struct Txn {
    mail_from: String,
    rcpts: Vec<String>,
    /// The raw bytes between the 354 and the end of data, as sent.
    raw: Vec<u8>,
}

/// Where a lenient receiver would end the data in `buf`: the index just
/// past the first "lone dot line", lines being ended by CRLF, LF or CR and
/// NUL bytes ignored. `None` if there is none yet.
fn lenient_end(buf: &[u8]) -> Option<usize> {
    let is_nl = |b: u8| b == b'\r' || b == b'\n';
    let mut line_start = true;
    let mut i = 0;
    while i < buf.len() {
        let b = buf[i];
        if b == 0 {
            i += 1;
            continue;
        }
        if line_start && b == b'.' {
            // Skip NULs after the dot, then a line ending must follow.
            let mut j = i + 1;
            while j < buf.len() && buf[j] == 0 {
                j += 1;
            }
            if j < buf.len() && is_nl(buf[j]) {
                if buf[j] == b'\r' {
                    if j + 1 >= buf.len() {
                        return None; // wait: CR or CRLF?
                    }
                    if buf[j + 1] == b'\n' {
                        return Some(j + 2);
                    }
                }
                return Some(j + 1);
            }
            if j >= buf.len() {
                return None;
            }
        }
        line_start = is_nl(b);
        i += 1;
    }
    None
}

struct LenientPrimary {
    port: u16,
    txns: Arc<Mutex<Vec<Txn>>>,
}

impl LenientPrimary {
    fn start() -> LenientPrimary {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let txns: Arc<Mutex<Vec<Txn>>> = Arc::default();
        let t = txns.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let t = t.clone();
                std::thread::spawn(move || {
                    let _ = lenient_session(c, &t);
                });
            }
        });
        LenientPrimary { port, txns }
    }

    fn txns(&self) -> Vec<Txn> {
        self.txns.lock().unwrap().clone()
    }
}

fn lenient_session(mut c: TcpStream, txns: &Mutex<Vec<Txn>>) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    c.write_all(b"220 lenient.test ESMTP\r\n")?;
    let mut buf: Vec<u8> = Vec::new();
    let mut txn = Txn::default();
    let mut in_data = false;
    let mut chunk = [0u8; 8192];
    loop {
        // Handle everything complete in the buffer.
        loop {
            if in_data {
                let Some(end) = lenient_end(&buf) else { break };
                txn.raw = buf.drain(..end).collect();
                txns.lock().unwrap().push(std::mem::take(&mut txn));
                in_data = false;
                c.write_all(b"250 2.0.0 Ok: queued\r\n")?;
                continue;
            }
            let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
                break;
            };
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n', '\0'])
                .to_string();
            let up = text.to_ascii_uppercase();
            if up.starts_with("EHLO") {
                c.write_all(
                    b"250-lenient.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
                )?;
            } else if up.starts_with("MAIL FROM:") {
                txn = Txn {
                    mail_from: text[10..].trim().to_string(),
                    ..Txn::default()
                };
                c.write_all(b"250 2.1.0 Ok\r\n")?;
            } else if up.starts_with("RCPT TO:") {
                txn.rcpts.push(text[8..].trim().to_string());
                c.write_all(b"250 2.1.5 Ok\r\n")?;
            } else if up == "DATA" {
                in_data = true;
                c.write_all(b"354 go ahead\r\n")?;
            } else if up == "QUIT" {
                c.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            } else {
                c.write_all(b"250 2.0.0 Ok\r\n")?;
            }
        }
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The end-of-data look-alikes, as named in the smuggling write-ups.
const VARIANTS: &[(&str, &[u8])] = &[
    ("LF.LF", b"\n.\n"),
    ("LF.CRLF", b"\n.\r\n"),
    ("CR.CR", b"\r.\r"),
    ("CRLF.CR", b"\r\n.\r"),
    ("CR.CRLF", b"\r.\r\n"),
    ("CRLF.LF", b"\r\n.\n"),
    ("LF.CR", b"\n.\r"),
    ("CR.LF", b"\r.\n"),
    ("CRLF NUL.CRLF", b"\r\n\x00.\r\n"),
    ("CRLF.NUL CRLF", b"\r\n.\x00\r\n"),
    ("LF NUL.LF", b"\n\x00.\n"),
    ("CRCRLF.CRCRLF", b"\r\r\n.\r\r\n"),
    ("CRLF.CRCRLF", b"\r\n.\r\r\n"),
    ("LFLF.LFLF", b"\n\n.\n\n"),
];

const SMUGGLED: &[u8] = b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.jp>\r\nDATA\r\nFrom: ceo@example.jp\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n.\r\n";

#[test]
fn smuggled_messages_never_reach_a_lenient_primary() {
    let primary = LenientPrimary::start();
    let d = Daemon::start(
        &format!("example.jp smtp:[127.0.0.1]:{}\n", primary.port),
        "",
        "",
    );
    let mut accepted = Vec::new();
    let mut table = Vec::new();
    for (i, (name, variant)) in VARIANTS.iter().enumerate() {
        let mut c = d.client();
        c.cmd("EHLO client.test");
        assert!(c.cmd("MAIL FROM:<alice@sender.example>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<bob@example.jp>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        let mut payload =
            format!("Subject: variant {name}\r\nMessage-ID: <v{i}@client.test>\r\n\r\nfirst body")
                .into_bytes();
        payload.extend_from_slice(variant);
        payload.extend_from_slice(SMUGGLED);
        c.send_raw(&payload);
        let r = c.reply();
        // Exactly one reply for the whole payload, then the session is
        // where the client left it: QUIT is answered next, nothing between.
        let q = c.cmd("QUIT");
        assert!(q.starts_with("221"), "{name}: a second reply came: {q}");
        assert!(
            r.starts_with("250") || r.starts_with("554 5.6.0"),
            "{name}: {r}"
        );
        if r.starts_with("250") {
            accepted.push(i);
        }
        table.push(format!("  {name:<14} {r}"));
    }
    // A message with every dot line the client stuffed correctly.
    let dots = b"Subject: dots\r\nMessage-ID: <dots@client.test>\r\n\r\n.\r\n..\r\n...\r\n. \r\n.\t\r\n.x\r\nmid.dle\r\n.\r\n";
    let r = d
        .client()
        .send_mail("alice@sender.example", &["bob@example.jp"], dots);
    assert!(r.starts_with("250"), "{r}");
    eprintln!("smuggling variants (mx2's reply):\n{}", table.join("\n"));

    let want = accepted.len() + 1;
    assert!(
        wait_for(20, || primary.txns().len() >= want),
        "{:?}\n{}",
        primary.txns(),
        d.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let txns = primary.txns();
    assert_eq!(
        txns.len(),
        want,
        "the lenient primary saw a message more than was sent: {:#?}",
        txns
    );
    for t in &txns {
        assert_eq!(t.rcpts, vec!["<bob@example.jp>".to_string()], "{t:?}");
        assert!(t.mail_from.starts_with("<alice@sender.example>"), "{t:?}");
        let raw = &t.raw;
        assert!(raw.ends_with(b"\r\n.\r\n"), "ends at a real terminator");
        assert!(!raw.contains(&0), "NUL relayed");
        for (k, &b) in raw.iter().enumerate() {
            if b == b'\n' {
                assert!(k > 0 && raw[k - 1] == b'\r', "bare LF relayed: {t:?}");
            }
            if b == b'\r' {
                assert_eq!(raw.get(k + 1), Some(&b'\n'), "bare CR relayed: {t:?}");
            }
        }
        // Every line that starts with a dot is stuffed, except the end.
        let body = &raw[..raw.len() - 3];
        for line in body.split(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                assert!(line.starts_with(b".."), "unstuffed dot line in {t:?}");
            }
        }
    }
    // The smuggled text arrived as what it was: body text of the first
    // message, its dot line stuffed.
    for &i in &accepted {
        let id = format!("Message-ID: <v{i}@client.test>");
        let t = txns
            .iter()
            .find(|t| String::from_utf8_lossy(&t.raw).contains(&id))
            .unwrap_or_else(|| panic!("variant {} not relayed", VARIANTS[i].0));
        let text = String::from_utf8_lossy(&t.raw);
        assert!(
            text.contains(
                "\r\nMAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.jp>\r\n"
            ),
            "{}: {text:?}",
            VARIANTS[i].0
        );
        assert!(text.contains("\r\nsmuggled body\r\n"), "{text:?}");
        assert!(
            text.contains("\r\n..\r\n"),
            "{}: the smuggled dot line must arrive stuffed: {text:?}",
            VARIANTS[i].0
        );
    }
    let dots_txn = txns
        .iter()
        .find(|t| String::from_utf8_lossy(&t.raw).contains("<dots@client.test>"))
        .expect("dots message relayed");
    let text = String::from_utf8_lossy(&dots_txn.raw);
    assert!(
        text.ends_with("\r\n\r\n..\r\n...\r\n....\r\n.. \r\n..\t\r\n..x\r\nmid.dle\r\n..\r\n.\r\n"),
        "{text:?}"
    );
    assert!(wait_for(10, || d
        .db()
        .query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0))
        .unwrap()
        == 0));
}

#[test]
fn lenient_end_finds_every_variant() {
    // The primary above really is lenient: each variant ends its data.
    for (name, v) in VARIANTS {
        let mut buf = b"x".to_vec();
        buf.extend_from_slice(v);
        buf.extend_from_slice(b"MAIL FROM:<e@x>\r\n");
        assert!(lenient_end(&buf).is_some(), "{name}");
    }
    assert_eq!(lenient_end(b"a\r\n..\r\n"), None);
    assert_eq!(lenient_end(b".\r\n"), Some(3));
}
