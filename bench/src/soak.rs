//! The soak: a running engine with persistence under a steady, mixed,
//! open-loop load while faults are injected on a schedule, then the books
//! are checked.
//!
//! Load: operations are due at a fixed rate, and each is sent when it is
//! due whether or not earlier ones were answered (open loop; a few worker
//! threads share the schedule). The mix, in turn: request-reply to `echo`,
//! a two-hop pipeline (`forwarder`, then `echo`), a fan-out over two echoes,
//! durable one-way sends to `tally` (acknowledged once stored), and a
//! message to an agent that traps, loops or grabs memory. Latency is taken
//! from the moment an operation was due, so a stall shows in it instead of
//! slowing the load down.
//!
//! Faults, on their own schedules: those misbehaving agents; an agent
//! undeployed and redeployed under load; a full data directory (it lives on
//! a size-limited tmpfs, which a ballast file fills for a while); and the
//! engine killed with SIGKILL and restarted on the same data directory.
//!
//! At the end: every acknowledged durable message was handled (`tally`
//! counts each key at least as often as sends of it were acknowledged), the
//! request-replies add up (sent = answered + failed + refused + timed out +
//! unreachable), every shard still serves, and resident memory stays flat:
//! each process lifetime's peak, after the first third of the run, within
//! 10% of the first such peak.

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use caxton_admin::AdminClient;
use hdrhistogram::Histogram;
use hyper::Method;
use serde_json::{json, Value};

/// What to soak.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// The `engine` binary.
    pub engine: PathBuf,
    /// How long.
    pub duration: Duration,
    /// Where the data directory, the HDR logs and the summary go.
    pub output: PathBuf,
    /// Time between SIGKILLs of the engine.
    pub kill_every: Duration,
    /// Time between undeploy-redeploy cycles.
    pub redeploy_every: Duration,
    /// Operations due per second (open loop).
    pub rate: u32,
    /// Time between full-data-directory episodes, and how long each lasts;
    /// `None` leaves the data directory on the output's file system.
    pub fill: Option<(Duration, Duration)>,
}

/// Distinct keys the durable sends count under in `tally`, which holds at
/// most 4,096 keys per shard (`caxton_agents::abi::STATE_KEYS_MAX`).
const DURABLE_KEYS: usize = 1000;
/// Size of the tmpfs the data directory lives on when it is filled.
const DATA_FILE_SYSTEM_MIB: u64 = 128;
/// Worker threads sending the scheduled operations (as many as the admin
/// endpoint's smallest send pool, so the endpoint is not the bottleneck).
const WORKERS: usize = 4;

/// One operation of the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Echo,
    Pipeline,
    FanOut,
    Durable,
    Fault,
}

/// The load's mix: the operation of tick `n` is `MIX[n % MIX.len()]`.
const MIX: [Operation; 8] = [
    Operation::Echo,
    Operation::Durable,
    Operation::Pipeline,
    Operation::Durable,
    Operation::FanOut,
    Operation::Durable,
    Operation::Echo,
    Operation::Fault,
];

/// An acknowledged durable key that `tally` counted fewer times than its
/// acknowledged sends (plus the final query).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The key's number (`d-N`).
    pub key: usize,
    /// Sends of it the engine acknowledged.
    pub acknowledged: u32,
    /// `tally`'s count when asked at the end (including that query), or
    /// `None` when it gave no count.
    pub counted: Option<u32>,
}

/// One reading of the engine's resident memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemorySample {
    /// Seconds since the soak began.
    pub at: f64,
    /// Restarts before this reading: samples of one process share it.
    pub lifetime: u64,
    /// Resident bytes.
    pub bytes: u64,
}

