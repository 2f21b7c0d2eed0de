//! Real clients against `mx2 serve`: Python's smtplib (with STARTTLS) and
//! swaks; and STARTTLS injection.

mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::Daemon;

const MAP: &str = "example.jp smtp:[127.0.0.1]:9\n";

fn tls_daemon() -> Daemon {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = common::make_cert(tmp.path(), "mx2.test");
    let d = Daemon::start(
        MAP,
        common::OPERATOR_RULES,
        &format!("[smtp]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n"),
    );
    std::mem::forget(tmp); // the daemon reads the files again on SIGHUP
    d
}

#[test]
fn python_smtplib_with_starttls() {
    let d = tls_daemon();
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {port}, timeout=20)
s.ehlo("py.test")
assert s.has_extn("starttls"), s.esmtp_features
s.starttls(context=ctx)
s.ehlo("py.test")
assert not s.has_extn("starttls")
msg = b"From: a@sender.example\r\nSubject: tls\r\nX-Spam-Level: ***\r\n\r\nhello over tls\r\n"
refused = s.sendmail("a@sender.example", ["bob@example.jp"], msg)
assert refused == {{}}, refused
s.quit()
print("ok")
"#,
        port = d.port
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = d.stored();
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(text.contains("with ESMTPS id"), "{text}");
    assert!(!text.contains("X-Spam-Level"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello over tls\r\n"), "{text}");
}

#[test]
fn starttls_injection_is_discarded() {
    let d = tls_daemon();
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = raw.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"220"));
    raw.write_all(b"EHLO x.test\r\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _ = raw.read(&mut buf).unwrap();
    // STARTTLS with a plaintext command glued behind it.
    raw.write_all(b"STARTTLS\r\nRSET\r\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let n = raw.read(&mut buf).unwrap();
    let got = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(
        got, "220 2.0.0 Ready to start TLS\r\n",
        "the injected RSET must not be answered"
    );
    assert!(
        d.log()
            .contains("discarded 6 bytes pipelined after STARTTLS"),
        "{}",
        d.log()
    );
}

#[test]
fn swaks_pipelining_8bit() {
    if Command::new("swaks").arg("--version").output().is_err() {
        panic!("swaks is required (apt-get install swaks; .ci/run installs it)");
    }
    let d = tls_daemon();
    let body = "Subject: =?UTF-8?B?5pel5pys6Kqe?=\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\n日本語の本文\n";
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &d.port.to_string()])
        .args([
            "--from",
            "a@sender.example",
            "--to",
            "bob@example.jp",
            "--pipeline",
            "--tls",
        ])
        .args(["--data", body, "--ehlo", "swaks.test", "--timeout", "20"])
        .output()
        .expect("swaks");
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{so}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = d.stored();
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(text.contains("日本語の本文\r\n"), "{text}");
}
