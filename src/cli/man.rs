//! `mx2 man DIR` (hidden): writes the section-8 manual pages from the real
//! command-line definition, so they never drift from `--help`.
//!
//! Writes `mx2.8` (with the daemon's FILES, SIGNALS, ENVIRONMENT and EXIT
//! STATUS sections added by hand) and one page per subcommand
//! (`mx2-queue.8`, `mx2-queue-list.8`, …), which `mx2.8` refers to. The
//! configuration file's page, `mx2.toml(5)`, is hand-written and lives in
//! `packaging/man/mx2.toml.5`. The packaging scripts run this at build time.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The manual section of every generated page (system administration).
const SECTION: &str = "8";

/// Hand-written sections appended to `mx2.8`, in roff.
const MX2_EXTRA: &str = r#".SH "EXIT STATUS"
0 on success; 1 on any error, each printed as one line on standard error
(configuration and table errors as \fIFILE\fR:\fILINE\fR: \fImessage\fR).
\fBmx2 serve\fR exits 0 after SIGTERM.
\fBmx2 transport lookup\fR exits 1 when no entry routes the address.
.SH SIGNALS
\fBmx2 serve\fR runs in the foreground and logs to standard error.
.TP
.B SIGTERM, SIGINT
Stop accepting connections, let sessions in progress finish (up to 20
seconds), and exit 0. Every message that was answered 250 is in the queue.
.TP
.B SIGHUP
Reload the transport map, header_checks and TLS certificates. A table that
fails to load keeps the previous one in force; the error is logged.
Tables edited in place are also picked up within a few seconds without a
signal.
.SH ENVIRONMENT
.TP
.B MX2_CONFIG
Configuration file used when \fB\-\-config\fR is not given.
.TP
.B RUST_LOG
Log filter (for example \fBinfo\fR or \fBmx2=debug\fR).
.SH FILES
.TP
.I /etc/mx2/mx2.toml
Configuration; see \fBmx2.toml\fR(5). When the file is absent, built-in
developer defaults apply (listen on 127.0.0.1:2525, queue in
\fI./mx2\-data\fR).
.TP
.I /etc/mx2/transport.map
Relay domains and their next hops, in Postfix \fBtransport\fR(5) syntax.
The text file is the table: there is no \fBpostmap\fR step.
.TP
.I /etc/mx2/header_checks
Header rules in Postfix \fBheader_checks\fR(5) / \fBpcre_table\fR(5) syntax,
applied to the message as it will be relayed, after every scanner. With
no file at the default path, the same rules are built in.
.TP
.I /var/lib/mx2/queue.db
The SQLite queue (with its \fI\-wal\fR and \fI\-shm\fR files).
.TP
.I /run/mx2/control.sock
Control socket through which \fBmx2 queue flush\fR and friends reach the
running daemon.
.TP
.I /lib/systemd/system/mx2.service
The systemd unit (Debian package).
.SH EXAMPLES
.nf
mx2 init /srv/mx2 && mx2 \-\-config /srv/mx2/mx2.toml check\-config
mx2 check\-config
mx2 transport add example.jp '[primary1.example.net]'
mx2 queue list \-\-domain example.jp
mx2 queue flush \-\-domain example.jp
systemctl reload mx2
.fi
.SH "SEE ALSO"
\fBmx2.toml\fR(5), \fBtransport\fR(5), \fBheader_checks\fR(5),
\fBpcre_table\fR(5), \fBpostfix\fR(1)
"#;

/// Writes every page into `dir` (created if needed) and prints their paths.
/// `cli` is the binary's whole command definition (`Cli::command()`).
pub fn run(dir: &Path, cli: clap::Command) -> Result<i32> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = cli.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_page(&cmd, dir, true, &mut written)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        generate(sub, dir, &mut written)?;
    }
    for p in &written {
        println!("{}", p.display());
    }
    Ok(0)
}

/// One page for `cmd`, then one for each visible subcommand below it.
fn generate(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    write_page(cmd, dir, false, written)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        generate(sub, dir, written)?;
    }
    Ok(())
}

/// The page date, `YYYY-MM-DD`: from `SOURCE_DATE_EPOCH` when set (for
/// reproducible packages), else today. (An empty date would shift the
/// `.TH` fields: clap_mangen writes it unquoted.)
fn page_date() -> String {
    let now = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let d = now.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn write_page(
    cmd: &clap::Command,
    dir: &Path,
    top: bool,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(SECTION)
        .date(page_date())
        .manual("System Manager's Manual")
        .source(format!("mx2 {}", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    if top {
        buf.extend_from_slice(MX2_EXTRA.as_bytes());
    } else {
        buf.extend_from_slice(b".SH \"SEE ALSO\"\n\\fBmx2\\fR(8), \\fBmx2.toml\\fR(5)\n");
    }
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&buf)
        .with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    Ok(())
}
