//! `write_atomic`: replaces the file, keeps its mode, leaves no temp files.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use transport::write_atomic;

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn creates_and_replaces_keeping_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("transport.map");

    write_atomic(&path, "a.example smtp:\n").expect("create");
    assert_eq!(
        fs::read_to_string(&path).expect("read"),
        "a.example smtp:\n"
    );
    assert_eq!(names(dir.path()), vec!["transport.map"]);

    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
    write_atomic(&path, "b.example smtp:\n").expect("replace");
    assert_eq!(
        fs::read_to_string(&path).expect("read"),
        "b.example smtp:\n"
    );
    let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    assert_eq!(names(dir.path()), vec!["transport.map"]);
}

#[test]
fn replaces_through_a_symlink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real.map");
    let link = dir.path().join("transport.map");
    fs::write(&real, "old\n").expect("write");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");

    write_atomic(&link, "new\n").expect("write via link");
    assert!(fs::symlink_metadata(&link)
        .expect("lstat")
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_to_string(&real).expect("read"), "new\n");
    assert_eq!(names(dir.path()), vec!["real.map", "transport.map"]);
}

#[test]
fn missing_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope").join("transport.map");
    assert!(write_atomic(&path, "x\n").is_err());
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

/// Concurrent read-modify-write editors, as two admins running
/// `mx2 transport add` at once: with the lock every change survives.
#[test]
fn locked_edits_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transport.map");
    std::fs::write(&path, "").unwrap();
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                for j in 0..10 {
                    transport::edit_locked(&path, || {
                        let text = std::fs::read_to_string(&path)?;
                        // Give a racing editor every chance to interleave.
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        let domain = format!("d{i}-{j}.example");
                        let new =
                            transport::add_entry(&text, "transport.map", &domain, "[192.0.2.1]")
                                .map_err(|e| std::io::Error::other(e.to_string()))?;
                        transport::write_atomic(&path, &new)
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 160, "{text}");
}
