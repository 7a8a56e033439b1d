//! How the profile's `coordination.cluster.*` and `transport.*` keys become
//! foca's configuration and the transport's settings. Pure functions of the
//! profile and the cluster's size; `docs/profiles.md` documents each mapping.

use std::net::{SocketAddr, ToSocketAddrs};
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use caxton_profiles::{ClusterConfig, Profile, QuicConfig, TcpConfig, TransportKind};

use crate::wire::FRAME_OVERHEAD;

/// Probe intervals between a node's announces to a member it holds down
/// (and to the roster after joining through one seed): how soon a seed
/// restarted without seeds of its own is found again.
pub const ANNOUNCE_TO_DOWN_PROBES: u32 = 10;

/// The SWIM timing and sizes the membership core runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwimSettings {
    /// `gossip_interval`: a gossip round every this long.
    pub gossip_interval: Duration,
    /// `gossip_fanout`: members each round is sent to.
    pub gossip_fanout: usize,
    /// `probe_interval`: foca's probe period.
    pub probe_interval: Duration,
    /// `probe_timeout`: foca's probe round-trip bound before indirect probes.
    pub probe_timeout: Duration,
    /// `indirect_probes`: members asked to probe on our behalf.
    pub indirect_probes: usize,
    /// `suspicion_multiplier`: see [`suspicion_timeout`].
    pub suspicion_multiplier: u32,
    /// `gossip_to_dead`: gossip rounds a member still receives after it is
    /// declared down.
    pub gossip_to_dead: u32,
    /// The largest SWIM packet (the datagram size less the frame).
    pub max_packet: usize,
}

impl SwimSettings {
    /// The settings a profile asks for.
    pub fn from_profile(profile: &Profile) -> Self {
        let cluster: &ClusterConfig = &profile.coordination.cluster;
        Self {
            gossip_interval: cluster.gossip_interval.get(),
            gossip_fanout: cluster.gossip_fanout.max(1) as usize,
            probe_interval: cluster.probe_interval.get(),
            probe_timeout: cluster.probe_timeout.get(),
            indirect_probes: cluster.indirect_probes.max(1) as usize,
            suspicion_multiplier: cluster.suspicion_multiplier.max(1),
            gossip_to_dead: cluster.gossip_to_dead,
            max_packet: profile.transport.quic.max_datagram_size as usize - FRAME_OVERHEAD,
        }
    }

    /// foca's configuration for a cluster of `members` (this node included).
    ///
    /// - `probe_interval` → `probe_period`, `probe_timeout` → `probe_rtt`,
    ///   `indirect_probes` → `num_indirect_probes`.
    /// - `gossip_interval` and `gossip_fanout` → `periodic_gossip`.
    /// - `suspicion_multiplier` → `suspect_to_down_after`, see [`suspicion_timeout`].
    /// - `gossip_to_dead` → `notify_down_members` (a down member that still
    ///   talks is told so, and rejoins); the rounds themselves are the
    ///   membership core's.
    /// - each update rides on [`max_transmissions`] packets.
    /// - the datagram size less the frame → `max_packet_size`.
    pub fn foca_config(&self, members: usize) -> foca::Config {
        let mut config = foca::Config::simple();
        config.probe_period = self.probe_interval;
        config.probe_rtt = self.probe_timeout;
        config.num_indirect_probes =
            NonZeroUsize::new(self.indirect_probes).unwrap_or(NonZeroUsize::MIN);
        config.max_transmissions = max_transmissions(members);
        config.suspect_to_down_after =
            suspicion_timeout(self.suspicion_multiplier, self.probe_interval, members);
        // Never forget an address: a restarted node takes a higher
        // generation and wins its address back (see `NodeId`).
        config.remove_down_after = None;
        config.max_packet_size = NonZeroUsize::new(self.max_packet).unwrap_or(NonZeroUsize::MIN);
        config.notify_down_members = self.gossip_to_dead > 0;
        config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.gossip_interval,
            num_members: NonZeroUsize::new(self.gossip_fanout).unwrap_or(NonZeroUsize::MIN),
        });
        // Reconnect (as Serf does): now and then announce to a member held
        // down, so the halves of a healed partition find each other.
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.probe_interval * ANNOUNCE_TO_DOWN_PROBES,
            num_members: NonZeroUsize::MIN,
        });
        // Discover the whole roster after joining through one seed.
        config.periodic_announce = Some(foca::PeriodicParams {
            frequency: self.probe_interval * ANNOUNCE_TO_DOWN_PROBES,
            num_members: NonZeroUsize::MIN,
        });
        config
    }

    /// The crash-detection goal for a cluster of `members`: a crashed
    /// member declared down by every node within the suspicion timeout and
    /// two probe intervals (its watcher's next round, its probe timeout,
    /// and the gossip of the verdict fit in those two; see `crate::watch`).
    pub fn detection_goal(&self, members: usize) -> Duration {
        suspicion_timeout(self.suspicion_multiplier, self.probe_interval, members)
            + self.probe_interval * 2
    }

    /// The longest a dead member takes to be declared down by every node,
    /// for a cluster of `members`: one probe period to be probed (a node
    /// probes every member in turn, so up to `members - 1` periods until its
    /// turn; any of the others may be first, hence one period), the probe
    /// timeout, the rest of that period for indirect probes, the suspicion
    /// timeout, then the gossip that carries the verdict. A bound to wait
    /// for in tests, not a promise under loss.
    pub fn down_detection_bound(&self, members: usize) -> Duration {
        let probing = self.probe_interval * (members.max(2) as u32 - 1);
        probing
            + self.probe_interval
            + suspicion_timeout(self.suspicion_multiplier, self.probe_interval, members)
            + self.gossip_interval * 3
    }
}

