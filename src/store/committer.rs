//! Group commit: one fsync for every answer that completes while the previous one runs.
//!
//! A writer bumps the write generation after its entry is in the backend and, in durable
//! mode, waits until a flush that started after its write has finished. One committer thread
//! does all flushing: while it syncs, new writers queue up behind the next generation, and the
//! next flush covers all of them at once. The cost per answer is a short wait, not an fsync
//! each; under load the fsyncs per second stay near `1 / fsync time` however many answers
//! arrive.
//!
//! In relaxed mode writers do not wait; the thread flushes every `RELAXED_INTERVAL`, which
//! bounds what a crash can lose.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::engine::BackendError;

/// How long a durable writer waits for its flush before giving up and reporting an error. A
/// disk that takes longer is failing; the answer still goes to the client (it is fine), but
/// the store says it could not keep it.
pub const DURABLE_WAIT: Duration = Duration::from_secs(5);

/// In relaxed mode, the longest a completed write waits before a flush makes it durable.
pub const RELAXED_INTERVAL: Duration = Duration::from_millis(200);

/// When an answer is made durable, as `store.durability` configures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `put` returns once the entry is fsync'd: the proxy sends the client's last byte after.
    #[default]
    Durable,
    /// `put` returns once the entry is written; a flush follows within `RELAXED_INTERVAL`.
    Relaxed,
}

/// What the committer thread and the writers share.
#[derive(Default)]
struct State {
    /// Generation of the last completed write (bumped by every writer after its write).
    written: u64,
    /// Every write up to this generation is durable.
    durable: u64,
    /// The last flush that failed covered writes up to this generation.
    failed: u64,
    /// Why that flush failed, for the writers it leaves behind.
    last_error: Option<String>,
    /// Set when the store closes: the thread does a last flush and ends.
    stop: bool,
}

/// The writers' side of the committer; the thread's side is `run`.
pub struct Committer {
    /// Which writes are written, durable or failed, and whether to stop.
    state: Mutex<State>,
    /// Signals the thread that a write is waiting (or that it should stop).
    work: Condvar,
    /// Signals writers that a flush finished (well or not).
    flushed: Condvar,
    /// `durable` (writers wait for the fsync) or `relaxed` (a flush every interval).
    mode: Durability,
}

/// Flushes the backend; the committer does not care which one (it may be swapped on reopen).
pub type Flush = Box<dyn Fn() -> Result<(), BackendError> + Send>;

impl Committer {
    /// Starts the committer thread. `flush` makes every completed write durable; `idle` runs
    /// about once a second when there is nothing to flush (housekeeping such as the integrity
    /// record and reopening a failed backend).
    pub fn start(
        mode: Durability,
        flush: Flush,
        idle: Box<dyn FnMut() + Send>,
    ) -> std::io::Result<(Arc<Self>, JoinHandle<()>)> {
        let committer =
            Arc::new(Self { state: Mutex::new(State::default()), work: Condvar::new(), flushed: Condvar::new(), mode });
        let thread = {
            let committer = committer.clone();
            std::thread::Builder::new().name("holdfast-commit".into()).spawn(move || committer.run(&flush, idle))?
        };
        Ok((committer, thread))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called after a write completed: returns its generation and wakes the thread.
    pub fn written(&self) -> u64 {
        let mut state = self.lock();
        state.written += 1;
        let generation = state.written;
        drop(state);
        if self.mode == Durability::Durable {
            self.work.notify_one();
        }
        generation
    }

    /// In durable mode, blocks until the write of `generation` is durable (or its flush
    /// failed, or `DURABLE_WAIT` passed). In relaxed mode returns at once.
    pub fn wait(&self, generation: u64) -> Result<(), BackendError> {
        if self.mode == Durability::Relaxed {
            return Ok(());
        }
        let deadline = Instant::now() + DURABLE_WAIT;
        let mut state = self.lock();
        loop {
            if state.durable >= generation {
                return Ok(());
            }
            if state.failed >= generation {
                let reason = state.last_error.clone().unwrap_or_default();
                return Err(BackendError::Io(format!("the entry was written but could not be made durable: {reason}")));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(BackendError::Io(format!(
                    "the entry was written but the disk did not confirm it within {}s",
                    DURABLE_WAIT.as_secs()
                )));
            }
            state = self.flushed.wait_timeout(state, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Asks the thread to flush what is left and end; the caller joins it.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.work.notify_one();
    }

    fn run(&self, flush: &Flush, mut idle: Box<dyn FnMut() + Send>) {
        let pause = match self.mode {
            Durability::Durable => Duration::from_secs(1),
            Durability::Relaxed => RELAXED_INTERVAL,
        };
        let mut last_idle = Instant::now();
        loop {
            let mut state = self.lock();
            if state.written == state.durable.max(state.failed) && !state.stop {
                state = self.work.wait_timeout(state, pause).unwrap_or_else(|e| e.into_inner()).0;
            }
            let (target, stop) = (state.written, state.stop);
            let pending = target > state.durable.max(state.failed);
            drop(state);
            if pending {
                // Every write numbered up to `target` finished before it was numbered, so
                // this flush, which starts now, covers all of them.
                let outcome = flush();
                let mut state = self.lock();
                match outcome {
                    Ok(()) => state.durable = state.durable.max(target),
                    Err(e) => {
                        state.failed = state.failed.max(target);
                        state.last_error = Some(e.to_string());
                    }
                }
                drop(state);
                self.flushed.notify_all();
            }
            if stop {
                return;
            }
            if last_idle.elapsed() >= Duration::from_secs(1) {
                idle();
                last_idle = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn concurrent_writers_share_flushes_and_all_become_durable() {
        let flushes = Arc::new(AtomicU64::new(0));
        let counted = flushes.clone();
        let flush: Flush = Box::new(move || {
            std::thread::sleep(Duration::from_millis(5));
            counted.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        let (committer, thread) = Committer::start(Durability::Durable, flush, Box::new(|| {})).unwrap();
        let writers: Vec<_> = (0..16)
            .map(|_| {
                let c = committer.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        let generation = c.written();
                        c.wait(generation).unwrap();
                    }
                })
            })
            .collect();
        writers.into_iter().for_each(|w| w.join().unwrap());
        committer.stop();
        thread.join().unwrap();
        let n = flushes.load(Ordering::Relaxed);
        assert!(n < 160, "160 durable writes took {n} flushes: no grouping");
    }

    #[test]
    fn a_failed_flush_fails_its_writers_and_a_later_one_recovers() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let failing = fail.clone();
        let flush: Flush = Box::new(move || {
            if failing.load(Ordering::Relaxed) {
                Err(BackendError::Io("No space left on device".into()))
            } else {
                Ok(())
            }
        });
        let (committer, thread) = Committer::start(Durability::Durable, flush, Box::new(|| {})).unwrap();
        let generation = committer.written();
        let err = committer.wait(generation).unwrap_err().to_string();
        assert!(err.contains("No space left"), "{err}");
        fail.store(false, Ordering::Relaxed);
        let generation = committer.written();
        committer.wait(generation).unwrap();
        committer.stop();
        thread.join().unwrap();
    }
}
