//! Recipient validation against a real primary (the in-test sink): the
//! static list, callouts, the cache across restarts and while the primary
//! is down, and `mx2 recipients check`.

mod common;

use common::sink::Sink;
use common::Daemon;

fn rcpt(d: &Daemon, addr: &str) -> String {
    let mut c = d.client();
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<sender@sender.example>");
    c.cmd(&format!("RCPT TO:<{addr}>"))
}

#[test]
fn static_list_rejects_unknown_users_of_listed_domains() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("relay_recipients");
    // Plain lines and Postfix relay_recipient_maps lines side by side.
    std::fs::write(
        &list,
        "# valid\nalice@example.jp\nbob@example.jp   OK\n@catchall.example\n",
    )
    .unwrap();
    let d = Daemon::start_with(
        "example.jp smtp:[127.0.0.1]:9\nexample.net smtp:[127.0.0.1]:9\ncatchall.example smtp:[127.0.0.1]:9\n",
        "",
        "",
        &format!("relay_recipients = \"{}\"\n", list.display()),
    );
    assert!(rcpt(&d, "alice@example.jp").starts_with("250"));
    assert!(rcpt(&d, "BOB@Example.JP").starts_with("250"));
    let r = rcpt(&d, "mallory@example.jp");
    assert!(r.starts_with("550 5.1.1 <mallory@example.jp>"), "{r}");
    assert!(
        rcpt(&d, "anyone@example.net").starts_with("250"),
        "no entries for the domain: accepted"
    );
    assert!(rcpt(&d, "anyone@catchall.example").starts_with("250"));
    assert!(d.log().contains("not in static list"), "{}", d.log());

    let (code, out, _) = d.cli(&["recipients", "check", "mallory@example.jp"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("reject") && out.contains("not in static list"),
        "{out}"
    );
    let (code, out, _) = d.cli(&["recipients", "check", "alice@example.jp"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("accept (static list") && out.contains(":2)"),
        "{out}"
    );

    // Reloaded without restart.
    std::fs::write(
        &list,
        "alice@example.jp\nbob@example.jp\nmallory@example.jp\n",
    )
    .unwrap();
    assert!(common::wait_for(5, || rcpt(&d, "mallory@example.jp").starts_with("250")));
}

#[test]
fn callout_cache_survives_restart_and_serves_while_primary_is_down() {
    let sink = Sink::start();
    sink.set_rcpt_reply("mallory@example.jp", Some("550 5.1.1 User unknown"));
    let map = format!("example.jp smtp:[127.0.0.1]:{}\n", sink.port);
    let mut d = Daemon::start_with(&map, "", "", "recipient_verify = \"callout\"\n");

    // Primary up: live callouts decide.
    assert!(rcpt(&d, "alice@example.jp").starts_with("250"));
    let r = rcpt(&d, "mallory@example.jp");
    assert!(r.starts_with("550 5.1.1 <mallory@example.jp>"), "{r}");
    assert_eq!(sink.count(), 0, "a callout never sends a message");
    let (code, out, _) = d.cli(&["recipients", "check", "mallory@example.jp"]);
    assert_eq!(code, 1);
    assert!(out.contains("cache (unknown"), "{out}");

    // Restart with the primary down: the cache still answers.
    d.kill9();
    sink.down();
    d.spawn();
    assert!(rcpt(&d, "alice@example.jp").starts_with("250"));
    assert!(rcpt(&d, "mallory@example.jp").starts_with("550 5.1.1"));
    // Never asked, primary down: accepted (the point of a backup MX).
    let r = rcpt(&d, "carol@example.jp");
    assert!(r.starts_with("250"), "{r}");
    assert!(d.log().contains("unverifiable, accepted"), "{}", d.log());
}

#[test]
fn unverifiable_tempfail_when_configured() {
    let sink = Sink::start_down();
    let map = format!("example.jp smtp:[127.0.0.1]:{}\n", sink.port);
    let d = Daemon::start_with(
        &map,
        "",
        "",
        "recipient_verify = \"callout\"\non_unverifiable = \"tempfail\"\nconnect_timeout = \"2s\"\n",
    );
    let r = rcpt(&d, "dave@example.jp");
    assert!(r.starts_with("450 4.1.1 <dave@example.jp>"), "{r}");
}

/// Regression (issue 16): once the callout budget was spent, unknown
/// recipients were accepted ("unverifiable, accepted"). Now they get
/// Postfix's `450 4.1.1 … Address verification in progress`, even with
/// `on_unverifiable = "accept"` (the default).
#[test]
fn callout_budget_spent_tempfails_never_accepts() {
    let sink = Sink::start();
    let map = format!("example.jp smtp:[127.0.0.1]:{}\n", sink.port);
    // One callout a second: a burst of two, then the budget is spent.
    let d = Daemon::start_with(
        &map,
        "",
        "",
        "recipient_verify = \"callout\"\nverify_rate = 1\n",
    );
    let users: Vec<String> = (0..6).map(|i| format!("nosuch{i}@example.jp")).collect();
    for u in &users {
        sink.set_rcpt_reply(u, Some("550 5.1.1 User unknown"));
    }
    let mut c = d.client();
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<sender@sender.example>");
    let mut in_progress = 0;
    for u in &users {
        let r = c.cmd(&format!("RCPT TO:<{u}>"));
        assert!(!r.starts_with('2'), "accepted an unknown user: {r}");
        if r.starts_with(&format!(
            "450 4.1.1 <{u}>: Recipient address rejected: Address verification in progress"
        )) {
            in_progress += 1;
        } else {
            assert!(r.starts_with("550 5.1.1"), "{r}");
        }
    }
    assert!(
        in_progress >= 3,
        "budget of 2 (+1/s) spent, yet {in_progress} tempfails"
    );
    let log = d.log();
    assert!(log.contains("callout rate limit reached"), "{log}");
    assert!(!log.contains("unverifiable, accepted"), "{log}");
}

/// Regression (issue 16): `mx2 recipients check` printed the primary's
/// reply raw, terminal escapes included.
#[test]
fn recipients_check_escapes_the_primarys_reply() {
    let sink = Sink::start();
    sink.set_rcpt_reply(
        "eve@example.jp",
        Some("550 5.1.1 no\x1b]0;pwned\x07 such\ruser"),
    );
    let map = format!("example.jp smtp:[127.0.0.1]:{}\n", sink.port);
    let d = Daemon::start_with(&map, "", "", "recipient_verify = \"callout\"\n");
    let (code, out, err) = d.cli(&["recipients", "check", "eve@example.jp"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        !out.trim_end_matches('\n').chars().any(char::is_control),
        "{out:?}"
    );
    assert!(out.contains("no\\x1b]0;pwned\\x07 such\\x0duser"), "{out}");
}
