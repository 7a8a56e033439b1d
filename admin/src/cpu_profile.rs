//! `engine profile cpu`: the engine samples itself. A profiler thread owns
//! pprof-rs's sampler (a `SIGPROF` timer on the process's CPU time that
//! unwinds whichever thread it interrupts, through the `.eh_frame` tables
//! every build keeps), so starting, stopping and symbolizing never block the
//! admin endpoint's runtime. Each sample carries its thread's name
//! (`caxton-shard-N`, the gossip and writer threads) as the pprof label
//! `thread`, and the flame graph starts each stack with it.
//!
//! Cost while it runs: at `frequency` samples per second of CPU time, each
//! sample interrupts one thread for one unwind (tens of microseconds).
//! `scripts/profiling-cost.sh` measures what that does to a loaded node's
//! latency and CPU time; its figures are in `docs/diagnostics.md`. Outside a
//! profile nothing runs.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use pprof::protos::Message as _;

/// Default samples per second of CPU time.
pub const CPU_PROFILE_FREQUENCY: u32 = 99;
/// Highest sampling rate accepted.
pub const CPU_PROFILE_FREQUENCY_MAX: u32 = 4_999;
/// A profile nobody stops ends by itself after this long.
pub const CPU_PROFILE_SECONDS_MAX: u64 = 3_600;

/// Libraries whose frames are not unwound from a signal handler: their
/// locks could deadlock the unwinder, and the vDSO's unwind tables are wrong
/// on some distributions.
const UNWIND_BLOCKLIST: [&str; 4] = ["libc", "libgcc", "pthread", "vdso"];

/// A finished profile.
#[derive(Debug)]
pub struct CpuProfile {
    /// The pprof protobuf (`go tool pprof` reads it).
    pub pprof: Vec<u8>,
    /// The flame graph, an SVG.
    pub flamegraph: Vec<u8>,
    /// Samples taken.
    pub samples: u64,
    /// Seconds it ran.
    pub seconds: f64,
    /// Its sampling rate.
    pub frequency: u32,
}

enum Command {
    Start {
        frequency: u32,
        ack: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    Stop {
        ack: tokio::sync::oneshot::Sender<Result<CpuProfile, String>>,
    },
}

/// The handle the endpoint keeps to its profiler thread.
pub(crate) struct CpuProfiler {
    commands: mpsc::Sender<Command>,
}

impl CpuProfiler {
    /// Start the (idle) profiler thread.
    pub(crate) fn spawn() -> Self {
        let (commands, inbox) = mpsc::channel();
        let started = std::thread::Builder::new()
            .name("caxton-profiler".into())
            .spawn(move || run(&inbox));
        if let Err(error) = started {
            tracing::warn!("CPU profiler not started: {error}");
        }
        Self { commands }
    }

    /// Start sampling at `frequency` Hz.
    pub(crate) async fn start(&self, frequency: u32) -> Result<(), String> {
        let (ack, answer) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::Start { frequency, ack })
            .map_err(|_| "the profiler thread is gone".to_owned())?;
        answer
            .await
            .map_err(|_| "the profiler thread is gone".to_owned())?
    }

    /// Stop sampling and build the profile.
    pub(crate) async fn stop(&self) -> Result<CpuProfile, String> {
        let (ack, answer) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::Stop { ack })
            .map_err(|_| "the profiler thread is gone".to_owned())?;
        answer
            .await
            .map_err(|_| "the profiler thread is gone".to_owned())?
    }
}

struct Running {
    guard: pprof::ProfilerGuard<'static>,
    started: Instant,
    frequency: u32,
}

fn run(inbox: &mpsc::Receiver<Command>) {
    let mut running: Option<Running> = None;
    loop {
        let command = match &running {
            Some(profile) => {
                let ends = profile.started + Duration::from_secs(CPU_PROFILE_SECONDS_MAX);
                match inbox.recv_timeout(ends.saturating_duration_since(Instant::now())) {
                    Ok(command) => command,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        tracing::warn!("CPU profile stopped after {CPU_PROFILE_SECONDS_MAX} s: nobody collected it");
                        running = None;
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            None => match inbox.recv() {
                Ok(command) => command,
                Err(_) => return,
            },
        };
        match command {
            Command::Start { frequency, ack } => {
                let result = match &running {
                    Some(profile) => Err(format!(
                        "a CPU profile is already running (for {:.0} s)",
                        profile.started.elapsed().as_secs_f64()
                    )),
                    None => pprof::ProfilerGuardBuilder::default()
                        .frequency(frequency as i32)
                        .blocklist(&UNWIND_BLOCKLIST)
                        .build()
                        .map(|guard| {
                            running = Some(Running {
                                guard,
                                started: Instant::now(),
                                frequency,
                            });
                        })
                        .map_err(|error| format!("cannot start the sampler: {error}")),
                };
                let _ = ack.send(result);
            }
            Command::Stop { ack } => {
                let result = match running.take() {
                    None => Err("no CPU profile is running".to_owned()),
                    Some(profile) => finish(&profile),
                };
                let _ = ack.send(result);
            }
        }
    }
}

fn finish(profile: &Running) -> Result<CpuProfile, String> {
    let seconds = profile.started.elapsed().as_secs_f64();
    let report = profile
        .guard
        .report()
        .build()
        .map_err(|error| format!("cannot build the report: {error}"))?;
    let samples = report.data.values().map(|&count| count.max(0) as u64).sum();
    let pprof = report
        .pprof()
        .map_err(|error| format!("cannot encode the profile: {error}"))?
        .encode_to_vec();
    let mut flamegraph = Vec::new();
    // An empty profile has no flame graph; the pprof still says so.
    if samples > 0 {
        report
            .flamegraph(&mut flamegraph)
            .map_err(|error| format!("cannot draw the flame graph: {error}"))?;
    }
    Ok(CpuProfile {
        pprof,
        flamegraph,
        samples,
        seconds,
        frequency: profile.frequency,
    })
}
