//! Command-line front end: one module per `mx2` subcommand family.

pub mod check_config;
pub mod header_checks_cmd;
pub mod init;
pub mod man;
pub mod queue_cmd;
pub mod recipients_cmd;
pub mod transport_cmd;