/// What the soak saw.
#[derive(Clone, Debug)]
pub struct SoakReport {
    /// Request-replies sent (echo, pipeline, fan-out).
    pub sent: u64,
    /// Answered with `inform`.
    pub answered: u64,
    /// Answered with an error the engine chose (failure, unknown agent).
    pub failed: u64,
    /// Refused (full rings or queues, a busy admin endpoint).
    pub refused: u64,
    /// Timed out waiting.
    pub timed_out: u64,
    /// Not sent: the engine was down (between a kill and its restart).
    pub unreachable: u64,
    /// Durable sends tried.
    pub durable_sent: u64,
    /// Durable sends acknowledged (stored).
    pub durable_acknowledged: u64,
    /// Durable sends the engine refused to store (a full disk among them).
    pub durable_refused: u64,
    /// Acknowledged durable keys counted short at the end.
    pub durable_lost: Vec<Shortfall>,
    /// Fault messages sent to the trapping, looping and grabbing agents.
    pub faults_sent: u64,
    /// Undeploy-redeploy cycles.
    pub redeploys: u64,
    /// SIGKILLs and restarts.
    pub restarts: u64,
    /// Full-data-directory episodes, and the durable sends refused during them.
    pub fills: u64,
    /// Durable sends refused while the data directory was full.
    pub refused_while_full: u64,
    /// Durable sends acknowledged after a full episode ended.
    pub acknowledged_after_full: u64,
    /// Operations that were due but not sent by the end (the load fell behind).
    pub behind: u64,
    /// Latency of request-replies from the moment each was due, in µs.
    pub latency: Histogram<u64>,
    /// Resident memory over time.
    pub memory: Vec<MemorySample>,
    /// Shards that handled nothing in the final check.
    pub idle_shards: Vec<usize>,
}

impl Default for SoakReport {
    fn default() -> Self {
        Self {
            sent: 0,
            answered: 0,
            failed: 0,
            refused: 0,
            timed_out: 0,
            unreachable: 0,
            durable_sent: 0,
            durable_acknowledged: 0,
            durable_refused: 0,
            durable_lost: Vec::new(),
            faults_sent: 0,
            redeploys: 0,
            restarts: 0,
            fills: 0,
            refused_while_full: 0,
            acknowledged_after_full: 0,
            behind: 0,
            latency: latency_histogram(),
            memory: Vec::new(),
            idle_shards: Vec::new(),
        }
    }
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

/// Each process lifetime's peak resident memory, in order: (lifetime, first
/// sample's time, peak bytes).
fn lifetime_peaks(memory: &[MemorySample]) -> Vec<(u64, f64, u64)> {
    let mut peaks: Vec<(u64, f64, u64)> = Vec::new();
    for sample in memory {
        match peaks.last_mut() {
            Some(last) if last.0 == sample.lifetime => last.2 = last.2.max(sample.bytes),
            _ => peaks.push((sample.lifetime, sample.at, sample.bytes)),
        }
    }
    peaks
}

/// How resident memory behaved after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryVerdict {
    /// Within 10% of the first reading compared.
    Flat,
    /// More than 10% above it.
    Grew,
    /// Fewer than two readings to compare, or a reading of nothing (the
    /// node did not answer with its resident memory): no verdict.
    Unmeasured,
}

impl SoakReport {
    /// Every request-reply is accounted for.
    pub fn counts_add_up(&self) -> bool {
        self.sent == self.answered + self.failed + self.refused + self.timed_out + self.unreachable
    }

