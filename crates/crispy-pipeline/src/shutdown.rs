use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A cloneable stop switch shared by every source of a run.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    /// Wakes async waiters ([`Shutdown::triggered`]).
    notify: Arc<tokio::sync::Notify>,
    /// Why it was triggered (the first reason given).
    reason: Arc<OnceLock<&'static str>>,
}

impl Shutdown {
    /// A switch that is off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every source to stop: readers close and send their partial chunks.
    pub fn trigger(&self) {
        self.trigger_because("shutdown requested");
    }

    /// Like [`Shutdown::trigger`], saying why (for the log lines of the sources stopping).
    pub fn trigger_because(&self, reason: &'static str) {
        let _ = self.reason.set(reason);
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Why the sources are stopping, once triggered.
    pub fn reason(&self) -> &'static str {
        self.reason.get().copied().unwrap_or("shutdown requested")
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Waits until triggered (at once if it already is).
    pub async fn triggered(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a trigger in between is not missed.
        notified.as_mut().enable();
        if self.is_triggered() {
            return;
        }
        notified.await;
    }

    /// The flag itself, for FFmpeg's interrupt callback.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    /// Sleeps up to `d`, returning early (true) when triggered.
    pub fn sleep(&self, d: Duration) -> bool {
        let step = Duration::from_millis(50);
        let mut left = d;
        while !left.is_zero() {
            if self.is_triggered() {
                return true;
            }
            let s = left.min(step);
            std::thread::sleep(s);
            left -= s;
        }
        self.is_triggered()
    }
}
