//! `mx2 transport add|remove|list` as an admin runs them: messages, exit
//! codes, and no update lost when several run at once.

use std::path::Path;
use std::process::{Command, Output};

fn mx2(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mx2"))
        .arg("--config")
        .arg(dir.join("mx2.toml"))
        .args(args)
        .output()
        .expect("run mx2")
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("mx2.toml"),
        format!(
            "[queue]\npath = \"{0}/queue.db\"\n[relay]\ntransport_map = \"{0}/transport.map\"\n",
            d.display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("transport.map"),
        "# the primaries\nexample.jp smtp:[192.0.2.1]\n",
    )
    .unwrap();
    dir
}

#[test]
fn add_remove_and_their_errors() {
    let dir = setup();
    let d = dir.path();
    let out = mx2(d, &["transport", "add", "example.com", "[192.0.2.2]:2525"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("added ") && text.contains("example.com"),
        "{text}"
    );
    // The comment and the old entry stay.
    let map = std::fs::read_to_string(d.join("transport.map")).unwrap();
    assert!(
        map.starts_with("# the primaries\nexample.jp smtp:[192.0.2.1]\n"),
        "{map}"
    );
    assert!(map.contains("example.com"), "{map}");
    // A second entry for the same domain is refused and changes nothing.
    let out = mx2(d, &["transport", "add", "example.com", "[192.0.2.3]"]);
    assert!(!out.status.success());
    assert_eq!(
        std::fs::read_to_string(d.join("transport.map")).unwrap(),
        map
    );
    let out = mx2(d, &["transport", "remove", "example.jp"]);
    assert!(out.status.success(), "{out:?}");
    let out = mx2(d, &["transport", "remove", "example.jp"]);
    assert!(
        !out.status.success(),
        "removing a missing entry is an error"
    );
    let list = String::from_utf8_lossy(&mx2(d, &["transport", "list"]).stdout).into_owned();
    assert!(
        !list.contains("example.jp") && list.contains("example.com"),
        "{list}"
    );
}

/// Admins (here 24 processes) adding at the same moment: every entry
/// is in the file afterwards.
#[test]
fn concurrent_adds_lose_nothing() {
    let dir = setup();
    let d = dir.path().to_path_buf();
    let handles: Vec<_> = (0..24)
        .map(|i| {
            let d = d.clone();
            std::thread::spawn(move || {
                mx2(
                    &d,
                    &["transport", "add", &format!("d{i}.example"), "[192.0.2.9]"],
                )
            })
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let map = std::fs::read_to_string(d.join("transport.map")).unwrap();
    for i in 0..24 {
        assert!(map.contains(&format!("d{i}.example ")), "d{i} lost:\n{map}");
    }
}