    /// Resident memory after warm-up: (first peak, highest peak, verdict).
    ///
    /// A SIGKILL restart starts a fresh process with its own warm-up, so
    /// readings are compared lifetime by lifetime: the peak of each process
    /// that started after the first third of the run (or, with no restart
    /// then, the readings of the one that runs through it) must stay within
    /// 10% of the first of them. The last lifetime, cut short by the end,
    /// counts only when it is the only one.
    pub fn memory_flat(&self) -> (u64, u64, MemoryVerdict) {
        let Some(end) = self.memory.last().map(|sample| sample.at) else {
            return (0, 0, MemoryVerdict::Unmeasured);
        };
        let peaks = lifetime_peaks(&self.memory);
        let mut considered: Vec<u64> = peaks
            .iter()
            .filter(|(_, began, _)| *began >= end / 3.0)
            .map(|(_, _, peak)| *peak)
            .collect();
        if considered.len() > 1 {
            considered.pop();
        }
        if considered.len() < 2 {
            // One process over the stretch: its own readings after warm-up.
            considered = self
                .memory
                .iter()
                .filter(|sample| sample.at >= end / 3.0)
                .map(|sample| sample.bytes)
                .collect();
        }
        let first = considered.first().copied().unwrap_or(0);
        let max = considered.iter().copied().max().unwrap_or(0);
        let verdict = if considered.len() < 2 || considered.contains(&0) {
            MemoryVerdict::Unmeasured
        } else if max as f64 <= first as f64 * 1.10 {
            MemoryVerdict::Flat
        } else {
            MemoryVerdict::Grew
        };
        (first, max, verdict)
    }

    /// Nothing acknowledged was lost, the counts add up, every shard serves
    /// and memory stayed flat.
    pub fn passed(&self) -> bool {
        self.durable_lost.is_empty()
            && self.counts_add_up()
            && self.idle_shards.is_empty()
            && self.memory_flat().2 == MemoryVerdict::Flat
    }

    /// The summary as text.
    pub fn summary(&self) -> String {
        let (first, max, flat) = self.memory_flat();
        let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
        let quantile = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "request-reply: sent {} = answered {} + failed {} + refused {} + timed out {} + engine down {} ({})\n\
             latency from when due: P50 {:.2} ms, P99 {:.2} ms, P99.9 {:.2} ms, max {:.2} ms; {} operations behind at the end\n\
             durable: {} sent, {} acknowledged, {} refused, {} unanswered (engine down or timed out); {} keys counted short{}\n\
             faults: {} messages to trapping, looping and grabbing agents, {} redeploys, {} SIGKILL restarts\n\
             full data directory: {} episodes, {} durable sends refused while full, {} acknowledged after\n\
             resident memory after warm-up: {:.1} MiB first, {:.1} MiB at most ({})\n\
             shards: {}\n\
             verdict: {}\n",
            self.sent,
            self.answered,
            self.failed,
            self.refused,
            self.timed_out,
            self.unreachable,
            if self.counts_add_up() { "adds up" } else { "DOES NOT ADD UP" },
            quantile(0.5),
            quantile(0.99),
            quantile(0.999),
            self.latency.max() as f64 / 1000.0,
            self.behind,
            self.durable_sent,
            self.durable_acknowledged,
            self.durable_refused,
            self.durable_sent
                .saturating_sub(self.durable_acknowledged + self.durable_refused),
            self.durable_lost.len(),
            self.durable_lost.first().map_or(String::new(), |shortfall| format!(
                " (first: d-{} acknowledged {} times, counted {:?})",
                shortfall.key, shortfall.acknowledged, shortfall.counted
            )),
            self.faults_sent,
            self.redeploys,
            self.restarts,
            self.fills,
            self.refused_while_full,
            self.acknowledged_after_full,
            mib(first),
            mib(max),
            match flat {
                MemoryVerdict::Flat => "flat within 10%",
                MemoryVerdict::Grew => "GREW more than 10%",
                MemoryVerdict::Unmeasured => "UNMEASURED: too few readings, or none from the node",
            },
            if self.idle_shards.is_empty() {
                "every shard serves".to_owned()
            } else {
                format!("IDLE: {:?}", self.idle_shards)
            },
            if self.passed() { "pass" } else { "FAIL" },
        )
    }
}