/// How long a suspected member has to refute before it is declared down:
/// `multiplier × max(1, log10 N) × probe_interval`, as memberlist computes
/// it, for a cluster of `members`.
pub fn suspicion_timeout(multiplier: u32, probe_interval: Duration, members: usize) -> Duration {
    let scale = (members.max(1) as f64).log10().max(1.0);
    probe_interval.mul_f64(f64::from(multiplier.max(1)) * scale)
}

/// Packets each update rides on: memberlist's retransmit multiplier (4) ×
/// ⌈log10(N + 1)⌉, so news reaches every member with high probability.
pub fn max_transmissions(members: usize) -> NonZeroU8 {
    let rounds = ((members as f64) + 1.0).log10().ceil().max(1.0);
    let count = (4.0 * rounds).min(f64::from(u8::MAX)) as u8;
    NonZeroU8::new(count).unwrap_or(NonZeroU8::MIN)
}

/// Certificates for mutual TLS, as PEM file paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster's CA.
    pub ca: String,
    /// This node's certificate.
    pub cert: String,
    /// This node's key.
    pub key: String,
}

/// Everything a node needs to run its cluster transport.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// This node's name.
    pub node_name: String,
    /// Whether the name is the default, `HOST-PORT` (made again with the
    /// bound port when the listen port is 0).
    pub default_name: bool,
    /// The address the transport binds.
    pub listen: SocketAddr,
    /// The address others reach this node at.
    pub advertise: SocketAddr,
    /// Seeds to join (resolved).
    pub seeds: Vec<SocketAddr>,
    /// Certificates; `None` runs a loopback-only cluster without authentication.
    pub tls: Option<TlsFiles>,
    /// QUIC or TCP.
    pub transport: TransportKind,
    /// `transport.quic`.
    pub quic: QuicConfig,
    /// `transport.tcp`.
    pub tcp: TcpConfig,
    /// SWIM timing.
    pub swim: SwimSettings,
    /// `transport.connection_pool`: the lanes that carry remote messages.
    pub lanes: crate::lanes::LanePolicy,
}

