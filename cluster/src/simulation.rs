//! The cluster simulator: N real membership cores ([`Membership`], the code
//! the gossip shard runs) in one process, on a virtual clock, over a
//! simulated network that drops, delays (a latency distribution per link), duplicates
//! and reorders frames, cuts one direction of a link, partitions and heals
//! groups, and crashes and restarts nodes (a restart takes a newer
//! generation). One seed decides everything: the same configuration and seed
//! replay the same run, event for event (compare [`Report::trace_digest`]).
//!
//! What it measures:
//! - **dissemination**: from a node's arrival (a join after warm-up, or a
//!   restart) to the moment the last live node learns of it; and each
//!   node's own learning time (`observations`, what
//!   `caxton_gossip_convergence_time_seconds` records on a real node);
//! - **detection**: from a crash to the moment the last live node declares
//!   the crashed node down;
//! - false suspicions and false down declarations (of nodes that were
//!   running and reachable), packets and bytes per node per second.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::membership::{Membership, MembershipEvent, Now};
use crate::settings::SwimSettings;
use crate::wire::NodeId;

/// What happens during a run besides steady membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Nodes leave gracefully and rejoin, one at a time; nothing fails.
    Steady,
    /// As steady, and a node crashes every so often (and stays down).
    Crash,
    /// The cluster splits in two halves from a quarter of the run to half
    /// of it, then heals; from three quarters, one link loses one
    /// direction only. No arrivals.
    Partition,
    /// Nodes crash and restart (a newer generation) continually.
    Churn,
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "steady" => Ok(Self::Steady),
            "crash" => Ok(Self::Crash),
            "partition" => Ok(Self::Partition),
            "churn" => Ok(Self::Churn),
            other => Err(format!(
                "unknown scenario `{other}`: use steady, crash, partition or churn"
            )),
        }
    }
}

/// How the cluster comes together before measuring starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Formation {
    /// Every node starts knowing every other, with no news left to
    /// spread: a settled cluster at once. Formation by joins costs a
    /// thousand nodes most of a minute of wall time (each join's news
    /// reaches every node, and foca's member list is searched per update)
    /// and is not what the scenarios measure.
    #[default]
    Formed,
    /// Node 0 starts alone; the others join through three earlier nodes,
    /// staggered over a second; measuring starts once everyone knows
    /// everyone and the backlogs have drained (at most ten minutes on).
    Joins,
}

impl std::str::FromStr for Formation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "formed" => Ok(Self::Formed),
            "joins" => Ok(Self::Joins),
            other => Err(format!("unknown formation `{other}`: use formed or joins")),
        }
    }
}

/// The simulated network.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Network {
    /// Share of frames lost, 0 to 1, each independently.
    pub loss: f64,
    /// Median one-way latency; each link's own median is this scaled by
    /// 0.5 to 2 (fixed per link by the seed). In JSON, seconds, as every
    /// other time of a simulation's summary.
    #[serde(with = "seconds")]
    pub latency: Duration,
    /// Latency spread: a frame takes `latency × e^(σ·z)` with z standard
    /// normal (a log-normal distribution), so frames overtake each other.
    pub jitter_sigma: f64,
    /// Share of frames delivered twice.
    pub duplicate: f64,
}

/// A duration as seconds in JSON; a summary written before reads too (its
/// `{"secs", "nanos"}` form).
mod seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Either {
            Seconds(f64),
            Parts(Duration),
        }
        match <Either as serde::Deserialize>::deserialize(deserializer)? {
            Either::Seconds(seconds) => Duration::try_from_secs_f64(seconds)
                .map_err(|error| serde::de::Error::custom(format!("latency {seconds}: {error}"))),
            Either::Parts(duration) => Ok(duration),
        }
    }
}

impl Default for Network {
    fn default() -> Self {
        Self {
            loss: 0.01,
            latency: Duration::from_micros(250),
            jitter_sigma: 0.5,
            duplicate: 0.001,
        }
    }
}