/// A running engine of the soak.
struct Engine {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &SoakConfig) -> Result<Engine, String> {
    let data = config.output.join("data");
    let hdr = config.output.join("hdr");
    let mut child = Command::new(&config.engine)
        .args(["--profile", "default"])
        .args(["--set", "messaging.enable_persistence=true"])
        .args([
            "--set",
            &format!("storage.data_directory={}", data.display()),
        ])
        .args([
            "--set",
            &format!("observability.hdr_log.directory={}", hdr.display()),
        ])
        .args(["--set", "observability.admin.listen=127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", config.engine.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut log = BufReader::new(stderr);
    let marker = "admin endpoint listening on http://";
    let mut admin = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if log
            .read_line(&mut line)
            .map_err(|error| error.to_string())?
            == 0
        {
            return Err("the engine exited while starting".into());
        }
        if let Some(at) = line.find(marker) {
            let address: String = line[at + marker.len()..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            admin = address.parse().ok();
        }
        if line.contains("engine running") {
            break;
        }
    }
    let admin = admin.ok_or("the engine did not say where its admin endpoint is")?;
    // Keep reading its log so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while log.read_line(&mut sink).is_ok_and(|read| read > 0) {
            sink.clear();
        }
    });
    Ok(Engine { child, admin })
}

fn example(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/agents")
        .join(name);
    std::fs::read(&path).unwrap_or_default()
}

fn call(client: &AdminClient, method: Method, path: &str, body: Vec<u8>) -> Option<(u16, Value)> {
    client
        .call(method, path, "application/json", body)
        .ok()
        .map(|answer| (answer.status.as_u16(), answer.json()))
}

fn deploy(client: &AdminClient, name: &str, module: &str, query: &str) -> bool {
    let path = format!("/v1/agents?name={name}{query}");
    matches!(
        call(client, Method::POST, &path, example(module)),
        Some((201, _))
    )
}

fn send(client: &AdminClient, agent: &str, body: Value) -> Option<(u16, Value)> {
    call(
        client,
        Method::POST,
        &format!("/v1/agents/{agent}/messages"),
        body.to_string().into_bytes(),
    )
}

/// The forwarder's content for a pipeline through echo: one hop, `echo`,
/// then the payload `hi` (base64 of `[1][4]echo hi`).
const PIPELINE_ROUTE: &str = "AQRlY2hvaGk=";
/// The fanout's content for a gather over two echoes (base64 of `[2][4]echo[4]echo`).
const FAN_OUT_ROUTE: &str = "AgRlY2hvBGVjaG8=";

/// Agents a fresh engine gets; a restarted one recovers them from storage.
fn deploy_agents(client: &AdminClient) -> Result<(), String> {
    for (name, module, query) in [
        ("echo", "echo.wat", "&instances=2"),
        ("tally", "tally.wat", "&instances=1"),
        ("trap", "trap.wat", ""),
        ("loop", "loop.wat", "&max_execution_time=20ms"),
        ("grab", "grow.wat", "&memory=1MB"),
        ("spare", "echo.wat", ""),
        ("forwarder", "forwarder.wat", ""),
        ("fanout", "fanout.wat", ""),
    ] {
        if !deploy(client, name, module, query) {
            return Err(format!("cannot deploy {name}"));
        }
    }
    Ok(())
}

/// Where the engine listens now; a restart moves it to a new port. Only the
/// soak's own threads share this (outside the engine), so a lock is fine.
struct Target {
    generation: AtomicU64,
    address: Mutex<SocketAddr>,
}

/// What the workers and the fault schedule share.
struct Shared {
    target: Target,
    /// Ticks taken from the schedule.
    next_tick: AtomicU64,
    /// Durable sends taken, which picks each one's key.
    next_durable: AtomicU64,
    /// Acknowledged durable sends per key.
    acknowledged: Vec<AtomicU32>,
    /// 1 while the data directory is full.
    full: AtomicU32,
    /// Full episodes that have ended.
    fills_ended: AtomicU64,
}

/// A size-limited tmpfs mounted for the run; unmounted when dropped.
struct DataFileSystem(PathBuf);

impl DataFileSystem {
    fn mount(directory: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(directory).map_err(|error| error.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={DATA_FILE_SYSTEM_MIB}m,mode=0700"))
            .arg("caxton-soak")
            .arg(directory)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "the full-data-directory fault needs a size-limited tmpfs at {} \
                 (run as root, or pass --no-fill): mount said: {}",
                directory.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Self(directory.to_owned()))
    }

