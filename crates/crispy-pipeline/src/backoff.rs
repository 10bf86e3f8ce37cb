use std::time::Duration;

/// Capped exponential backoff with jitter, for reconnects.
///
/// Each delay is drawn uniformly from the upper half of the current step (so many cameras
/// that failed together do not retry together); the step doubles up to `max`.
///
/// ```
/// use std::time::Duration;
/// let mut b = crispy_pipeline::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
/// let first = b.next_delay();
/// assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
/// for _ in 0..20 { assert!(b.next_delay() <= Duration::from_secs(30)); }
/// b.reset();
/// assert!(b.next_delay() <= Duration::from_millis(500));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    step: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Starts at `base`, never exceeds `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            step: base,
            rng: fastrand::Rng::new(),
        }
    }

    /// The next delay; doubles the step.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step.min(self.max);
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        half + step.saturating_sub(half).mul_f64(self.rng.f64())
    }

    /// The slower schedule for failures that need a human (wrong password, wrong path):
    /// jumps straight to the maximum step.
    pub fn next_slow_delay(&mut self) -> Duration {
        self.step = self.max;
        self.next_delay()
    }

    /// Back to the first step after a success.
    pub fn reset(&mut self) {
        self.step = self.base;
    }
}
