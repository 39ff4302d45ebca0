//! Reloading files without a restart: on SIGHUP, and when a watched file's modification
//! time or size changes (checked every `interval`; Kubernetes swaps a mounted Secret by
//! replacing a symlink, which this sees too). A reload that fails keeps what was loaded
//! and is logged and counted; the next change or SIGHUP tries again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::files::FileError;
use crate::telemetry::metrics::Metrics;

/// Something loaded from files that can be re-read.
pub trait Reloadable: Send + Sync {
    /// A bounded label for logs and metrics.
    fn what(&self) -> &'static str;
    /// Whether any of its files changed since the last load.
    fn changed(&self) -> bool;
    /// Re-reads the files; on error the previous state stays in force.
    fn reload(&self) -> Result<(), FileError>;
}

/// The (modification time, size) of a set of files, to notice changes cheaply.
pub struct FileStamp {
    files: Vec<PathBuf>,
    seen: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl FileStamp {
    pub fn new(files: &[&Path]) -> FileStamp {
        let files: Vec<PathBuf> = files.iter().map(|p| p.to_path_buf()).collect();
        let seen = Mutex::new(Self::read(&files));
        FileStamp { files, seen }
    }

    fn read(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
        files
            .iter()
            .map(|f| {
                let m = std::fs::metadata(f).ok()?;
                Some((m.modified().ok()?, m.len()))
            })
            .collect()
    }

    pub fn changed(&self) -> bool {
        *self.seen.lock().expect("stamp lock") != Self::read(&self.files)
    }

    /// Records the files as they are now (called just before they are read).
    pub fn refresh(&self) {
        *self.seen.lock().expect("stamp lock") = Self::read(&self.files);
    }
}

/// Reloads `items` on SIGHUP and, if `interval` is set, when their files change. The
/// SIGHUP handler is installed before this returns (so a SIGHUP once the gateway listens
/// never takes the default action, which would end the process); the future runs until
/// `stop` is cancelled.
pub fn watch(
    items: Vec<Arc<dyn Reloadable>>,
    interval: Option<Duration>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    // Installed even with nothing to reload: SIGHUP is then taken and ignored.
    let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: reloads only on file change");
            None
        }
    };
    watch_loop(items, interval, metrics, stop, hup)
}

async fn watch_loop(
    items: Vec<Arc<dyn Reloadable>>,
    interval: Option<Duration>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    mut hup: Option<tokio::signal::unix::Signal>,
) {
    loop {
        let tick = async {
            match interval {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let hup_recv = async {
            match hup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup_recv => true,
            _ = tick => false,
        };
        for item in &items {
            if !forced && !item.changed() {
                continue;
            }
            let trigger = if forced { "sighup" } else { "file_change" };
            match item.reload() {
                Ok(()) => {
                    metrics.reloaded(item.what(), "ok");
                    tracing::info!(what = item.what(), trigger, "reloaded");
                }
                Err(e) => {
                    metrics.reloaded(item.what(), "error");
                    tracing::error!(what = item.what(), trigger, error = %e, "reload failed: the previous version stays in force");
                }
            }
        }
    }
}
