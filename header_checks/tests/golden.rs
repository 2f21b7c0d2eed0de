//! Golden tests: for every `testdata/NAME.eml`, apply `NAME.rules` (or, if
//! absent, the rules of the longest `_`-separated prefix: `operator_spam`
//! uses `operator.rules`) and compare with `NAME.out` (what
//! `mx2 header-checks test` prints on stdout: the message byte for byte, or
//! the DISCARD/REJECT line) and `NAME.hits` (what it prints on stderr: one
//! line per hit, error, hold).
//!
//! `UPDATE_GOLDEN=1 cargo test -p header_checks --test golden` rewrites the
//! expected files; review every change by hand before committing.

use std::fs;
use std::path::{Path, PathBuf};

use header_checks::Rules;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn rules_for(dir: &Path, name: &str) -> PathBuf {
    let mut stem = name;
    loop {
        let candidate = dir.join(format!("{stem}.rules"));
        if candidate.exists() {
            return candidate;
        }
        match stem.rfind('_') {
            Some(i) => stem = &stem[..i],
            None => panic!("no rules file for {name}"),
        }
    }
}

#[test]
fn golden_files() {
    let dir = testdata();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("testdata dir")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "eml").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    assert!(names.len() >= 20, "golden cases missing: {names:?}");

    let mut failures = Vec::new();
    for name in &names {
        let rules_path = rules_for(&dir, name);
        let loaded =
            Rules::load(&rules_path).unwrap_or_else(|e| panic!("{}: {e}", rules_path.display()));
        let message = fs::read(dir.join(format!("{name}.eml"))).expect("eml");
        let outcome = loaded.rules.apply(&message);
        let report = outcome.report(&message);
        let mut hits = report.stderr.join("\n");
        if !hits.is_empty() {
            hits.push('\n');
        }
        let out_path = dir.join(format!("{name}.out"));
        let hits_path = dir.join(format!("{name}.hits"));
        if update {
            fs::write(&out_path, &report.stdout).expect("write .out");
            fs::write(&hits_path, &hits).expect("write .hits");
            continue;
        }
        let want_out = fs::read(&out_path).unwrap_or_default();
        let want_hits = fs::read_to_string(&hits_path).unwrap_or_default();
        if want_out != report.stdout {
            failures.push(format!(
                "{name}.out differs:\n--- want\n{}\n--- got\n{}",
                String::from_utf8_lossy(&want_out),
                String::from_utf8_lossy(&report.stdout)
            ));
        }
        if want_hits != hits {
            failures.push(format!(
                "{name}.hits differs:\n--- want\n{want_hits}--- got\n{hits}"
            ));
        }
        // Edit invariant: the untouched tail is exactly the original's.
        if let Some(edit) = &outcome.edit {
            assert!(edit.body_start <= message.len(), "{name}: body_start");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