    /// Write a ballast file until the file system is full.
    fn fill(&self) -> std::io::Result<PathBuf> {
        let path = self.0.join("ballast");
        let mut file = std::fs::File::create(&path)?;
        let chunk = vec![0xA5u8; 1 << 20];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(error) => return Err(error),
            }
        }
        Ok(path)
    }
}

impl Drop for DataFileSystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Send the scheduled operations until `end`.
fn work(shared: &Shared, began: Instant, end: Instant, rate: u32) -> SoakReport {
    let mut counts = SoakReport::default();
    let mut client: Option<(u64, AdminClient)> = None;
    let nanos_per_tick = 1_000_000_000 / u64::from(rate.max(1));
    loop {
        let tick = shared.next_tick.fetch_add(1, Ordering::Relaxed);
        let due = began + Duration::from_nanos(tick * nanos_per_tick);
        let now = Instant::now();
        if due >= end || now >= end {
            break;
        }
        if due > now {
            std::thread::sleep(due - now);
        }
        let generation = shared.target.generation.load(Ordering::Acquire);
        if client.as_ref().is_none_or(|(seen, _)| *seen != generation) {
            let address = *shared.target.address.lock().expect("not poisoned");
            client = AdminClient::new(address, None)
                .ok()
                .map(|fresh| (generation, fresh));
        }
        let Some((_, client)) = &client else {
            counts.sent += 1;
            counts.unreachable += 1;
            continue;
        };
        let operation = MIX[(tick % MIX.len() as u64) as usize];
        let (agent, request) = match operation {
            Operation::Echo => (
                "echo",
                json!({ "content": format!("r-{tick}"), "timeout_ms": 2000 }),
            ),
            Operation::Pipeline => (
                "forwarder",
                json!({ "content_base64": PIPELINE_ROUTE, "timeout_ms": 2000 }),
            ),
            Operation::FanOut => (
                "fanout",
                json!({ "content_base64": FAN_OUT_ROUTE, "timeout_ms": 2000 }),
            ),
            Operation::Durable => {
                durable(shared, client, &mut counts);
                continue;
            }
            Operation::Fault => {
                counts.faults_sent += 1;
                let agent = ["trap", "loop", "grab"][(tick / MIX.len() as u64 % 3) as usize];
                let _ = send(
                    client,
                    agent,
                    json!({ "content": "fault", "timeout_ms": 1000 }),
                );
                continue;
            }
        };
        counts.sent += 1;
        let outcome = send(client, agent, request);
        let late = due.elapsed().as_micros();
        counts
            .latency
            .saturating_record(u64::try_from(late).unwrap_or(u64::MAX));
        match outcome {
            None => counts.unreachable += 1,
            Some((200, reply)) if reply["performative"] == "inform" => counts.answered += 1,
            Some((429 | 503, _)) => counts.refused += 1,
            Some((504, _)) => counts.timed_out += 1,
            Some(_) => counts.failed += 1,
        }
    }
    counts
}

/// One durable one-way send to `tally`, counted by outcome.
fn durable(shared: &Shared, client: &AdminClient, counts: &mut SoakReport) {
    let key = (shared.next_durable.fetch_add(1, Ordering::Relaxed) % DURABLE_KEYS as u64) as usize;
    counts.durable_sent += 1;
    let full = shared.full.load(Ordering::Acquire) == 1;
    let after_a_fill = !full && shared.fills_ended.load(Ordering::Acquire) > 0;
    let request = json!({
        "content": format!("d-{key}"),
        "persistent": true,
        "wait_for_reply": false,
        "timeout_ms": 2000,
    });
    match send(client, "tally", request) {
        Some((202, _)) => {
            shared.acknowledged[key].fetch_add(1, Ordering::AcqRel);
            counts.durable_acknowledged += 1;
            counts.acknowledged_after_full += u64::from(after_a_fill);
        }
        Some((503, answer)) if answer["error"]["code"] == "not-stored" => {
            counts.durable_refused += 1;
            counts.refused_while_full += u64::from(full);
        }
        _ => {}
    }
}

