//! `mx2 init [DIR] [--force]`: a working starter configuration in a directory.
//!
//! Writes `mx2.toml` (every key shown with its default, the two tables
//! named relative to the file), `transport.map` (commented examples,
//! relays nothing) and `header_checks` (the operator's rules). Config paths
//! are relative to the config file's directory (see `config.rs`), so the
//! directory works from any working directory:
//! `mx2 --config DIR/mx2.toml serve`.
//!
//! The tables are the packaged files themselves (the header rules are
//! [`tables::BUILTIN_RULES`]), so what `init` writes, what the package
//! installs and what runs with no file can never differ. An existing file
//! is never overwritten without `--force`: the check covers all three
//! files before any is written, so a refusal writes nothing.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::tables;

/// `mx2 init` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write into (created if missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Overwrite mx2.toml, transport.map and header_checks if they exist.
    #[arg(long)]
    pub force: bool,
}

/// The files written, in order, with their text.
pub const FILES: [(&str, &str); 3] = [
    ("mx2.toml", include_str!("../../packaging/init/mx2.toml")),
    (
        "transport.map",
        include_str!("../../packaging/etc/transport.map"),
    ),
    ("header_checks", tables::BUILTIN_RULES),
];

/// Writes the starter set, printing each path and the next steps on stdout.
pub fn run(args: &Args) -> Result<()> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let targets: Vec<(PathBuf, &str)> = FILES
        .iter()
        .map(|(name, text)| (dir.join(name), *text))
        .collect();
    if !args.force {
        // symlink_metadata: a dangling symlink is an existing file too.
        let existing: Vec<String> = targets
            .iter()
            .filter(|(p, _)| p.symlink_metadata().is_ok())
            .map(|(p, _)| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist{}; nothing written (use --force to overwrite)",
                existing.join(", "),
                if existing.len() == 1 { "s" } else { "" }
            );
        }
    }
    for (path, text) in &targets {
        write_file(path, text, args.force)?;
        println!("wrote {}", path.display());
    }
    let cfg = dir.join("mx2.toml");
    println!(
        "next: mx2 --config {c} transport add example.jp '[primary.example.jp]'\n      mx2 --config {c} check-config\n      mx2 --config {c} serve",
        c = cfg.display()
    );
    Ok(())
}

/// Writes `text` to `path`: replacing it atomically when `force`, else
/// only if it does not exist (a file created meanwhile is not clobbered).
fn write_file(path: &Path, text: &str, force: bool) -> Result<()> {
    let ctx = || format!("cannot write {}", path.display());
    if !force {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(ctx)?;
        f.write_all(text.as_bytes()).with_context(ctx)?;
        return f.sync_all().with_context(ctx);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.mx2-init.{}", std::process::id()));
    let written = std::fs::write(&tmp, text)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_starter_config_names_the_tables_beside_it() {
        let c = Config::from_toml(FILES[0].1, Some(Path::new("/srv/mx2/mx2.toml")))
            .expect("the starter mx2.toml parses");
        assert_eq!(
            c.relay.transport_map.path,
            PathBuf::from("/srv/mx2/transport.map")
        );
        assert_eq!(
            c.relay.header_checks.path,
            PathBuf::from("/srv/mx2/header_checks")
        );
        assert!(c.relay.transport_map.explicit && c.relay.header_checks.explicit);
        assert_eq!(c.queue.path, PathBuf::from("/srv/mx2/./mx2-data/queue.db"));
        assert_eq!(c.smtp.listen, vec!["127.0.0.1:2525"]);
    }

    #[test]
    fn refusal_names_every_existing_file_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("header_checks"), "mine\n").expect("write");
        let args = Args {
            dir: dir.path().to_path_buf(),
            force: false,
        };
        let e = format!("{:#}", run(&args).expect_err("refused"));
        assert!(e.contains("header_checks already exists"), "{e}");
        assert!(e.contains("--force"), "{e}");
        assert!(!dir.path().join("mx2.toml").exists());
        assert!(!dir.path().join("transport.map").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("header_checks")).expect("read"),
            "mine\n"
        );
        run(&Args {
            force: true,
            ..args
        })
        .expect("--force overwrites");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("header_checks")).expect("read"),
            tables::BUILTIN_RULES
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left.len(), 3, "temporary files left behind: {left:?}");
    }
}
