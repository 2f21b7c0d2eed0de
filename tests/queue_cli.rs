//! `mx2 queue …` against a queue built by real SMTP sessions, with the
//! daemon running and stopped.

mod common;

use common::Daemon;

const MAP: &str = "example.jp smtp:[127.0.0.1]:9\nexample.net smtp:[127.0.0.1]:9\n";

fn fill(d: &Daemon) -> Vec<String> {
    let mut ids = Vec::new();
    let mut c = d.client();
    for (i, (from, to)) in [
        ("alice@sender.example", vec!["bob@example.jp"]),
        ("carol@other.example", vec!["dave@example.net"]),
        (
            "alice@sender.example",
            vec!["erin@example.jp", "frank@example.net"],
        ),
        ("", vec!["postmaster@example.jp"]),
    ]
    .iter()
    .enumerate()
    {
        c.cmd("RSET");
        let r = c.send_mail(
            from,
            to,
            format!("Subject: m{i}\r\n\r\nbody {i}\r\n").as_bytes(),
        );
        assert!(r.starts_with("250"), "{r}");
        ids.push(r.rsplit(' ').next().unwrap().to_string());
    }
    ids
}

fn json(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let (code, out, err) = d.cli(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn list_filter_show_hold_release_delete_stats() {
    let mut d = Daemon::start(MAP, "", "");
    let ids = fill(&d);

    let all = json(&d, &["queue", "list", "--json"]);
    let arr = all.as_array().unwrap();
    assert_eq!(arr.len(), 4);
    for (m, id) in arr.iter().zip(&ids) {
        assert_eq!(m["id"], id.as_str());
        assert!(m["arrival"].as_str().unwrap().ends_with('Z'), "{m}");
        assert!(m["size"].as_i64().unwrap() > 20);
        assert_eq!(m["held"], false);
        for r in m["recipients"].as_array().unwrap() {
            assert!(
                ["queued", "deferred", "active"].contains(&r["status"].as_str().unwrap()),
                "{r}"
            );
            assert!(r["attempts"].is_i64());
            assert!(r["next_attempt"].is_string());
            assert!(r.get("last_reply").is_some());
        }
    }
    assert_eq!(arr[2]["recipients"].as_array().unwrap().len(), 2);
    assert_eq!(arr[3]["sender"], "");

    let jp = json(&d, &["queue", "list", "--json", "--domain", "EXAMPLE.JP"]);
    let jp_ids: Vec<&str> = jp
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        jp_ids,
        vec![ids[0].as_str(), ids[2].as_str(), ids[3].as_str()]
    );
    let alice = json(
        &d,
        &[
            "queue",
            "list",
            "--json",
            "--sender",
            "alice@sender.example",
        ],
    );
    assert_eq!(alice.as_array().unwrap().len(), 2);

    // Human listing, like mailq.
    let (code, out, _) = d.cli(&["queue", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&ids[0]) && out.contains("bob@example.jp") && out.contains("MAILER-DAEMON"),
        "{out}"
    );
    assert!(out.contains("4 Requests"), "{out}");

    // show
    let (code, raw, _) = d.cli(&["queue", "show", &ids[1], "--raw"]);
    assert_eq!(code, 0);
    assert!(
        raw.starts_with("Received: from client.test") && raw.ends_with("\r\n\r\nbody 1\r\n"),
        "{raw}"
    );
    let (_, headers, _) = d.cli(&["queue", "show", &ids[1], "--headers"]);
    assert!(
        headers.contains("Subject: m1\r\n") && !headers.contains("body 1"),
        "{headers}"
    );
    let (_, env, _) = d.cli(&["queue", "show", &ids[1], "--envelope"]);
    assert!(
        env.contains("sender: carol@other.example") && env.contains("recipient: dave@example.net"),
        "{env}"
    );
    let (code, _, err) = d.cli(&["queue", "show", "NOSUCHID0000"]);
    assert_eq!(code, 1);
    assert!(err.contains("NOSUCHID0000"), "{err}");

    // hold / release
    let (code, out, _) = d.cli(&["queue", "hold", &ids[0]]);
    assert_eq!(code, 0, "{out}");
    let held = json(&d, &["queue", "list", "--json", "--held"]);
    assert_eq!(held.as_array().unwrap().len(), 1);
    assert_eq!(held[0]["id"], ids[0].as_str());
    assert_eq!(d.cli(&["queue", "release", &ids[0]]).0, 0);
    assert_eq!(
        json(&d, &["queue", "list", "--json", "--held"])
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // stats
    let s = json(&d, &["queue", "stats", "--json"]);
    assert_eq!(s["messages"], 4);
    assert_eq!(s["held"], 0);
    assert_eq!(s["domains"]["example.jp"]["messages"], 3);
    assert_eq!(s["domains"]["example.net"]["messages"], 2);
    assert!(s["bytes"].as_i64().unwrap() > 0 && s["oldest_age_seconds"].is_i64());

    // delete --domain removes that domain's recipients, and messages left empty.
    let (code, out, _) = d.cli(&["queue", "delete", "--domain", "example.net"]);
    assert_eq!(code, 0, "{out}");
    let left = json(&d, &["queue", "list", "--json"]);
    let left_ids: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        left_ids,
        vec![ids[0].as_str(), ids[2].as_str(), ids[3].as_str()]
    );
    assert_eq!(left[1]["recipients"].as_array().unwrap().len(), 1);

    // With the daemon stopped the CLI still works.
    assert_eq!(d.terminate(), Some(0));
    let (code, out, _) = d.cli(&["queue", "delete", &ids[0], "NOSUCHID0000"]);
    assert_eq!(code, 1, "a missing id is an error");
    assert!(out.contains(&format!("{}: deleted", ids[0])), "{out}");
    assert_eq!(
        json(&d, &["queue", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (code, _, _) = d.cli(&["queue", "delete", "--all"]);
    assert_eq!(code, 0);
    assert_eq!(json(&d, &["queue", "stats", "--json"])["messages"], 0);
    let (_, out, _) = d.cli(&["queue", "list"]);
    assert!(out.contains("Mail queue is empty"), "{out}");
}
