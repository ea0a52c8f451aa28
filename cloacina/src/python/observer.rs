//! The engine's events, handed to Python: records of `logging` and, when OpenTelemetry is
//! installed, spans.
//!
//! Asking Python whether a logging level is enabled needs the GIL, so the lowest enabled level
//! is kept here: read again whenever Python calls into the executor, and at least once a second.
//! Without tracing, events below it cost one atomic load and never touch Python.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use pyo3::prelude::*;

use super::bridge::with_python;
use super::{logs, traces};
use crate::events::{Event, Level, Observer};

/// Longest a cached level is trusted when nothing calls in from Python.
const REFRESH: Duration = Duration::from_secs(1);

/// The process's observer, shared by its executors.
pub(crate) struct PythonObserver {
    /// The lowest level a `cloacina` logger has enabled.
    lowest_enabled: AtomicU8,
    /// When `lowest_enabled` was read, in milliseconds since `epoch`.
    read_at_ms: AtomicU64,
    epoch: Instant,
}

/// The one observer of this process.
pub(crate) static OBSERVER: Lazy<Arc<PythonObserver>> = Lazy::new(|| {
    Arc::new(PythonObserver {
        lowest_enabled: AtomicU8::new(Level::Warning as u8),
        read_at_ms: AtomicU64::new(0),
        epoch: Instant::now(),
    })
});

impl PythonObserver {
    /// Reads again which logging levels are enabled.
    pub(crate) fn refresh(&self, py: Python<'_>) {
        self.lowest_enabled
            .store(logs::lowest_enabled(py), Ordering::Relaxed);
        self.read_at_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn stale(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        now.saturating_sub(self.read_at_ms.load(Ordering::Relaxed)) > REFRESH.as_millis() as u64
    }
}

impl Observer for PythonObserver {
    fn wants(&self, level: Level) -> bool {
        if traces::active() {
            return true;
        }
        if self.stale() {
            with_python(|py| self.refresh(py));
        }
        level as u8 >= self.lowest_enabled.load(Ordering::Relaxed)
    }

    fn observe(&self, event: &Event<'_>) {
        with_python(|py| {
            if event.level() as u8 >= self.lowest_enabled.load(Ordering::Relaxed) {
                // A failing handler is `logging`'s business (it reports and goes on).
                let _ = logs::log(py, event);
            }
            if traces::active() {
                traces::trace(py, event);
            }
        });
    }
}
