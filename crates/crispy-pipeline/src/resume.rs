//! Where a live source's sequence and hash chain continue when the sink could not say at the
//! start: the source records at once, its sealing thread holds the first chunks, and a task
//! keeps asking the sink.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crispy_core::{Chunk, ChunkMetadata, ChunkSink, SourceId};

use crate::Shutdown;

/// Chunk bytes one source's sealing thread holds while the sink's last manifest is unknown;
/// beyond it the source starts a new chain (at sequence 0) rather than grow without bound.
/// About a minute of a 4 Mbit/s camera.
pub(crate) const HELD_MAX_BYTES: u64 = 32 << 20;

/// Longest wait for one answer of the sink, at the start and on each retry.
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer, once there is one.
#[derive(Debug, Clone)]
enum State {
    Waiting,
    /// The sink answered: its newest manifest of the source, if any.
    Known(Option<Box<ChunkMetadata>>),
    /// No answer in time (held bytes over the bound, or shutdown): a new chain.
    GaveUp,
}

/// A lookup of a source's last stored manifest that is still going on.
#[derive(Debug)]
pub(crate) struct PendingResume {
    state: Mutex<State>,
    changed: Condvar,
}

/// What the sealing thread learns from [`PendingResume::outcome`].
pub(crate) enum Outcome {
    Waiting,
    Known(Option<Box<ChunkMetadata>>),
    GaveUp,
}

impl PendingResume {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::Waiting),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Settles the answer, unless it was settled already (the first word counts).
    fn settle(&self, to: State) {
        let mut state = self.lock();
        if matches!(*state, State::Waiting) {
            *state = to;
            self.changed.notify_all();
        }
    }

    /// Stops waiting for the sink: the source starts a new chain.
    pub(crate) fn give_up(&self) {
        self.settle(State::GaveUp);
    }

    fn is_waiting(&self) -> bool {
        matches!(*self.lock(), State::Waiting)
    }

    /// The answer so far, after waiting up to `wait` for one.
    pub(crate) fn outcome(&self, wait: Duration) -> Outcome {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, wait, |s| matches!(s, State::Waiting))
            .unwrap_or_else(|e| e.into_inner());
        match &*state {
            State::Waiting => Outcome::Waiting,
            State::Known(m) => Outcome::Known(m.clone()),
            State::GaveUp => Outcome::GaveUp,
        }
    }
}

/// Asks the sink for `source_id`'s last manifest until it answers (retrying with a growing
/// pause, up to 10 s), the sealing thread gives up, or shutdown.
pub(crate) async fn keep_asking<S: ChunkSink + 'static>(
    sink: Arc<S>,
    prefix: Option<String>,
    source_id: SourceId,
    pending: Arc<PendingResume>,
    shutdown: Shutdown,
) {
    let mut pause = Duration::from_secs(1);
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.triggered() => {
                pending.give_up();
                return;
            }
        }
        if !pending.is_waiting() {
            return;
        }
        let lookup = sink.last_manifest(prefix.as_deref(), &source_id);
        match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(m)) => {
                pending.settle(State::Known(m.map(Box::new)));
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(source = %source_id, "the sink's last manifest, again: {e}")
            }
            Err(_) => {
                tracing::debug!(source = %source_id, "the sink's last manifest, again: no answer")
            }
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// A sealing thread's side of a pending lookup: the chunks it holds, and how to renumber
/// chunks once the chain's continuation is known.
pub(crate) struct Deferral {
    pub(crate) source_id: SourceId,
    pub(crate) pending: Arc<PendingResume>,
    /// The object path of a chunk whose sequence number changed.
    pub(crate) path_of: Box<dyn Fn(&ChunkMetadata) -> String + Send>,
    pub(crate) held: VecDeque<(Chunk, Instant)>,
    pub(crate) held_bytes: u64,
    /// Added to the reader's sequence numbers (which start at 0) once the answer is known.
    pub(crate) offset: u64,
    /// False while the answer is awaited.
    pub(crate) settled: bool,
}

impl Deferral {
    pub(crate) fn new(
        source_id: SourceId,
        pending: Arc<PendingResume>,
        path_of: Box<dyn Fn(&ChunkMetadata) -> String + Send>,
    ) -> Self {
        Self {
            source_id,
            pending,
            path_of,
            held: VecDeque::new(),
            held_bytes: 0,
            offset: 0,
            settled: false,
        }
    }

    /// Gives a chunk from the reader its final sequence number and object path.
    pub(crate) fn renumber(&self, m: &mut ChunkMetadata) {
        if self.offset > 0 {
            m.sequence += self.offset;
            m.object = (self.path_of)(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_word_counts() {
        let pending = PendingResume::new();
        assert!(matches!(pending.outcome(Duration::ZERO), Outcome::Waiting));
        pending.settle(State::Known(None));
        pending.give_up();
        assert!(matches!(
            pending.outcome(Duration::ZERO),
            Outcome::Known(None)
        ));

        // Given up (the held chunks went over the bound): a late answer changes nothing.
        let pending = PendingResume::new();
        pending.give_up();
        pending.settle(State::Known(None));
        assert!(matches!(pending.outcome(Duration::ZERO), Outcome::GaveUp));
    }

    #[test]
    fn an_answer_wakes_the_waiting_sealer() {
        let pending = PendingResume::new();
        let answer = Arc::clone(&pending);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            answer.settle(State::Known(None));
        });
        let started = Instant::now();
        assert!(matches!(
            pending.outcome(Duration::from_secs(30)),
            Outcome::Known(None)
        ));
        assert!(started.elapsed() < Duration::from_secs(30));
        t.join().expect("thread");
    }
}
