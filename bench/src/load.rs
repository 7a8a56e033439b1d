//! The open-loop load generator.
//!
//! Message `n` of a run is due at `start + n / rate`, whatever happened to
//! the messages before it: a generator that waited for answers before
//! sending more (closed loop) would send less exactly when the system is
//! slow, and its latency figures would hide the queueing (coordinated
//! omission). Latency is measured from each message's *intended* send time,
//! as wrk2 does, so a stall shows up in every message scheduled during it.
//!
//! The generator drives a [`Port`]: the way into whatever is measured (a
//! Caxton node's client port, the baseline design, a remote engine). Each
//! message carries its sequence number as its conversation id; answers quote
//! it, so no table of outstanding messages is kept.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::nanosecond_histogram;

/// One message to send.
#[derive(Clone, Copy, Debug)]
pub struct Outgoing {
    /// Its sequence number within this generator's run.
    pub sequence: u64,
    /// When it was due, on the port's clock (ns).
    pub intended_ns: u64,
}

/// What came back for a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A normal answer.
    Answered,
    /// An answer that reports failure (`failure`, `refuse`, an engine error).
    Failed,
}

/// An answer to an earlier message.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    /// The message's sequence number.
    pub sequence: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// When the answer arrived, on the port's clock (ns).
    pub at_ns: u64,
}

/// The sender refused a message at once (a full ring or mailbox): it was
/// never accepted, so it is counted, not retried.
#[derive(Clone, Copy, Debug)]
pub struct Refused;

/// The way into the system under test.
pub trait Port {
    /// The port's clock, in nanoseconds.
    fn now_ns(&self) -> u64;
    /// Send `message`; whether it expects an answer is the port's pattern.
    fn submit(&mut self, message: Outgoing) -> Result<(), Refused>;
    /// Hand every answer that has arrived to `sink`, waiting up to `wait` for
    /// the first one.
    fn poll(&mut self, wait: Duration, sink: &mut dyn FnMut(Completion));
    /// Whether messages are answered (request-reply, fan-out, pipeline) or not (one-way).
    fn expects_answers(&self) -> bool;
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunCounts {
    /// Messages the schedule called for.
    pub scheduled: u64,
    /// Messages accepted by the port.
    pub sent: u64,
    /// Refused at once.
    pub refused: u64,
    /// Answered normally.
    pub answered: u64,
    /// Answered with a failure.
    pub failed: u64,
    /// Sent, expected an answer, and got none before the drain ended.
    pub timed_out: u64,
}

impl RunCounts {
    /// Refusals, failures and timeouts as a share of what was scheduled.
    pub fn error_ratio(&self) -> f64 {
        if self.scheduled == 0 {
            0.0
        } else {
            (self.refused + self.failed + self.timed_out) as f64 / self.scheduled as f64
        }
    }

