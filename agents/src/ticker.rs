//! The epoch ticker: one thread per node that advances every shard engine's
//! epoch each [`epoch_tick`](crate::epoch_tick), which is how a handler's
//! time slice ends and how one that runs past `max_execution_time` is
//! interrupted.
//!
//! Control plane: one atomic increment per engine per tick, off every shard's
//! thread (a shard stuck in a looping agent cannot tick for itself). It
//! parks while every data shard sleeps ([`TickDemand`]), so an idle node
//! does not wake a core every tick; the deploy check's engine is ticked only
//! while a check runs ([`ticking_while`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use wasmtime::Engine;

/// Ticks a ticker makes with every shard asleep before it parks too. A
/// shard that wakes within them finds it still ticking; later, it wakes
/// the ticker itself ([`TickDemand::shard_awake`]).
pub const QUIET_TICKS_BEFORE_PARK: u32 = 8;

/// One shard's flag, on a cache line of its own: only that shard writes it.
#[repr(align(128))]
struct ShardFlag(AtomicBool);

/// Whether the ticker's ticks are wanted: each data shard says when it
/// parks and when it wakes, and the ticker parks once every shard has slept
/// for [`QUIET_TICKS_BEFORE_PARK`] ticks. Guest code runs only on an awake
/// shard, so a handler is always timed.
///
/// Not shared state between shards: each shard writes only its own flag
/// (at its park and wake, never per message), and only the ticker reads
/// them all.
pub struct TickDemand {
    awake: Box<[ShardFlag]>,
    /// Set by the ticker before it parks; a waking shard that sees it
    /// unparks the ticker. Both sides store, then load, sequentially
    /// consistent: one of them always sees the other.
    parked: AtomicBool,
    ticker: OnceLock<Thread>,
    /// Ticks made, for tests and diagnostics.
    ticks: AtomicU64,
}

impl TickDemand {
    /// Demand for `shards` data shards, each awake until it first parks.
    pub fn new(shards: usize) -> Arc<Self> {
        Arc::new(Self {
            awake: (0..shards)
                .map(|_| ShardFlag(AtomicBool::new(true)))
                .collect(),
            parked: AtomicBool::new(false),
            ticker: OnceLock::new(),
            ticks: AtomicU64::new(0),
        })
    }

    /// Shard `shard` is about to park: it runs no guest code until it wakes.
    pub fn shard_asleep(&self, shard: usize) {
        if let Some(flag) = self.awake.get(shard) {
            flag.0.store(false, Ordering::Release);
        }
    }

    /// Shard `shard` woke: the ticker ticks again, woken if it had parked.
    pub fn shard_awake(&self, shard: usize) {
        if let Some(flag) = self.awake.get(shard) {
            flag.0.store(true, Ordering::SeqCst);
        }
        if self.parked.load(Ordering::SeqCst) {
            if let Some(ticker) = self.ticker.get() {
                ticker.unpark();
            }
        }
    }

    /// Whether any shard is awake.
    fn any_awake(&self) -> bool {
        self.awake.iter().any(|flag| flag.0.load(Ordering::SeqCst))
    }

    /// Ticks the ticker has made.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Whether the ticker is parked (every shard asleep for a while).
    pub fn ticker_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }
}