/// One run's configuration.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SimulationConfig {
    /// Nodes at the start.
    pub nodes: usize,
    /// Their SWIM settings (from the profile).
    #[serde(skip)]
    pub swim: Option<SwimSettings>,
    /// The network.
    pub network: Network,
    /// Simulated time after warm-up.
    pub duration: Duration,
    /// Decides every random choice.
    pub seed: u64,
    /// What happens.
    pub scenario: Scenario,
    /// How the cluster forms before measuring.
    #[serde(default)]
    pub formation: Formation,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// Arrival to the last live node learning of it, nanoseconds.
    pub dissemination: Histogram<u64>,
    /// Arrival to each live node learning of it, nanoseconds.
    pub observations: Histogram<u64>,
    /// Crash to the last live node declaring it down, nanoseconds.
    pub detection: Histogram<u64>,
    /// Arrivals that had not reached every live node when the run ended.
    pub arrivals_unfinished: u64,
    /// Crashes not yet declared down by every live node at the end.
    pub crashes_undetected: u64,
    /// Crashes whose node restarted (churn) before every live node declared
    /// it down: the restart's newer generation replaces the old identity,
    /// so no down declaration follows, and the crash is not timed.
    pub crashes_superseded: u64,
    /// Suspicion episodes (however many nodes heard of each) of nodes that
    /// were running and not partitioned from the observer (a link that lost
    /// one direction does not excuse one).
    pub false_suspicions: u64,
    /// Down declarations of nodes that were running and reachable.
    pub false_downs: u64,
    /// Flapping nodes: those one observer declared down, while they were
    /// running and reachable, twice or more (as `engine cluster
    /// analyze-gossip` counts a member's downs on a live node). By index.
    pub flapping: std::collections::BTreeSet<usize>,
    /// Frames sent per node per simulated second (after warm-up).
    pub packets_per_node_second: f64,
    /// Bytes sent per node per simulated second (after warm-up).
    pub bytes_per_node_second: f64,
    /// After a partition healed: until every live node saw every other alive.
    pub heal: Option<Duration>,
    /// Simulated time, warm-up included.
    pub simulated: Duration,
    /// A digest of every event, in order: equal for equal runs.
    pub trace_digest: u64,
}

const BASE_UNIX_US: u64 = 1_800_000_000_000_000;
const PORT: u16 = 7946;

fn address(index: usize) -> SocketAddr {
    let index = index as u32;
    SocketAddr::from((
        Ipv4Addr::new(10, (index >> 16) as u8, (index >> 8) as u8, index as u8),
        PORT,
    ))
}

fn index_of(addr: SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(v4) => {
            let [_, a, b, c] = v4.ip().octets();
            (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c)
        }
        SocketAddr::V6(_) => usize::MAX,
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 86_400_000_000_000, 3).expect("1µs to a day are valid bounds")
}

/// A frame in flight: (deliver at, order sent, to, frame).
type Delivery = (Duration, u64, usize, Vec<u8>);

/// An arrival or a crash on its way to every live node.
struct Pending {
    started: Duration,
    waiting: HashSet<usize>,
}

struct Simulator {
    swim: SwimSettings,
    network: Network,
    rng: SmallRng,
    now: Duration,
    nodes: Vec<Option<Membership>>,
    /// Deliveries: (at, order, to, frame).
    deliveries: BinaryHeap<Reverse<Delivery>>,
    /// Wake-ups: (at, node); stale ones are skipped.
    wakeups: BinaryHeap<Reverse<(Duration, usize)>>,
    scheduled: Vec<Option<Duration>>,
    order: u64,
    /// Node i's side in a partition (nodes on different sides cannot talk).
    side: Vec<u8>,
    /// Directions cut: (from, to).
    cut: HashSet<(usize, usize)>,
    arrivals: HashMap<NodeId, Pending>,
    crashes: HashMap<usize, Pending>,
    measuring: bool,
    /// Fixes each link's latency scale.
    link_seed: u64,
    /// When each node was last suspected, to count suspicion episodes.
    suspected_at: HashMap<usize, Duration>,
    /// A suspicion episode's span: the suspicion timeout at this size.
    suspicion_span: Duration,
    /// False down declarations by (observer, target), to find flapping.
    false_downs_seen: HashMap<(usize, usize), u32>,
    report: Report,
    packets: u64,
    bytes: u64,
    restarts: u64,
}

