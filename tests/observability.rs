//! `/metrics` and JSON logs, checked against what was actually sent.

mod common;

use std::io::{Read, Write};

use common::{free_port, Daemon, OPERATOR_RULES};

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
    out
}

fn value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
}

#[test]
fn metrics_and_json_logs() {
    let mport = free_port();
    let rules = format!(
        "{OPERATOR_RULES}/^Subject: refuse/ REJECT no thanks\n/^Subject: park/ HOLD look\n"
    );
    let d = Daemon::start(
        "example.jp smtp:[127.0.0.1]:9\n",
        &rules,
        &format!("[log]\nformat = \"json\"\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n"),
    );
    let mut c = d.client();
    let mut sent = 0;
    for subj in ["one", "two", "three"] {
        c.cmd("RSET");
        assert!(c
            .send_mail(
                "a@sender.example",
                &["bob@example.jp"],
                format!("Subject: {subj}\r\n\r\nx\r\n").as_bytes()
            )
            .starts_with("250"));
        sent += 1;
    }
    c.cmd("RSET");
    assert!(c
        .send_mail(
            "a@sender.example",
            &["bob@example.jp"],
            b"Subject: spam\r\nX-Spam-Flag: YES\r\n\r\nx\r\n"
        )
        .starts_with("250"));
    c.cmd("RSET");
    assert!(c
        .send_mail(
            "a@sender.example",
            &["bob@example.jp"],
            b"Subject: refuse\r\n\r\nx\r\n"
        )
        .starts_with("550"));
    c.cmd("RSET");
    assert!(c
        .send_mail(
            "a@sender.example",
            &["bob@example.jp"],
            b"Subject: park\r\n\r\nx\r\n"
        )
        .starts_with("250"));

    let m = scrape(mport);
    assert_eq!(value(&m, "mx2_messages_accepted_total"), (sent + 1) as f64);
    assert_eq!(value(&m, "mx2_messages_discarded_total"), 1.0);
    assert_eq!(value(&m, "mx2_messages_rejected_total"), 1.0);
    assert_eq!(value(&m, "mx2_messages_held_total"), 1.0);
    assert_eq!(
        value(&m, "mx2_connections"),
        1.0,
        "our client is still connected"
    );
    assert_eq!(value(&m, "mx2_queue_messages{state=\"held\"}"), 1.0);
    let queued: f64 = ["queued", "active", "deferred"]
        .iter()
        .map(|s| value(&m, &format!("mx2_queue_messages{{state=\"{s}\"}}")))
        .sum();
    assert_eq!(queued, sent as f64);
    assert!(m.contains("# TYPE mx2_delivery_seconds histogram"), "{m}");

    // Every log line is one JSON object; accept lines carry fields.
    let log = d.log();
    let mut accepts = 0;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(),
            "{line}"
        );
        if v.get("size").is_some() {
            accepts += 1;
            assert_eq!(v["from"], "<a@sender.example>");
            assert_eq!(v["queue_id"].as_str().unwrap().len(), 12);
            assert_eq!(v["client"], "unknown[127.0.0.1]");
        }
    }
    assert_eq!(accepts, sent + 1, "{log}");
}
