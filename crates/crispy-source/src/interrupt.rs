//! Deadlines and shutdown for blocking FFmpeg calls, through its interrupt callback.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why FFmpeg was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    None = 0,
    Deadline = 1,
    Shutdown = 2,
}

/// Shared between a source and FFmpeg's interrupt callback (which may run on any thread).
#[derive(Debug)]
pub(crate) struct Interrupt {
    epoch: Instant,
    /// Milliseconds after `epoch` when the current blocking call must give up; 0 = none.
    deadline_ms: AtomicU64,
    shutdown: Arc<AtomicBool>,
    reason: AtomicU8,
}

impl Interrupt {
    pub(crate) fn new(shutdown: Arc<AtomicBool>) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            deadline_ms: AtomicU64::new(0),
            shutdown,
            reason: AtomicU8::new(Reason::None as u8),
        })
    }

    /// Arms the deadline `timeout` from now, unless the last deadline already expired: after
    /// an abort FFmpeg may still hand out frames it had buffered (its parser flushes on
    /// error), and those must not buy the stalled connection another full timeout.
    pub(crate) fn rearm(&self, timeout: Duration) {
        if self.reason() != Reason::Deadline {
            self.arm(timeout);
        }
    }

    /// Arms the deadline `timeout` from now.
    pub(crate) fn arm(&self, timeout: Duration) {
        let at = self.epoch.elapsed() + timeout;
        self.deadline_ms
            .store(at.as_millis().max(1) as u64, Ordering::Relaxed);
        self.reason.store(Reason::None as u8, Ordering::Relaxed);
    }

    /// Called by FFmpeg: true means "abort the blocking call".
    pub(crate) fn should_abort(&self) -> bool {
        if self.shutdown.load(Ordering::Relaxed) {
            self.reason.store(Reason::Shutdown as u8, Ordering::Relaxed);
            return true;
        }
        let deadline = self.deadline_ms.load(Ordering::Relaxed);
        if deadline != 0 && self.epoch.elapsed().as_millis() as u64 > deadline {
            self.reason.store(Reason::Deadline as u8, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Why the last abort happened.
    pub(crate) fn reason(&self) -> Reason {
        match self.reason.load(Ordering::Relaxed) {
            1 => Reason::Deadline,
            2 => Reason::Shutdown,
            _ => Reason::None,
        }
    }

    /// True once shutdown was requested.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }
}