/// Ticks its engines until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Start ticking `engines` every `tick`, for as long as it lives.
    pub fn start(engines: Vec<Engine>, tick: Duration) -> std::io::Result<Self> {
        Self::start_placed(engines, tick, None, Box::new(|| {}))
    }

    /// [`Self::start`], with the thread first running `place` (to bind
    /// itself off the data shards' cores), and, with `demand`, parked while
    /// every shard sleeps.
    pub fn start_placed(
        engines: Vec<Engine>,
        tick: Duration,
        demand: Option<Arc<TickDemand>>,
        place: Box<dyn FnOnce() + Send>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("caxton-epoch".into())
                .spawn(move || {
                    place();
                    tick_until_stopped(&engines, tick, demand.as_deref(), &stop);
                })?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

/// The ticker's loop: tick every `tick`; with `demand`, park once every
/// shard has slept for [`QUIET_TICKS_BEFORE_PARK`] ticks, until one wakes.
fn tick_until_stopped(
    engines: &[Engine],
    tick: Duration,
    demand: Option<&TickDemand>,
    stop: &AtomicBool,
) {
    if let Some(demand) = demand {
        let _ = demand.ticker.set(std::thread::current());
    }
    let mut quiet = 0;
    let mut due = Instant::now() + tick;
    while !stop.load(Ordering::Acquire) {
        // Wait out the tick, even when unparked early (a spurious return,
        // or a shard's unpark that came as the ticker had already woken):
        // an early tick would end some handler's slice early.
        loop {
            let now = Instant::now();
            if now >= due || stop.load(Ordering::Acquire) {
                break;
            }
            std::thread::park_timeout(due - now);
        }
        due = next_tick_due(due, Instant::now(), tick);
        for engine in engines {
            engine.increment_epoch();
        }
        let Some(demand) = demand else {
            continue;
        };
        demand.ticks.fetch_add(1, Ordering::Relaxed);
        if demand.any_awake() {
            quiet = 0;
            continue;
        }
        quiet += 1;
        if quiet < QUIET_TICKS_BEFORE_PARK {
            continue;
        }
        demand.parked.store(true, Ordering::SeqCst);
        // Park (again after a spurious return) while every shard sleeps;
        // a shard that woke before the flag was up is seen here.
        while !demand.any_awake() && !stop.load(Ordering::Acquire) {
            std::thread::park();
        }
        demand.parked.store(false, Ordering::SeqCst);
        quiet = 0;
        // A whole tick from the wake: the schedule restarts.
        due = Instant::now() + tick;
    }
}

/// When the tick after one due at `due` and made at `now` is due: on a
/// fixed schedule, `tick` after `due`, so a wake-up that comes late (a
/// sleep overshoots by its timer slack and the wake's latency, tens of µs)
/// does not push every later tick back, and slices keep their length
/// (`time_slice` is a whole number of ticks). A ticker late by a whole tick
/// or more (descheduled) starts the schedule again from `now` rather than
/// catching up with ticks in a burst, which would end slices early.
fn next_tick_due(due: Instant, now: Instant, tick: Duration) -> Instant {
    let next = due + tick;
    if next > now {
        next
    } else {
        now + tick
    }
}

/// Run `work` while a thread ticks `engine` every `tick`; the thread ends
/// with it. For an engine that runs guest code only now and then (the
/// deploy check), where a ticker that never stops would wake its core
/// every tick for nothing.
pub fn ticking_while<T>(engine: &Engine, tick: Duration, work: impl FnOnce() -> T) -> T {
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
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // The ticker only sleeps and increments; it cannot panic in practice.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wait up to 10 s for `done`.
    fn eventually(what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_ticker_parks_while_every_shard_sleeps_and_a_waking_shard_restarts_it() {
        let demand = TickDemand::new(2);
        let _ticker = EpochTicker::start_placed(
            Vec::new(),
            Duration::from_micros(200),
            Some(Arc::clone(&demand)),
            Box::new(|| {}),
        )
        .expect("a ticker");
        // Shards start awake: it ticks, and does not park while one is.
        eventually("ticks while shards are awake", || demand.ticks() > 20);
        demand.shard_asleep(0);
        let before = demand.ticks();
        eventually("ticks while shard 1 is awake", || {
            demand.ticks() > before + 20
        });
        assert!(!demand.ticker_parked());
        // Both asleep: it parks after its quiet ticks, and then ticks no more.
        demand.shard_asleep(1);
        eventually("parks once both sleep", || demand.ticker_parked());
        let parked_at = demand.ticks();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(demand.ticks(), parked_at, "no tick while parked");
        // One wakes: the ticker ticks again at once.
        demand.shard_awake(1);
        eventually("ticks again once a shard wakes", || {
            demand.ticks() > parked_at + 5
        });
    }

    #[test]
    fn ticks_keep_a_fixed_schedule_and_a_ticker_far_behind_starts_it_again() {
        let tick = Duration::from_micros(250);
        let start = Instant::now();
        let at = |micros: u64| start + Duration::from_micros(micros);
        // On time: the next is one tick on.
        assert_eq!(next_tick_due(at(250), at(250), tick), at(500));
        // Made 60 µs late: the next stays on the schedule, 190 µs away.
        assert_eq!(next_tick_due(at(250), at(310), tick), at(500));
        // Made a whole tick late or more: no burst, a whole tick from now.
        assert_eq!(next_tick_due(at(250), at(500), tick), at(750));
        assert_eq!(next_tick_due(at(250), at(1_000), tick), at(1_250));
    }

    #[test]
    fn dropping_a_ticker_ends_its_thread_without_waiting_for_its_tick() {
        let engine =
            Engine::new(wasmtime::Config::new().epoch_interruption(true)).expect("an engine");
        // A tick of an hour: the drop unparks the thread rather than waiting it out.
        let ticker = EpochTicker::start(vec![engine], Duration::from_secs(3600)).expect("a ticker");
        let start = Instant::now();
        drop(ticker);
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the drop waited for the tick"
        );
    }
}
