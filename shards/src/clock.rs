//! The node clock: monotonic nanoseconds since the node started. Every shard
//! and client of a node reads the same origin, so a timestamp taken on one
//! shard means the same on another (deadlines, routing latency).
//!
//! # Reading it cheaply
//! The host times the end of every handler, so a shard reads this clock
//! once per message. `Instant::now` goes through the vDSO's
//! `clock_gettime` (about 24 ns here, and 12% of a shard's time under
//! agent-to-agent load); reading the CPU's time-stamp counter takes about
//! 8 ns. The counter is used when the kernel itself keeps time with it
//! (`tsc` is the current clocksource: the kernel has checked that the
//! counter is invariant and in step across CPUs) on an x86-64 CPU that says
//! its counter is invariant. Its rate is measured once per process against
//! the OS clock, over [`CALIBRATION`]. Anywhere else the clock reads
//! `Instant`, as before.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the counter's rate is measured for against the OS clock: the
/// reads at both ends are each off by tens of nanoseconds, a few parts per
/// million of this.
pub const CALIBRATION: Duration = Duration::from_millis(10);

/// See the module docs. `Copy`: each thread holds its own.
#[derive(Clone, Copy, Debug)]
pub struct NodeClock {
    origin: Instant,
    source: Source,
}

/// What the clock reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// `Instant` (the vDSO's `clock_gettime`).
    Os,
    /// The time-stamp counter: ticks since the origin, times nanoseconds
    /// per tick in 32.32 fixed point.
    Counter {
        origin_ticks: u64,
        ns_per_tick_q32: u64,
    },
}

impl NodeClock {
    /// A clock starting now: on the time-stamp counter where the module
    /// docs allow it, else on `Instant`.
    pub fn start() -> Self {
        match counter_rate() {
            Some(ns_per_tick_q32) => Self {
                origin: Instant::now(),
                source: Source::Counter {
                    origin_ticks: counter::ticks(),
                    ns_per_tick_q32,
                },
            },
            None => Self::on_os_clock(),
        }
    }

    /// A clock starting now that reads `Instant` whatever the machine.
    pub fn on_os_clock() -> Self {
        Self {
            origin: Instant::now(),
            source: Source::Os,
        }
    }

    /// Whether it reads the time-stamp counter.
    pub fn reads_counter(&self) -> bool {
        matches!(self.source, Source::Counter { .. })
    }

    /// Nanoseconds since the node started.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        match self.source {
            Source::Counter {
                origin_ticks,
                ns_per_tick_q32,
            } => {
                let ticks = counter::ticks().saturating_sub(origin_ticks);
                u64::try_from((u128::from(ticks) * u128::from(ns_per_tick_q32)) >> 32)
                    .unwrap_or(u64::MAX)
            }
            Source::Os => u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX),
        }
    }
}

/// Counter ticks two readings of it may be apart around an `Instant` read
/// for the pair to count: a read takes tens of ticks, a preemption many
/// thousands.
const PAIR_TICKS_MAX: u64 = 20_000;

/// An `Instant` and the counter at the same moment: the counter read just
/// before and just after the `Instant`, their midpoint kept only when the
/// two are close (the thread was not preempted in between, which on a busy
/// machine would skew the measured rate by the length of the preemption).
fn paired_reading() -> Option<(Instant, u64)> {
    (0..1_000).find_map(|_| {
        let before = counter::ticks();
        let instant = Instant::now();
        let after = counter::ticks();
        let apart = after.checked_sub(before)?;
        (apart <= PAIR_TICKS_MAX).then_some((instant, before + apart / 2))
    })
}

/// Nanoseconds per counter tick (32.32 fixed point), measured once per
/// process; `None` where the counter is not to be trusted.
fn counter_rate() -> Option<u64> {
    static RATE: OnceLock<Option<u64>> = OnceLock::new();
    *RATE.get_or_init(|| {
        if !counter::trusted() {
            return None;
        }
        let (started, first) = paired_reading()?;
        std::thread::sleep(CALIBRATION);
        let (ended, last) = paired_reading()?;
        let ns = ended.duration_since(started).as_nanos();
        let ticks = u128::from(last.checked_sub(first)?);
        // A counter between 100 MHz and 100 GHz, or something is wrong.
        if !(ns / 10..=ns * 100).contains(&ticks) || ticks == 0 {
            return None;
        }
        u64::try_from((ns << 32) / ticks).ok()
    })
}

#[cfg(target_arch = "x86_64")]
mod counter {
    /// The time-stamp counter.
    #[inline]
    pub fn ticks() -> u64 {
        // SAFETY: RDTSC exists on every x86-64 CPU and has no preconditions.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// An invariant counter (CPUID 0x8000_0007, EDX bit 8) that the
    /// kernel keeps time with.
    pub fn trusted() -> bool {
        // Leaves past the highest one reported are not read.
        let highest = core::arch::x86_64::__cpuid(0x8000_0000).eax;
        let invariant =
            highest >= 0x8000_0007 && core::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0;
        invariant
            && std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .is_ok_and(|source| source.trim() == "tsc")
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod counter {
    pub fn ticks() -> u64 {
        0
    }

    pub fn trusted() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both sources measure the same span alike: the counter's rate is
    /// right, and a clock never runs backwards.
    #[test]
    fn the_counter_clock_keeps_time_with_the_os_clock() {
        let clock = NodeClock::start();
        let os = NodeClock::on_os_clock();
        if !clock.reads_counter() {
            eprintln!("this machine's kernel does not keep time with an invariant TSC: only the OS clock is checked");
        }
        let (counter_before, os_before) = (clock.now_ns(), os.now_ns());
        let mut last = counter_before;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(50) {
            let now = clock.now_ns();
            assert!(now >= last, "the clock went back from {last} to {now}");
            last = now;
        }
        let (counter_span, os_span) = (clock.now_ns() - counter_before, os.now_ns() - os_before);
        // The two reads at each end are not simultaneous (a preemption
        // between them skews one end), so the bound is loose; a wrong rate
        // (a counter taken for 1 GHz at 3 GHz) is off by far more.
        let off = counter_span.abs_diff(os_span);
        assert!(
            off < os_span / 10 + 2_000_000,
            "counter {counter_span} ns against OS {os_span} ns"
        );
    }
}