impl SoakReport {
    /// Add a worker's counts to these.
    fn absorb(&mut self, worker: SoakReport) {
        self.sent += worker.sent;
        self.answered += worker.answered;
        self.failed += worker.failed;
        self.refused += worker.refused;
        self.timed_out += worker.timed_out;
        self.unreachable += worker.unreachable;
        self.durable_sent += worker.durable_sent;
        self.durable_acknowledged += worker.durable_acknowledged;
        self.durable_refused += worker.durable_refused;
        self.refused_while_full += worker.refused_while_full;
        self.acknowledged_after_full += worker.acknowledged_after_full;
        self.faults_sent += worker.faults_sent;
        let _ = self.latency.add(&worker.latency);
    }
}

/// `tally`'s count for `key` (the query itself counts once), if it answers.
fn tally_count(client: &AdminClient, key: usize) -> Option<u32> {
    let (status, reply) = send(
        client,
        "tally",
        json!({ "content": format!("d-{key}"), "timeout_ms": 5000 }),
    )?;
    if status != 200 || reply["performative"] != "inform" {
        return None;
    }
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(reply["content_base64"].as_str()?)
        .ok()?;
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// Run the soak; `progress` hears the seconds elapsed now and then.
pub fn run(config: &SoakConfig, progress: &dyn Fn(u64)) -> Result<SoakReport, String> {
    std::fs::create_dir_all(&config.output).map_err(|error| error.to_string())?;
    let data_file_system = match config.fill {
        Some(_) => Some(DataFileSystem::mount(&config.output.join("data"))?),
        None => None,
    };
    let mut engine = start(config)?;
    let mut client = AdminClient::new(engine.admin, None).map_err(|error| error.to_string())?;
    deploy_agents(&client)?;
    let shared = Shared {
        target: Target {
            generation: AtomicU64::new(0),
            address: Mutex::new(engine.admin),
        },
        next_tick: AtomicU64::new(0),
        next_durable: AtomicU64::new(0),
        acknowledged: (0..DURABLE_KEYS).map(|_| AtomicU32::new(0)).collect(),
        full: AtomicU32::new(0),
        fills_ended: AtomicU64::new(0),
    };
    let mut report = SoakReport::default();
    let began = Instant::now();
    let end = began + config.duration;
    let mut next_kill = began + config.kill_every;
    let mut next_redeploy = began + config.redeploy_every;
    let mut next_sample = began;
    // The first episode comes half a period in; a kill waits for an episode
    // to end (a restart onto a full disk is not this soak's case).
    let mut next_fill = config.fill.map(|(every, _)| began + every / 2);
    let mut ballast: Option<(PathBuf, Instant)> = None;
    let failure = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| scope.spawn(|| work(&shared, began, end, config.rate)))
            .collect();
        let mut failure = None;
        while Instant::now() < end && failure.is_none() {
            std::thread::sleep(Duration::from_millis(100));
            let now = Instant::now();
            if now >= next_sample {
                if let Some((200, node)) = call(&client, Method::GET, "/v1/node", Vec::new()) {
                    report.memory.push(MemorySample {
                        at: began.elapsed().as_secs_f64(),
                        lifetime: report.restarts,
                        bytes: node["memory_used_bytes"].as_u64().unwrap_or(0),
                    });
                }
                next_sample = now + Duration::from_secs(2);
                progress(began.elapsed().as_secs());
            }
            if now >= next_redeploy {
                let _ = call(&client, Method::DELETE, "/v1/agents/spare", Vec::new());
                if deploy(&client, "spare", "echo.wat", "") {
                    report.redeploys += 1;
                }
                next_redeploy = now + config.redeploy_every;
            }
            if let (Some((every, lasting)), Some(file_system)) = (config.fill, &data_file_system) {
                match &ballast {
                    None if next_fill.is_some_and(|at| now >= at) => match file_system.fill() {
                        Ok(path) => {
                            shared.full.store(1, Ordering::Release);
                            report.fills += 1;
                            ballast = Some((path, now + lasting));
                        }
                        Err(error) => {
                            failure = Some(format!("cannot fill the data directory: {error}"))
                        }
                    },
                    Some((path, until)) if now >= *until => {
                        let _ = std::fs::remove_file(path);
                        shared.full.store(0, Ordering::Release);
                        shared.fills_ended.fetch_add(1, Ordering::AcqRel);
                        ballast = None;
                        next_fill = Some(now + every);
                    }
                    _ => {}
                }
            }
            if now >= next_kill && ballast.is_none() {
                // SIGKILL: no drain, no goodbye; the restart recovers from storage.
                let _ = engine.child.kill();
                let _ = engine.child.wait();
                match start(config) {
                    Ok(fresh) => engine = fresh,
                    Err(error) => {
                        failure = Some(format!(
                            "the engine did not come back after SIGKILL: {error}"
                        ));
                        break;
                    }
                }
                *shared.target.address.lock().expect("not poisoned") = engine.admin;
                shared.target.generation.fetch_add(1, Ordering::AcqRel);
                match AdminClient::new(engine.admin, None) {
                    Ok(fresh) => client = fresh,
                    Err(error) => failure = Some(error.to_string()),
                }
                report.restarts += 1;
                next_kill = Instant::now() + config.kill_every;
            }
        }
        for worker in workers {
            if let Ok(counts) = worker.join() {
                report.absorb(counts);
            }
        }
        failure
    });
    if let Some((path, _)) = ballast.take() {
        let _ = std::fs::remove_file(path);
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    let due = (config.duration.as_nanos() * u128::from(config.rate) / 1_000_000_000) as u64;
    let taken = report.sent + report.durable_sent + report.faults_sent;
    report.behind = due.saturating_sub(taken);
    // Durable messages may still wait in queues: give them a moment.
    std::thread::sleep(Duration::from_secs(2));
    for (key, acknowledged) in shared.acknowledged.iter().enumerate() {
        let acknowledged = acknowledged.load(Ordering::Acquire);
        if acknowledged == 0 {
            continue;
        }
        let counted = tally_count(&client, key);
        if counted.is_none_or(|count| count < acknowledged + 1) {
            report.durable_lost.push(Shortfall {
                key,
                acknowledged,
                counted,
            });
        }
    }
    report.idle_shards = idle_shards(&client);
    // The engine's HDR log of the whole run (since the last restart), and
    // the soak's own record of latency from when each operation was due.
    if let Ok(answer) = client.call(Method::GET, "/v1/hdr", "text/plain", Vec::new()) {
        let _ = std::fs::write(config.output.join("latency.hlog"), answer.text());
    }
    let _ = caxton_telemetry::hdr_log::write_single_interval(
        &config.output.join("open-loop.hlog"),
        "Caxton soak: request-reply latency from when each was due, in microseconds",
        config.duration,
        &[("request-reply", &report.latency)],
    );
    drop(engine);
    drop(data_file_system);
    let _ = std::fs::write(config.output.join("summary.txt"), report.summary());
    let csv: String = std::iter::once("seconds,lifetime,resident_bytes\n".to_owned())
        .chain(
            report
                .memory
                .iter()
                .map(|sample| format!("{:.1},{},{}\n", sample.at, sample.lifetime, sample.bytes)),
        )
        .collect();
    let _ = std::fs::write(config.output.join("resident.csv"), csv);
    Ok(report)
}

