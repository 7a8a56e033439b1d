//! The epoch ticker: one thread per node that advances every shard engine's
//! epoch each [`epoch_tick`](crate::epoch_tick), which is how a handler's
//! time slice ends and how one that runs past `max_execution_time` is
//! interrupted.
//!
//! Control plane: one atomic increment per engine per tick, off every shard's
//! thread (a shard stuck in a looping agent cannot tick for itself). The
//! deploy check's engine is ticked only while a check runs
//! ([`ticking_while`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use wasmtime::Engine;

/// Ticks its engines until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Start ticking `engines` every `tick`.
    pub fn start(engines: Vec<Engine>, tick: std::time::Duration) -> std::io::Result<Self> {
        Self::start_placed(engines, tick, Box::new(|| {}))
    }

    /// [`Self::start`], with the thread first running `place` (to bind
    /// itself off the data shards' cores).
    pub fn start_placed(
        engines: Vec<Engine>,
        tick: std::time::Duration,
        place: Box<dyn FnOnce() + Send>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("caxton-epoch".into())
                .spawn(move || {
                    place();
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        for engine in &engines {
                            engine.increment_epoch();
                        }
                    }
                })?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

/// Run `work` while a thread ticks `engine` every `tick`; the thread ends
/// with it. For an engine that runs guest code only now and then (the
/// deploy check), where a ticker that never stops would wake its core
/// every tick for nothing.
pub fn ticking_while<T>(engine: &Engine, tick: std::time::Duration, work: impl FnOnce() -> T) -> T {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let ticker = scope.spawn(|| {
            // Parked, not asleep: the end of `work` unparks it at once.
            while !done.load(Ordering::Acquire) {
                std::thread::park_timeout(tick);
                engine.increment_epoch();
            }
        });
        let result = work();
        done.store(true, Ordering::Release);
        ticker.thread().unpark();
        result
    })
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The ticker only sleeps and increments; it cannot panic in practice.
            let _ = thread.join();
        }
    }
}