    /// Add `other`'s counts.
    pub fn add(&mut self, other: &Self) {
        self.scheduled += other.scheduled;
        self.sent += other.sent;
        self.refused += other.refused;
        self.answered += other.answered;
        self.failed += other.failed;
        self.timed_out += other.timed_out;
    }
}

/// A progress report from a generator, sent about every
/// [`PROGRESS_EVERY`] while it runs.
pub struct Progress {
    /// Messages scheduled so far by this generator since its last report.
    pub scheduled: u64,
    /// Answers (any outcome) since its last report.
    pub completed: u64,
    /// Latencies recorded since its last report.
    pub latency: Histogram<u64>,
}

/// How often generators report progress.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// A generator's result.
pub struct GeneratorResult {
    /// Its counts.
    pub counts: RunCounts,
    /// Intended send time to answer, for every answered or failed message.
    pub latency: Histogram<u64>,
    /// How late each accepted message went out: the generator's own lag
    /// behind its schedule, which that message's latency already includes.
    pub lateness: Histogram<u64>,
}

/// Run one open-loop generator on `port`: `scheduled` messages at `rate` per
/// second, then wait up to `drain` for outstanding answers.
pub fn run_open_loop(
    port: &mut dyn Port,
    rate: f64,
    scheduled: u64,
    drain: Duration,
    progress: Option<&std::sync::mpsc::Sender<Progress>>,
) -> GeneratorResult {
    // A generator that wakes late sends late.
    caxton_numa::binding::tighten_timer_slack();
    let interval_ns = 1e9 / rate.max(1e-9);
    let start_ns = port.now_ns();
    let intended = |sequence: u64| start_ns + (sequence as f64 * interval_ns) as u64;
    let mut counts = RunCounts {
        scheduled,
        sent: 0,
        refused: 0,
        answered: 0,
        failed: 0,
        timed_out: 0,
    };
    let mut latency = nanosecond_histogram();
    let mut lateness = nanosecond_histogram();
    let mut window = nanosecond_histogram();
    let mut reported_scheduled = 0u64;
    let mut reported_completed = 0u64;
    // On the port's clock: the loop reads it anyway, and a second clock per
    // turn cost the generator a quarter of its time on the 2-core VM.
    let mut last_report_ns = start_ns;
    let mut next = 0u64;
    let expects_answers = port.expects_answers();
    let record = |completion: Completion,
                  counts: &mut RunCounts,
                  latency: &mut Histogram<u64>,
                  window: &mut Histogram<u64>| {
        match completion.outcome {
            Outcome::Answered => counts.answered += 1,
            Outcome::Failed => counts.failed += 1,
        }
        let nanos = completion
            .at_ns
            .saturating_sub(intended(completion.sequence))
            .max(1);
        latency.saturating_record(nanos);
        window.saturating_record(nanos);
    };
    let every_ns = PROGRESS_EVERY.as_nanos() as u64;
    let mut report =
        |now_ns: u64, done: u64, counts: &RunCounts, window: &mut Histogram<u64>, force: bool| {
            let Some(progress) = progress else { return };
            if !force && now_ns.saturating_sub(last_report_ns) < every_ns {
                return;
            }
            last_report_ns = now_ns;
            let completed = counts.answered + counts.failed;
            let _ = progress.send(Progress {
                scheduled: done - reported_scheduled,
                completed: completed - reported_completed,
                latency: std::mem::replace(window, nanosecond_histogram()),
            });
            reported_scheduled = done;
            reported_completed = completed;
        };
    while next < scheduled {
        let now = port.now_ns();
        // Everything due by now goes out now, however late the loop is. Its
        // lateness is taken from the batch's start: a clock read per send
        // would slow the generator at the rates that matter.
        while next < scheduled && intended(next) <= now {
            match port.submit(Outgoing {
                sequence: next,
                intended_ns: intended(next),
            }) {
                Ok(()) => {
                    counts.sent += 1;
                    lateness.saturating_record((now - intended(next)).max(1));
                }
                Err(Refused) => counts.refused += 1,
            }
            next += 1;
        }
        // The gap to the next message, from the batch's start: a gap under
        // 20 µs then is under 20 µs now too, and needs no second reading.
        let mut wait_ns = if next < scheduled {
            intended(next).saturating_sub(now)
        } else {
            0
        };
        if wait_ns >= 20_000 {
            wait_ns = intended(next).saturating_sub(port.now_ns());
        }
        // Gaps under 20 µs are polled through; longer ones park in the port
        // (waking late only batches sends: latency counts from the schedule).
        let wait = if wait_ns < 20_000 {
            Duration::ZERO
        } else {
            Duration::from_nanos(wait_ns - 5_000)
        };
        port.poll(wait, &mut |completion| {
            record(completion, &mut counts, &mut latency, &mut window)
        });
        report(now, next, &counts, &mut window, false);
    }
    if expects_answers {
        // On the port's clock, as the schedule is.
        let drain_until = port.now_ns().saturating_add(drain.as_nanos() as u64);
        loop {
            let now = port.now_ns();
            if counts.answered + counts.failed >= counts.sent || now >= drain_until {
                break;
            }
            let wait = Duration::from_nanos(drain_until - now).min(Duration::from_millis(50));
            port.poll(wait, &mut |completion| {
                record(completion, &mut counts, &mut latency, &mut window)
            });
            report(port.now_ns(), next, &counts, &mut window, false);
        }
        counts.timed_out = counts.sent - (counts.answered + counts.failed).min(counts.sent);
    }
    report(port.now_ns(), next, &counts, &mut window, true);
    GeneratorResult {
        counts,
        latency,
        lateness,
    }
}

/// The messages `generators` generators schedule for `rate` per second over
/// `duration`, generator `index`'s share: together exactly what one would,
/// however the count divides.
pub fn share_of_schedule(rate: f64, duration: Duration, generators: usize, index: usize) -> u64 {
    let total = (rate * duration.as_secs_f64()).floor() as u64;
    let generators = generators.max(1) as u64;
    let index = index as u64;
    total * (index + 1) / generators - total * index / generators
}

/// Wait for every generator and add up what they did.
pub fn join_generators(
    threads: Vec<std::thread::JoinHandle<GeneratorResult>>,
) -> Result<GeneratorResult, String> {
    let mut total = GeneratorResult {
        counts: RunCounts::default(),
        latency: nanosecond_histogram(),
        lateness: nanosecond_histogram(),
    };
    for thread in threads {
        let result = thread
            .join()
            .map_err(|_| "a generator panicked".to_owned())?;
        total.counts.add(&result.counts);
        // Every generator records with the same bounds: the merges cannot fail.
        let _ = total.latency.add(&result.latency);
        let _ = total.lateness.add(&result.lateness);
    }
    Ok(total)
}

/// Hand everything `receiver` holds to `each`, waiting up to `wait` for the first.
pub fn drain_channel<T>(
    receiver: &std::sync::mpsc::Receiver<T>,
    wait: Duration,
    mut each: impl FnMut(T),
) {
    let mut next = if wait.is_zero() {
        receiver.try_recv().ok()
    } else {
        receiver.recv_timeout(wait).ok()
    };
    while let Some(item) = next {
        each(item);
        next = receiver.try_recv().ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port on a virtual clock that answers everything at once, except
    /// that it holds every answer back while the clock is inside `stall`
    /// (ns), and that its `submit` of message `block_at` takes 100 ms (the
    /// generator itself falls behind then, as one does when its thread is
    /// held off its CPU). Time passes only in the port: a poll takes what it
    /// was allowed to wait (at least a microsecond), so the figures are
    /// exact on any machine, however busy.
    struct StallingPort {
        now: u64,
        stall: std::ops::Range<u64>,
        block_at: Option<u64>,
        held: Vec<u64>,
    }

    impl StallingPort {
        fn new(stall: std::ops::Range<u64>, block_at: Option<u64>) -> Self {
            Self {
                now: 0,
                stall,
                block_at,
                held: Vec::new(),
            }
        }
    }

    impl Port for StallingPort {
        fn now_ns(&self) -> u64 {
            self.now
        }
        fn submit(&mut self, message: Outgoing) -> Result<(), Refused> {
            if self.block_at == Some(message.sequence) {
                self.now += 100_000_000;
            }
            self.held.push(message.sequence);
            Ok(())
        }
        fn poll(&mut self, wait: Duration, sink: &mut dyn FnMut(Completion)) {
            if !self.stall.contains(&self.now) {
                for sequence in self.held.drain(..) {
                    sink(Completion {
                        sequence,
                        outcome: Outcome::Answered,
                        at_ns: self.now,
                    });
                }
            }
            self.now += (wait.as_nanos() as u64).max(1_000);
        }
        fn expects_answers(&self) -> bool {
            true
        }
    }

    /// 2,000 messages a second for a second, with 2 s to drain.
    fn two_thousand_in_a_second(port: &mut StallingPort) -> GeneratorResult {
        run_open_loop(port, 2_000.0, 2_000, Duration::from_secs(2), None)
    }

    fn over_50_ms(histogram: &Histogram<u64>) -> u64 {
        histogram.len() - histogram.count_between(0, 50_000_000)
    }

    #[test]
    fn generators_share_the_schedule_exactly() {
        let shares = |generators: usize| -> Vec<u64> {
            (0..generators)
                .map(|index| {
                    share_of_schedule(2_000.0, Duration::from_millis(500), generators, index)
                })
                .collect()
        };
        assert_eq!(shares(1), [1000]);
        assert_eq!(shares(3), [333, 333, 334]);
        assert_eq!(shares(7).iter().sum::<u64>(), 1000);
    }

    #[test]
    fn a_stall_grows_latency_and_leaves_the_schedule_alone() {
        let mut port = StallingPort::new(200_000_000..500_000_000, None);
        let result = two_thousand_in_a_second(&mut port);
        let counts = &result.counts;
        // The schedule: 2,000 messages, all sent although nothing was answered for 300 ms.
        assert_eq!(counts.scheduled, 2_000);
        assert_eq!(counts.sent, 2_000);
        assert_eq!(counts.answered, 2_000);
        assert_eq!(counts.refused + counts.failed + counts.timed_out, 0);
        // Messages due at the start of the stall waited for all of it.
        assert!(
            result.latency.max() >= 250_000_000,
            "max {}",
            result.latency.max()
        );
        // Messages due in the stall's first 250 ms (500 of them) waited
        // over 50 ms for its end; the one due at its 250th ms, about 50.
        let stalled = over_50_ms(&result.latency);
        assert!(
            (500..=501).contains(&stalled),
            "{stalled} messages waited over 50 ms"
        );
        // The stall was the port's: the generator itself kept its schedule.
        assert_eq!(result.lateness.len(), 2_000);
        let late = over_50_ms(&result.lateness);
        assert_eq!(late, 0, "{late} messages went out over 50 ms late");
    }

    #[test]
    fn a_generator_held_up_counts_its_own_lateness() {
        let mut port = StallingPort::new(0..0, Some(500));
        let result = two_thousand_in_a_second(&mut port);
        assert_eq!(result.counts.answered, 2_000);
        // The 200 messages due during the 100 ms block went out late, by up
        // to 100 ms; those due in its first half (100 of them) by over 50 ms.
        let late = over_50_ms(&result.lateness);
        assert!(
            (99..=101).contains(&late),
            "{late} messages went out over 50 ms late"
        );
        assert!(
            result.lateness.max() >= 95_000_000,
            "max {}",
            result.lateness.max()
        );
        // Their lateness is inside their latency too.
        assert!(result.latency.max() >= result.lateness.max());
    }
}
