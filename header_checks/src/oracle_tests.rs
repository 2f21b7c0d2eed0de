//! Cross-check against real Postfix: for every golden case, `postmap -hq -
//! pcre:RULES` (Postfix's own table code and header parser) must print
//! exactly the lookups this crate makes: "key<TAB>result" for every header
//! that a rule matches. Needs Postfix's `postmap` with pcre support
//! (Debian: postfix, postfix-pcre), which `.ci/run` installs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{header, pcre::Matcher, Rules};

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

/// What smtpd hands cleanup: every CR right before an LF removed.
fn smtpd_lines(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len());
    for line in msg.split_inclusive(|&b| b == b'\n') {
        match line.strip_suffix(b"\n") {
            Some(mut l) => {
                while let Some(x) = l.strip_suffix(b"\r") {
                    l = x;
                }
                out.extend_from_slice(l);
                out.push(b'\n');
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// Every lookup result, without stopping at DISCARD/REJECT.
fn our_lookups(rules: &Rules, msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut matcher = Matcher::new(rules.max_captures).expect("matcher");
    let mut tally = crate::Tally::default();
    for h in header::scan(msg, header::DEFAULT_HEADER_SIZE_LIMIT).headers {
        if let Some((_, value)) = rules.lookup(&mut matcher, &h.key, &mut tally) {
            out.extend_from_slice(&h.key);
            out.push(b'\t');
            out.extend_from_slice(&value);
            out.push(b'\n');
        }
    }
    out
}

fn postmap(rules: &Path, msg: &[u8], config: &Path) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("postmap")
        .env("MAIL_CONFIG", config)
        .arg("-hq")
        .arg("-")
        .arg(format!("pcre:{}", rules.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run postmap (is Postfix installed?)");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = msg.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("postmap output");
    let _ = writer.join();
    assert!(
        out.stderr.is_empty(),
        "postmap warned: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn postfix_postmap_agrees_on_every_golden_case() {
    let dir = testdata();
    let config = std::env::temp_dir().join(format!("hc-oracle-{}", std::process::id()));
    std::fs::create_dir_all(&config).expect("config dir");
    std::fs::write(config.join("main.cf"), "").expect("main.cf");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("testdata")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "eml").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    let mut failures = Vec::new();
    for name in &names {
        let rules_path = rules_for(&dir, name);
        let rules = Rules::load(&rules_path).expect("rules").rules;
        let msg = smtpd_lines(&std::fs::read(dir.join(format!("{name}.eml"))).expect("eml"));
        let ours = our_lookups(&rules, &msg);
        let theirs = postmap(&rules_path, &msg, &config);
        if ours != theirs {
            failures.push(format!(
                "{name}:\n--- postmap\n{}--- ours\n{}",
                String::from_utf8_lossy(&theirs),
                String::from_utf8_lossy(&ours)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&config);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Deterministic xorshift PRNG (no dependency, reproducible failures).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random message built from header-ish fragments: folding, odd names,
/// "name :" forms, CRs, NULs, 8-bit bytes, long lines, non-header lines.
fn random_message(rng: &mut Rng) -> Vec<u8> {
    const FRAGMENTS: &[&[u8]] = &[
        b"Subject: hello",
        b"X-Spam-Status: No, score=1.0",
        b"x-spam-level: ",
        b"X-Spam-Level:",
        b"X-Virus-Status : Clean",
        b"X-Virus-Status:\tYes",
        b"From: <>",
        b"From:<>",
        b" folded continuation",
        b"\tanother fold",
        b"\t",
        b"",
        b"not a header line",
        b"Two words: x",
        b":empty name",
        b"Caf\xe9: 8-bit name",
        b"X-8bit: caf\xe9 \xe6\x97\xa5 \x1b$B2q\x1b(B",
        b"X-Nul: before\0after",
        b"X-Cr: a\rb",
        b"X-Ctl\x01: control in name",
        b"X-Spam-Flag: YES",
        b"Received: from a by b",
        b"from : <>",
        b"X-Spam-Level\t: x",
        b"X-Spam-Status:No",
        b"\t(continued)",
    ];
    let mut msg = Vec::new();
    let lines = 1 + rng.below(12);
    for _ in 0..lines {
        let mut line = FRAGMENTS[rng.below(FRAGMENTS.len())].to_vec();
        if rng.below(20) == 0 {
            let n = 2000 + rng.below(3000);
            line.extend(std::iter::repeat_n(b'y', n));
            if rng.below(2) == 0 {
                line.extend_from_slice(b"z\0tail");
            }
        }
        msg.extend_from_slice(&line);
        msg.extend_from_slice(match rng.below(4) {
            0 => b"\n",
            1 => b"\r\r\n",
            _ => b"\r\n",
        });
    }
    msg.extend_from_slice(b"\r\nX-Spam-Level: body\r\n");
    msg
}

#[test]
fn postfix_postmap_agrees_on_random_messages() {
    let config = std::env::temp_dir().join(format!("hc-oracle-rnd-{}", std::process::id()));
    std::fs::create_dir_all(&config).expect("config dir");
    std::fs::write(config.join("main.cf"), "").expect("main.cf");
    // The echo table compares every key whole; the operator-style table
    // exercises the literal-prefix shortcut and negation.
    let tables = [
        "/^([^:]*):(.*)$/ WARN [$1][$2]\n/^From:\\s*<>/m DISCARD\n",
        concat!(
            "/^From:\\s*<>/m DISCARD\n/^X\\-Spam\\-Flag:\\s+YES/m DISCARD\n",
            "/^X\\-Spam\\-Level:/m IGNORE\n/^X\\-Spam\\-Status:\\s+No/m IGNORE\n",
            "/^X\\-Virus\\-Status:\\s+Clean/m IGNORE\n/^Subject: hel?lo/ WARN s\n",
            "!/^X-/ DUNNO\n/^x-8bit: caf/ WARN 8\n",
        ),
    ];
    let mut failures = Vec::new();
    for (t, table) in tables.iter().enumerate() {
        let rules_path = config.join(format!("t{t}.pcre"));
        std::fs::write(&rules_path, table).expect("rules");
        let rules = Rules::load(&rules_path).expect("rules").rules;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 + t as u64);
        for i in 0..200 {
            let raw = random_message(&mut rng);
            let ours = our_lookups(&rules, &raw);
            let theirs = postmap(&rules_path, &smtpd_lines(&raw), &config);
            if ours != theirs {
                failures.push(format!(
                    "table {t} case {i} {:?}:\n--- postmap\n{}--- ours\n{}",
                    String::from_utf8_lossy(&raw),
                    String::from_utf8_lossy(&theirs),
                    String::from_utf8_lossy(&ours)
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&config);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
