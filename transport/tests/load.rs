//! `TransportMap::load`, error reporting, and the type's guarantees.

use std::fs;

use transport::{ParseError, TransportMap};

#[test]
fn map_is_clone_send_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<TransportMap>();
    check::<ParseError>();
}

#[test]
fn load_reads_and_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("transport");
    fs::write(
        &path,
        "example.jp smtp:[primary1.example.net]\nbad.example local:\n",
    )
    .expect("write");
    let err = TransportMap::load(&path).expect_err("local: is refused");
    assert_eq!(
        err.errors,
        vec![format!(
            "{}:2: unsupported transport \"local\" (mx2 relays by SMTP only: use \"smtp:\" or \"relay:\")",
            path.display()
        )]
    );

    fs::write(&path, "example.jp smtp:[primary1.example.net]\n").expect("write");
    let map = TransportMap::load(&path).expect("loads");
    assert_eq!(map.file(), path.display().to_string());
    assert_eq!(map.entries().len(), 1);
}

#[test]
fn load_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let err = TransportMap::load(&missing).expect_err("missing file");
    assert_eq!(err.errors.len(), 1);
    assert!(err.errors[0].starts_with(&format!("{}: cannot read: ", missing.display())));

    let latin1 = dir.path().join("latin1");
    fs::write(&latin1, b"a.example smtp:\nm\xfcnchen.de smtp:\n").expect("write");
    let err = TransportMap::load(&latin1).expect_err("not UTF-8");
    assert_eq!(
        err.errors,
        vec![format!("{}:2: invalid UTF-8", latin1.display())]
    );
}

#[test]
fn every_error_is_reported_one_per_line() {
    let text = "a.example\nb.example discard:\nc.example smtp:[c]:0\na.example smtp:\n";
    let err = TransportMap::parse(text, "/etc/mx2/transport.map").expect_err("errors");
    let shown = err.to_string();
    assert_eq!(
        shown,
        "/etc/mx2/transport.map:1: missing result for \"a.example\" (expected \"PATTERN [transport:]nexthop\")\n\
         /etc/mx2/transport.map:2: unsupported transport \"discard\" (mx2 relays by SMTP only: use \"smtp:\" or \"relay:\")\n\
         /etc/mx2/transport.map:3: bad port \"0\" in next hop \"[c]:0\" (must be 1-65535)\n\
         /etc/mx2/transport.map:4: duplicate entry for \"a.example\" (first at /etc/mx2/transport.map:1)"
    );
    let boxed: Box<dyn std::error::Error> = Box::new(err);
    assert!(boxed.to_string().lines().count() == 4);
}

#[test]
fn empty_and_comment_only_tables() {
    for text in ["", "\n", "# nothing yet\n\n   \n"] {
        let map = TransportMap::parse(text, "t").expect("parses");
        assert!(map.entries().is_empty());
        assert!(map.lookup("example.jp").is_none());
    }
}

#[test]
fn crlf_files() {
    let text = "example.jp smtp:[a.example.net],\r\n  [b.example.net]\r\n# c\r\nexample.net :\r\n";
    let map = TransportMap::parse(text, "t").expect("parses");
    let r = map.lookup("example.jp").expect("route");
    assert_eq!(r.raw_value, "smtp:[a.example.net],  [b.example.net]");
    assert_eq!(r.nexthops.len(), 2);
    assert_eq!(map.lookup("example.net").map(|r| r.line), Some(4));
}