impl Simulator {
    fn clock(&self) -> Now {
        Now {
            elapsed: self.now,
            unix_us: BASE_UNIX_US + self.now.as_micros() as u64,
        }
    }

    fn digest(&mut self, value: u64) {
        // FNV-1a over the event trace.
        for byte in value.to_le_bytes() {
            self.report.trace_digest ^= u64::from(byte);
            self.report.trace_digest = self.report.trace_digest.wrapping_mul(0x100_0000_01b3);
        }
    }

    fn running(&self, index: usize) -> bool {
        self.nodes.get(index).is_some_and(Option::is_some)
    }

    /// Not partitioned apart (a link that lost one direction still counts:
    /// SWIM's indirect probes are meant to see through it).
    fn same_side(&self, a: usize, b: usize) -> bool {
        self.side[a] == self.side[b]
    }

    fn reachable(&self, from: usize, to: usize) -> bool {
        self.side[from] == self.side[to] && !self.cut.contains(&(from, to))
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|index| self.running(*index))
    }

    /// Start node `index` (a fresh identity) and join it through `seeds`.
    fn start(&mut self, index: usize, seeds: &[usize]) {
        let seed = self.rng.random::<u64>();
        // A restart is at least a microsecond later than the last identity.
        let now = Now {
            elapsed: self.now,
            unix_us: BASE_UNIX_US + self.now.as_micros() as u64 + self.restarts,
        };
        self.restarts += 1;
        // A restart before every node declared the crash is news of a newer
        // generation, not of a death: that crash is no longer timed.
        if self.crashes.remove(&index).is_some() {
            self.report.crashes_superseded += 1;
        }
        let mut core = Membership::new(
            self.swim.clone(),
            format!("node-{index}"),
            address(index),
            seed,
            now,
        );
        let seeds: Vec<SocketAddr> = seeds.iter().map(|seed| address(*seed)).collect();
        core.join(&seeds, now);
        if index >= self.nodes.len() {
            self.nodes.resize_with(index + 1, || None);
            self.scheduled.resize(index + 1, None);
            self.side.resize(index + 1, 0);
        }
        let identity = core.identity().clone();
        self.nodes[index] = Some(core);
        if self.measuring {
            let waiting: HashSet<usize> = self.live().filter(|other| *other != index).collect();
            self.arrivals.insert(
                identity,
                Pending {
                    started: self.now,
                    waiting,
                },
            );
        }
        self.digest(0x5354_4152 ^ index as u64);
        self.after(index);
    }

    /// Node `index` leaves gracefully (its farewell goes out), then is gone.
    fn leave(&mut self, index: usize) {
        let now = self.clock();
        if let Some(core) = self.nodes[index].as_mut() {
            core.leave(now);
        }
        self.after(index);
        self.nodes[index] = None;
        self.forget(index);
        self.digest(0x4c45_4156 ^ index as u64);
        self.settle_pending();
    }

    /// Node `index` stopped: nothing waits on it any more, and its own
    /// arrival, if still spreading, is no longer news.
    fn forget(&mut self, index: usize) {
        self.scheduled[index] = None;
        self.arrivals.retain(|id, _| index_of(id.addr) != index);
        for pending in self.arrivals.values_mut() {
            pending.waiting.remove(&index);
        }
        for pending in self.crashes.values_mut() {
            pending.waiting.remove(&index);
        }
    }

    fn crash(&mut self, index: usize) {
        if self.nodes[index].take().is_none() {
            return;
        }
        self.forget(index);
        if self.measuring {
            let waiting: HashSet<usize> = self.live().collect();
            self.crashes.insert(
                index,
                Pending {
                    started: self.now,
                    waiting,
                },
            );
        }
        self.digest(0x4352_4153 ^ index as u64);
        self.settle_pending();
    }

    /// Collect what node `index` left: frames onto the network, events into
    /// the measurements, its next wake-up into the queue.
    fn after(&mut self, index: usize) {
        let Some(core) = self.nodes[index].as_mut() else {
            return;
        };
        let outgoing = core.take_outgoing();
        let events = core.take_events();
        let deadline = core.next_deadline();
        for out in outgoing {
            if self.measuring {
                self.packets += 1;
                self.bytes += out.frame.len() as u64;
            }
            let to = index_of(out.to);
            if to >= self.nodes.len() || !self.reachable(index, to) {
                continue;
            }
            if self.rng.random::<f64>() < self.network.loss {
                continue;
            }
            let copies = if self.rng.random::<f64>() < self.network.duplicate {
                2
            } else {
                1
            };
            let mut frame = Some(out.frame);
            for copy in 0..copies {
                let delay = self.latency(index, to);
                self.order += 1;
                // The last copy takes the frame itself.
                let bytes = if copy + 1 == copies {
                    frame.take().unwrap_or_default()
                } else {
                    frame.clone().unwrap_or_default()
                };
                self.deliveries
                    .push(Reverse((self.now + delay, self.order, to, bytes)));
            }
        }
        for event in events {
            self.observe(index, event);
        }
        if deadline != self.scheduled[index] {
            self.scheduled[index] = deadline;
            if let Some(at) = deadline {
                self.wakeups.push(Reverse((at, index)));
            }
        }
    }

    /// A frame's delay on the link `from → to`: the link's own median (the
    /// network's, scaled by 0.5 to 2 per link, fixed by the seed) times a
    /// log-normal factor, so frames overtake each other.
    fn latency(&mut self, from: usize, to: usize) -> Duration {
        // Box-Muller for a standard normal.
        let u1: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = self.rng.random::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let link = self.link_scale(from, to);
        self.network
            .latency
            .mul_f64(link * (self.network.jitter_sigma * z).exp().min(100.0))
    }

    /// A link's latency scale, 0.5 to 2, from the seed and its ends.
    fn link_scale(&self, from: usize, to: usize) -> f64 {
        let hash = crate::mix64(self.link_seed ^ ((from as u64) << 32) ^ to as u64);
        let unit = (hash >> 11) as f64 / (1u64 << 53) as f64;
        0.5 * 4f64.powf(unit)
    }

    fn observe(&mut self, observer: usize, event: MembershipEvent) {
        match event {
            MembershipEvent::Up(member)
            | MembershipEvent::Renamed {
                current: member, ..
            } => {
                self.digest(0x5550 ^ ((observer as u64) << 20) ^ member.generation);
                if let Some(pending) = self.arrivals.get_mut(&member) {
                    if pending.waiting.remove(&observer) {
                        let took = self.now - pending.started;
                        let _ = self
                            .report
                            .observations
                            .record(took.as_nanos().max(1_000) as u64);
                    }
                }
            }
            MembershipEvent::Down(member) => {
                let target = index_of(member.addr);
                self.digest(0x444f ^ ((observer as u64) << 20) ^ target as u64);
                let current = self
                    .nodes
                    .get(target)
                    .and_then(Option::as_ref)
                    .map(|core| core.identity().clone());
                if current.as_ref() == Some(&member) && self.same_side(observer, target) {
                    self.report.false_downs += 1;
                    let seen = self.false_downs_seen.entry((observer, target)).or_default();
                    *seen += 1;
                    if *seen >= 2 {
                        self.report.flapping.insert(target);
                    }
                }
                if let Some(pending) = self.crashes.get_mut(&target) {
                    pending.waiting.remove(&observer);
                }
            }
            MembershipEvent::Suspected(member) => {
                let target = index_of(member.addr);
                self.digest(0x5355 ^ ((observer as u64) << 20) ^ target as u64);
                let current = self
                    .nodes
                    .get(target)
                    .and_then(Option::as_ref)
                    .map(|core| core.identity().clone());
                // Every node that hears of a suspicion starts its own timer;
                // count the episode once, not once per node.
                let episode = self
                    .suspected_at
                    .get(&target)
                    .is_none_or(|at| self.now.saturating_sub(*at) > self.suspicion_span);
                self.suspected_at.insert(target, self.now);
                if episode
                    && self.measuring
                    && current.as_ref() == Some(&member)
                    && self.same_side(observer, target)
                {
                    self.report.false_suspicions += 1;
                }
            }
            _ => {}
        }
        self.settle_pending();
    }

    fn settle_pending(&mut self) {
        let now = self.now;
        let finished: Vec<NodeId> = self
            .arrivals
            .iter()
            .filter(|(_, pending)| pending.waiting.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        for id in finished {
            if let Some(pending) = self.arrivals.remove(&id) {
                let _ = self
                    .report
                    .dissemination
                    .record((now - pending.started).as_nanos().max(1_000) as u64);
            }
        }
        let detected: Vec<usize> = self
            .crashes
            .iter()
            .filter(|(_, pending)| pending.waiting.is_empty())
            .map(|(index, _)| *index)
            .collect();
        for index in detected {
            if let Some(pending) = self.crashes.remove(&index) {
                let _ = self
                    .report
                    .detection
                    .record((now - pending.started).as_nanos().max(1_000) as u64);
            }
        }
    }

    /// Run until `until`, the next delivery or wake-up first each time.
    fn run_until(&mut self, until: Duration) {
        loop {
            let delivery = self.deliveries.peek().map(|Reverse((at, ..))| *at);
            let wakeup = self.wakeups.peek().map(|Reverse((at, _))| *at);
            let Some(next) = [delivery, wakeup].into_iter().flatten().min() else {
                break;
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            let now = self.clock();
            if delivery == Some(next) {
                let Some(Reverse((_, _, to, frame))) = self.deliveries.pop() else {
                    break;
                };
                if let Some(core) = self.nodes.get_mut(to).and_then(Option::as_mut) {
                    let _ = core.handle_frame(&frame, now);
                    self.after(to);
                }
            } else {
                let Some(Reverse((at, index))) = self.wakeups.pop() else {
                    break;
                };
                if self.scheduled.get(index).copied().flatten() != Some(at) {
                    continue;
                }
                self.scheduled[index] = None;
                if let Some(core) = self.nodes.get_mut(index).and_then(Option::as_mut) {
                    core.advance(now);
                    self.after(index);
                }
            }
        }
        self.now = self.now.max(until);
    }

    fn all_agree(&self) -> bool {
        let live: Vec<usize> = self.live().collect();
        live.iter().all(|index| {
            self.nodes[*index]
                .as_ref()
                .is_some_and(|core| core.counts().alive as usize == live.len() - 1)
        })
    }

    /// Start again, through three random live seeds, every node in `queue`
    /// due by `until` (a graceful rejoin, or a restart after a crash).
    fn bring_back(&mut self, queue: &mut Vec<(Duration, usize)>, until: Duration) {
        queue.sort();
        while let Some(&(at, index)) = queue.first() {
            if at > until {
                break;
            }
            queue.remove(0);
            self.run_until(at);
            let seeds: Vec<usize> = (0..3)
                .filter_map(|_| self.random_live(Some(index)))
                .collect();
            self.start(index, &seeds);
        }
    }

    fn random_live(&mut self, except: Option<usize>) -> Option<usize> {
        let live: Vec<usize> = self.live().filter(|index| Some(*index) != except).collect();
        if live.is_empty() {
            return None;
        }
        Some(live[self.rng.random_range(0..live.len())])
    }
}

/// How long the cluster gets to form before measuring starts: every node's
/// join staggered over a second, then enough rounds for the news to spread.
pub fn warm_up(swim: &SwimSettings, nodes: usize) -> Duration {
    let rounds = (nodes.max(2) as f64).log2().ceil() as u32 + 10;
    Duration::from_secs(1) + swim.gossip_interval * rounds + swim.probe_interval * 4
}

/// Run a simulation; `progress` is called now and then with the simulated
/// time so far and the total.
pub fn simulate(config: &SimulationConfig, mut progress: impl FnMut(Duration, Duration)) -> Report {
    let swim = config
        .swim
        .clone()
        .unwrap_or_else(|| SwimSettings::from_profile(&caxton_profiles::Profile::default()));
    let nodes = config.nodes.max(2);
    let warm = warm_up(&swim, nodes);
    let mut sim = Simulator {
        swim: swim.clone(),
        network: config.network,
        rng: SmallRng::seed_from_u64(config.seed),
        now: Duration::ZERO,
        nodes: Vec::new(),
        deliveries: BinaryHeap::new(),
        wakeups: BinaryHeap::new(),
        scheduled: Vec::new(),
        order: 0,
        side: Vec::new(),
        cut: HashSet::new(),
        arrivals: HashMap::new(),
        crashes: HashMap::new(),
        measuring: false,
        link_seed: config.seed.rotate_left(17) ^ 0x6c69_6e6b,
        suspected_at: HashMap::new(),
        false_downs_seen: HashMap::new(),
        suspicion_span: crate::settings::suspicion_timeout(
            swim.suspicion_multiplier,
            swim.probe_interval,
            nodes,
        ),
        report: Report {
            dissemination: histogram(),
            observations: histogram(),
            detection: histogram(),
            arrivals_unfinished: 0,
            crashes_undetected: 0,
            crashes_superseded: 0,
            false_suspicions: 0,
            false_downs: 0,
            flapping: std::collections::BTreeSet::new(),
            packets_per_node_second: 0.0,
            bytes_per_node_second: 0.0,
            heal: None,
            simulated: warm,
            trace_digest: 0xcbf2_9ce4_8422_2325,
        },
        packets: 0,
        bytes: 0,
        restarts: 0,
    };
    match config.formation {
        Formation::Formed => {
            for index in 0..nodes {
                sim.start(index, &[]);
            }
            let roster: Vec<NodeId> = sim
                .nodes
                .iter()
                .flatten()
                .map(|core| core.identity().clone())
                .collect();
            // Each node takes the roster (and starts its timers) at its own
            // moment within the first probe interval: nodes that all probed
            // and watched in step would make every crash land at the same
            // point of every round, which no real cluster does.
            let stagger = swim.probe_interval / nodes as u32;
            for index in 0..nodes {
                sim.run_until(stagger * index as u32);
                let now = sim.clock();
                if let Some(core) = sim.nodes[index].as_mut() {
                    core.assume_members(roster.iter().cloned(), now);
                }
                sim.after(index);
            }
            // A few probe rounds, so every node's timers and ring watch
            // run as they do in a settled cluster.
            sim.run_until(swim.probe_interval * 4);
        }
        Formation::Joins => {
            // Node 0 first, then each node joins through three earlier ones.
            sim.start(0, &[]);
            let stagger = Duration::from_secs(1) / nodes as u32;
            for index in 1..nodes {
                sim.run_until(stagger * index as u32);
                let seeds: Vec<usize> = (0..3).map(|_| sim.rng.random_range(0..index)).collect();
                sim.start(index, &seeds);
            }
            sim.run_until(warm);
        }
    }
    // Formation leaves every node a backlog of join news to piggyback; wait
    // (in rounds, up to ten minutes) until everyone knows everyone and the
    // backlogs have drained, so the measurements see a settled cluster.
    let settle_step = swim.gossip_interval * 10;
    let settle_limit = warm + Duration::from_secs(600);
    while sim.now < settle_limit {
        let settled = sim.live().all(|index| {
            sim.nodes[index].as_ref().is_some_and(|core| {
                core.counts().alive as usize == nodes - 1
                    && core.updates_backlog() <= 2 * (nodes as f64).log2() as usize
            })
        });
        if settled {
            break;
        }
        let next = sim.now + settle_step;
        sim.run_until(next);
        progress(sim.now, sim.now + config.duration);
    }
    let warm = sim.now;
    let total = warm + config.duration;
    sim.report.simulated = total;
    sim.measuring = true;
    progress(sim.now, total);

    // The scenario's schedule, in steps of a second of simulated time.
    let step = Duration::from_secs(1);
    let arrival_every = (swim.probe_interval * 4).max(Duration::from_secs(2));
    let mut next_arrival = warm + arrival_every / 2;
    let fault_every = (swim.probe_interval * 10).max(Duration::from_secs(10));
    let mut next_fault = warm + fault_every / 2;
    let partition_at = warm + config.duration / 4;
    let heal_at = warm + config.duration / 2;
    let mut partitioned = false;
    let one_way_at = warm + config.duration * 3 / 4;
    let mut one_way = false;
    let mut healed_at: Option<Duration> = None;
    let mut restart_queue: Vec<(Duration, usize)> = Vec::new();
    let mut returning: Vec<(Duration, usize)> = Vec::new();
    let mut node_seconds = 0.0_f64;
    while sim.now < total {
        let step_start = sim.now;
        let live_at_start = sim.live().count() as f64;
        let until = (sim.now + step).min(total);
        // Arrivals: a node leaves gracefully and comes back a moment later
        // under a newer generation, so the cluster keeps its size. The
        // partition scenario has none, so that only the heal is measured.
        while next_arrival <= until && config.scenario != Scenario::Partition {
            sim.run_until(next_arrival);
            if let Some(index) = sim.random_live(Some(0)) {
                sim.leave(index);
                returning.push((sim.now + swim.gossip_interval * 2, index));
            }
            next_arrival += arrival_every;
        }
        sim.bring_back(&mut returning, until);
        if matches!(config.scenario, Scenario::Crash | Scenario::Churn) {
            while next_fault <= until {
                sim.run_until(next_fault);
                if let Some(victim) = sim.random_live(Some(0)) {
                    sim.crash(victim);
                    if config.scenario == Scenario::Churn {
                        restart_queue.push((sim.now + swim.probe_interval * 3, victim));
                    }
                }
                next_fault += fault_every
                    / if config.scenario == Scenario::Churn {
                        4
                    } else {
                        1
                    };
            }
            sim.bring_back(&mut restart_queue, until);
        }
        if config.scenario == Scenario::Partition {
            if !partitioned && partition_at <= until {
                sim.run_until(partition_at);
                let count = sim.nodes.len();
                for index in count / 2..count {
                    sim.side[index] = 1;
                }
                partitioned = true;
            }
            if partitioned && healed_at.is_none() && heal_at <= until {
                sim.run_until(heal_at);
                sim.side.iter_mut().for_each(|side| *side = 0);
                healed_at = Some(sim.now);
            }
            // Then one direction only: node 1 cannot reach node 2, though
            // node 2 reaches node 1. Indirect probes should keep either
            // from being declared down.
            if !one_way && one_way_at <= until && sim.nodes.len() > 2 {
                sim.run_until(one_way_at);
                sim.cut.insert((1, 2));
                one_way = true;
            }
        }
        sim.run_until(until);
        // Nodes running over this step (counted at its start), times its length.
        node_seconds += live_at_start * (sim.now - step_start).as_secs_f64();
        if let (Some(healed), None) = (healed_at, sim.report.heal) {
            if sim.all_agree() {
                sim.report.heal = Some(sim.now - healed);
            }
        }
        progress(sim.now, total);
    }
    // Per node-second of running nodes, so crashes do not inflate the rate.
    let node_seconds = node_seconds.max(1e-9);
    sim.report.packets_per_node_second = sim.packets as f64 / node_seconds;
    sim.report.bytes_per_node_second = sim.bytes as f64 / node_seconds;
    sim.report.arrivals_unfinished = sim.arrivals.len() as u64;
    sim.report.crashes_undetected = sim.crashes.len() as u64;
    sim.report
}