/// A cluster setting that cannot be used, naming its key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingsError {
    /// The key at fault.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ClusterSettings {
    /// The cluster a profile and `--join` addresses describe; `None` when
    /// the profile sets no listen address and nothing is joined (the node
    /// runs alone). Joining loopback seeds without a listen address listens
    /// on a free loopback port. Seeds are resolved here (DNS names allowed).
    pub fn from_profile(
        profile: &Profile,
        joins: &[String],
    ) -> Result<Option<Self>, SettingsError> {
        let cluster = &profile.coordination.cluster;
        if cluster.listen_address.is_none() && joins.is_empty() {
            return Ok(None);
        }
        // Each `--join` is HOST:PORT with a port to reach, checked before
        // anything is made of it (a bare host would resolve to nothing, or
        // be read as a cluster beyond this machine).
        for join in joins {
            if !caxton_profiles::is_seed_address(join) {
                return Err(SettingsError {
                    key: "--join".into(),
                    message: format!(
                        "{join:?} is not HOST:PORT with a port from 1 to 65535 (e.g. 10.0.0.5:7946)"
                    ),
                });
            }
        }
        let parse = |key: &str, text: &str| {
            text.parse::<SocketAddr>().map_err(|_| SettingsError {
                key: key.into(),
                message: format!("{text:?} is not an IP:PORT address"),
            })
        };
        let listen = match cluster.listen_address.as_deref() {
            Some(text) => parse("coordination.cluster.listen_address", text)?,
            // `--join` a loopback cluster without a listen address: listen on
            // a free loopback port (logged). Beyond loopback, say what to set.
            None => {
                let all_loopback = joins.iter().all(|join| {
                    join.to_socket_addrs()
                        .map(|mut resolved| resolved.all(|address| address.ip().is_loopback()))
                        .unwrap_or(false)
                });
                if !all_loopback {
                    return Err(SettingsError {
                        key: "coordination.cluster.listen_address".into(),
                        message: "joining a cluster beyond this machine needs an address to listen on; set it with --set coordination.cluster.listen_address=IP:PORT".into(),
                    });
                }
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };
        let advertise = match cluster.advertise_address.as_deref() {
            Some(text) => parse("coordination.cluster.advertise_address", text)?,
            None => listen,
        };
        let trial = cluster.tls.ca_file.is_none()
            || cluster.tls.cert_file.is_none()
            || cluster.tls.key_file.is_none();
        let mut seeds = Vec::new();
        for (index, seed) in cluster.seeds.iter().chain(joins).enumerate() {
            let key = if index < cluster.seeds.len() {
                format!("coordination.cluster.seeds[{index}]")
            } else {
                "--join".to_owned()
            };
            let resolved = seed.to_socket_addrs().map_err(|error| SettingsError {
                key: key.clone(),
                message: format!("cannot resolve {seed:?}: {error}"),
            })?;
            let first = resolved.into_iter().next().ok_or_else(|| SettingsError {
                key: key.clone(),
                message: format!("{seed:?} resolves to no address"),
            })?;
            // Without certificates nothing leaves the machine: a seed
            // beyond it would only have every frame dropped.
            if trial && !first.ip().to_canonical().is_loopback() {
                return Err(SettingsError {
                    key,
                    message: format!(
                        "{seed} is beyond this machine, and without certificates (coordination.cluster.tls.ca_file, cert_file, key_file) a node reaches loopback addresses only"
                    ),
                });
            }
            seeds.push(first);
        }
        let tls = match (
            &cluster.tls.ca_file,
            &cluster.tls.cert_file,
            &cluster.tls.key_file,
        ) {
            (Some(ca), Some(cert), Some(key)) => Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        if tls.is_none() && !(listen.ip().is_loopback() && advertise.ip().is_loopback()) {
            // Named by the address that reaches out, the key the user wrote.
            let (key, public) = if listen.ip().is_loopback() {
                ("coordination.cluster.advertise_address", advertise)
            } else {
                ("coordination.cluster.listen_address", listen)
            };
            return Err(SettingsError {
                key: key.into(),
                message: format!(
                    "{public} is reachable beyond this machine and the cluster has no certificates (coordination.cluster.tls)"
                ),
            });
        }
        let (node_name, default_name) = match &cluster.node_name {
            Some(name) => (name.clone(), false),
            None => (default_node_name(advertise.port()), true),
        };
        Ok(Some(Self {
            node_name,
            default_name,
            listen,
            advertise,
            seeds,
            tls,
            transport: profile.transport.kind,
            quic: profile.transport.quic.clone(),
            tcp: profile.transport.tcp.clone(),
            swim: SwimSettings::from_profile(profile),
            lanes: crate::lanes::LanePolicy::from(&profile.transport.connection_pool),
        }))
    }
}

/// `HOST-PORT`, with the host name cut to the naming rule.
pub fn default_node_name(port: u16) -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let host: String = if status == 0 {
        let end = buffer
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(buffer.len());
        String::from_utf8_lossy(&buffer[..end])
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(56)
            .collect()
    } else {
        String::new()
    };
    let host = if host.is_empty() {
        "node".to_owned()
    } else {
        host
    };
    format!("{host}-{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_scales_with_log10_of_the_cluster() {
        let second = Duration::from_secs(1);
        assert_eq!(
            suspicion_timeout(4, second, 3),
            Duration::from_secs(4),
            "log10 3 < 1 counts as 1"
        );
        assert_eq!(suspicion_timeout(4, second, 100), Duration::from_secs(8));
        assert_eq!(
            suspicion_timeout(5, second * 2, 1000),
            Duration::from_secs(30)
        );
        assert_eq!(max_transmissions(3).get(), 4);
        assert_eq!(max_transmissions(100).get(), 12);
    }

    #[test]
    fn every_cluster_key_reaches_foca() {
        let mut profile = Profile::default();
        let cluster = &mut profile.coordination.cluster;
        cluster.gossip_interval = caxton_profiles::HumanDuration::from_millis(150);
        cluster.gossip_fanout = 5;
        cluster.probe_interval = caxton_profiles::HumanDuration::from_millis(700);
        cluster.probe_timeout = caxton_profiles::HumanDuration::from_millis(90);
        cluster.indirect_probes = 2;
        cluster.suspicion_multiplier = 6;
        profile.transport.quic.max_datagram_size = 1400;
        let swim = SwimSettings::from_profile(&profile);
        let config = swim.foca_config(5);
        assert_eq!(config.probe_period, Duration::from_millis(700));
        assert_eq!(config.probe_rtt, Duration::from_millis(90));
        assert_eq!(config.num_indirect_probes.get(), 2);
        assert_eq!(config.suspect_to_down_after, Duration::from_millis(4200));
        let gossip = config.periodic_gossip.expect("periodic gossip");
        assert_eq!(
            (gossip.frequency, gossip.num_members.get()),
            (Duration::from_millis(150), 5)
        );
        assert_eq!(config.max_packet_size.get(), 1400 - FRAME_OVERHEAD);
        assert!(config.notify_down_members);
    }

    #[test]
    fn a_cluster_needs_a_listen_address_and_certificates_beyond_loopback() {
        let mut profile = Profile::default();
        assert!(ClusterSettings::from_profile(&profile, &[])
            .expect("alone")
            .is_none());
        let error =
            ClusterSettings::from_profile(&profile, &["10.0.0.9:9".into()]).expect_err("no listen");
        assert_eq!(error.key, "coordination.cluster.listen_address");
        let loopback = ClusterSettings::from_profile(&profile, &["127.0.0.1:9".into()])
            .expect("valid")
            .expect("a cluster");
        assert_eq!(loopback.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        profile.coordination.cluster.listen_address = Some("127.0.0.1:7000".into());
        let settings = ClusterSettings::from_profile(&profile, &["localhost:7001".into()])
            .expect("valid")
            .expect("a cluster");
        assert_eq!(
            settings.advertise,
            "127.0.0.1:7000".parse().expect("address")
        );
        assert_eq!(settings.seeds.len(), 1);
        // Without certificates, a seed beyond this machine is refused: its
        // frames would all be dropped.
        let beyond = ClusterSettings::from_profile(&profile, &["10.0.0.9:7001".into()])
            .expect_err("trial mode reaches loopback only");
        assert_eq!(beyond.key, "--join");
        assert!(beyond.message.contains("loopback"), "{}", beyond.message);
        assert!(
            settings.node_name.ends_with("-7000"),
            "{}",
            settings.node_name
        );
        caxton_profiles::check_node_name(&settings.node_name).expect("a valid name");
        profile.coordination.cluster.listen_address = Some("10.1.2.3:7000".into());
        let error = ClusterSettings::from_profile(&profile, &[]).expect_err("public without TLS");
        assert_eq!(error.key, "coordination.cluster.listen_address");
        assert!(
            error.message.contains("coordination.cluster.tls"),
            "{}",
            error.message
        );
    }
}
