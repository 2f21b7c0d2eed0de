//! mx2: a secondary-MX relay. The `mx2` binary (src/main.rs) is a thin
//! command-line front end over these modules; they are a library so the
//! fuzz targets and tests can drive the parsers directly.
//!
//! Follow a message through them in docs/flow.md.

pub mod cli;
pub mod config;
pub mod control;
pub mod domain;
pub mod escape;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod queue;
pub mod recipients;
pub mod relay;
pub mod scan;
pub mod serve;
pub mod smtp;
pub mod stream;
pub mod supervise;
pub mod tables;
