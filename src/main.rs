//! mx2: a secondary-MX relay. See README.md and docs/flow.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mx2::config::{Config, DEFAULT_CONFIG_PATH};
use mx2::{cli, logging, serve};

#[derive(Parser, Debug)]
#[command(
    name = "mx2",
    version,
    about = "Secondary-MX relay: accept, queue durably, clean headers, relay to the primaries"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "MX2_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon in the foreground (SIGTERM stops, SIGHUP reloads).
    Serve,
    /// Write a starter mx2.toml, transport.map and header_checks into a directory.
    ///
    /// DIR (default: the working directory, created if missing) gets
    /// mx2.toml, every key shown with its default and the tables named
    /// relative to it (relative paths in a config are relative to its
    /// directory); transport.map, commented examples that relay nothing;
    /// and header_checks, the operator's rules (the built-in ones). An
    /// existing file is not overwritten without --force: mx2 names it,
    /// writes nothing and exits 1.
    Init(cli::init::Args),
    /// Validate the config, transport map, header_checks and certificates.
    CheckConfig,
    /// Inspect and control the queue.
    #[command(subcommand)]
    Queue(cli::queue_cmd::Command),
    /// Read and edit the transport map.
    #[command(subcommand)]
    Transport(cli::transport_cmd::Command),
    /// Check recipient validation.
    #[command(subcommand)]
    Recipients(cli::recipients_cmd::Command),
    /// Try header rules on a message.
    #[command(subcommand, name = "header-checks")]
    HeaderChecks(cli::header_checks_cmd::Command),
    /// Write the manual pages into DIR (used by the packaging).
    #[command(hide = true)]
    Man { dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let explicit = cli.config.is_some();
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    if let Cmd::CheckConfig = cli.cmd {
        return ExitCode::from(cli::check_config::run(&path, explicit) as u8);
    }
    if let Cmd::Init(args) = &cli.cmd {
        // Writes a configuration: reads none.
        return match cli::init::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mx2: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    if let Cmd::Man { dir } = &cli.cmd {
        // Needs no configuration: runs on the build machine.
        return match cli::man::run(dir, <Cli as clap::CommandFactory>::command()) {
            Ok(code) => ExitCode::from(code as u8),
            Err(e) => {
                eprintln!("mx2: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let cfg = match Config::load(&path, explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let result = match &cli.cmd {
        Cmd::Serve => {
            let _flush = logging::init_daemon(cfg.log.format);
            serve::run(cfg)
        }
        Cmd::CheckConfig | Cmd::Man { .. } | Cmd::Init(_) => Ok(0),
        Cmd::Queue(c) => {
            logging::init(cfg.log.format);
            cli::queue_cmd::run(c, &cfg)
        }
        Cmd::Recipients(c) => {
            logging::init(cfg.log.format);
            cli::recipients_cmd::run(c, cfg)
        }
        Cmd::Transport(c) => cli::transport_cmd::run(c, &cfg.relay.transport_map.path),
        Cmd::HeaderChecks(c) => cli::header_checks_cmd::run(c, &cfg.relay.header_checks),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("mx2: {e:#}");
            ExitCode::from(1)
        }
    }
}
