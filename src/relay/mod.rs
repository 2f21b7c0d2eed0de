//! The relay engine (outbound delivery to the primaries).

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::queue::Queue;
use crate::tables::Tables;

/// Starts the scheduler task.
pub fn start(cfg: Arc<Config>, tables: Arc<Tables>, queue: Queue, stop: watch::Receiver<bool>) {
    let _ = (cfg, tables, queue, stop);
}