/// Shards hosting `echo` that handle nothing of a last burst to it.
fn idle_shards(client: &AdminClient) -> Vec<usize> {
    let handled = |node: &Value, shard: usize| {
        node["shards"][shard]["counters"]["handled"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = call(client, Method::GET, "/v1/node", Vec::new())
        .map(|(_, node)| node)
        .unwrap_or_default();
    for burst in 0..200 {
        let _ = send(
            client,
            "echo",
            json!({ "content": format!("last-{burst}") }),
        );
    }
    let after = call(client, Method::GET, "/v1/node", Vec::new())
        .map(|(_, node)| node)
        .unwrap_or_default();
    let shards = after["shards"].as_array().map_or(0, Vec::len);
    let echo_shards: Vec<u64> = call(client, Method::GET, "/v1/agents/echo", Vec::new())
        .and_then(|(_, agent)| agent["instances_per_shard"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|count| count.as_u64().unwrap_or(0))
        .collect();
    (0..shards)
        .filter(|shard| {
            echo_shards.get(*shard).is_some_and(|count| *count > 0)
                && handled(&after, *shard) <= handled(&before, *shard)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(lifetimes: &[&[u64]]) -> Vec<MemorySample> {
        let mut at = 0.0;
        let mut memory = Vec::new();
        for (lifetime, readings) in lifetimes.iter().enumerate() {
            for bytes in *readings {
                memory.push(MemorySample {
                    at,
                    lifetime: lifetime as u64,
                    bytes: *bytes,
                });
                at += 2.0;
            }
        }
        memory
    }

    #[test]
    fn the_books_balance_only_when_every_send_is_counted() {
        let mut report = SoakReport {
            sent: 10,
            answered: 6,
            failed: 1,
            refused: 1,
            timed_out: 1,
            unreachable: 1,
            memory: samples(&[&[100, 101, 102, 100, 101, 102]]),
            ..SoakReport::default()
        };
        assert!(report.counts_add_up() && report.passed());
        assert_eq!(report.memory_flat().2, MemoryVerdict::Flat);
        report.sent += 1;
        assert!(!report.counts_add_up() && !report.passed());
        report.sent -= 1;
        report.durable_lost.push(Shortfall {
            key: 7,
            acknowledged: 3,
            counted: Some(2),
        });
        assert!(!report.passed());
        assert!(report
            .summary()
            .contains("(first: d-7 acknowledged 3 times, counted Some(2))"));
    }

    #[test]
    fn memory_is_judged_by_each_process_lifetimes_peak_after_warm_up() {
        // Each process warms up from 50 to 70; the peaks stay level.
        let level: Vec<&[u64]> = vec![&[50, 60, 70]; 9];
        let report = SoakReport {
            memory: samples(&level),
            ..SoakReport::default()
        };
        assert_eq!(report.memory_flat(), (70, 70, MemoryVerdict::Flat));
        // The peaks climb after warm-up: growth, even though each process
        // starts low again.
        let climbing: Vec<&[u64]> = vec![
            &[50, 60, 70],
            &[50, 60, 70],
            &[50, 60, 70],
            &[50, 60, 70],
            &[50, 65, 75],
            &[50, 70, 80],
            &[50, 60, 70],
        ];
        let report = SoakReport {
            memory: samples(&climbing),
            ..SoakReport::default()
        };
        assert_eq!(report.memory_flat(), (70, 80, MemoryVerdict::Grew));
        // One process through the run: its own readings after the first third.
        let report = SoakReport {
            memory: samples(&[&[10, 50, 100, 100, 104, 109, 120]]),
            ..SoakReport::default()
        };
        assert_eq!(report.memory_flat(), (100, 120, MemoryVerdict::Grew));
        // No readings, or readings of nothing (the node did not say), are
        // no verdict, and the soak does not pass on them.
        for memory in [Vec::new(), samples(&[&[0, 0, 0, 0, 0, 0]])] {
            let report = SoakReport {
                memory,
                ..SoakReport::default()
            };
            assert_eq!(report.memory_flat().2, MemoryVerdict::Unmeasured);
            assert!(!report.passed());
            assert!(report.summary().contains("UNMEASURED"));
        }
    }
}
