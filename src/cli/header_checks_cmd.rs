//! `mx2 header-checks test`: run a rules file over one message (like `postmap -hq - pcre:…`).

use std::path::PathBuf;

/// `mx2 header-checks …`
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Run the rules over a message (stdin if no FILE); hits on stderr, result on stdout.
    Test {
        /// Rules file (default: `[relay] header_checks` from the config).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Message file; standard input when absent.
        file: Option<PathBuf>,
    },
}

/// Runs the subcommand; `default_rules` is the configured rules path. Returns the exit code.
pub fn run(cmd: &Command, default_rules: &std::path::Path) -> anyhow::Result<i32> {
    let _ = (cmd, default_rules);
    anyhow::bail!("not implemented yet")
}
