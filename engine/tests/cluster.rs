//! Three engine processes on loopback form a cluster with certificates from
//! `engine cluster init-certs`: they agree on members; one killed with
//! SIGKILL is declared down by the others within the bound its profile
//! implies; it restarts and rejoins; one that stops gracefully is seen to
//! leave at once; a node with a certificate from another CA is refused; and
//! garbage sent to the cluster port changes nothing.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use caxton_admin::AdminClient;
use caxton_cluster::SwimSettings;
use common::{engine, start_engine, stdout, RunningEngine};

/// The profile the nodes run: park-and-wake shards (several engines share
/// this machine's cores) with the small-cluster timing.
const PROFILES: [&str; 4] = ["--profile", "default", "--profile", "cluster-small"];

/// How long a wait for what the protocol bounds may take here: three engine
/// processes share a loaded 2-core machine, so this is a guard against a
/// hang (a driver that stops feeding the protocol its timers, a connection
/// that swallows messages until its 2-minute idle timeout), not a timing
/// check. The bounds themselves are checked in simulated time
/// (`cluster/src/membership_tests.rs`).
fn patience_for(bound: Duration) -> Duration {
    bound * 3 + Duration::from_secs(5)
}

fn node(
    certs: &Path,
    ca_dir: &Path,
    name: &str,
    listen: &str,
    join: Option<SocketAddr>,
) -> RunningEngine {
    node_with(certs, ca_dir, name, listen, join, &[])
}

/// [`node`] with more `--set KEY=VALUE` overrides.
fn node_with(
    certs: &Path,
    ca_dir: &Path,
    name: &str,
    listen: &str,
    join: Option<SocketAddr>,
    overrides: &[String],
) -> RunningEngine {
    let set = |key: &str, value: String| vec!["--set".to_owned(), format!("{key}={value}")];
    let mut arguments: Vec<String> = PROFILES.iter().map(|text| (*text).to_owned()).collect();
    arguments.extend(set("runtime.worker_threads", "1".into()));
    arguments.extend(set("coordination.cluster.listen_address", listen.into()));
    arguments.extend(set("coordination.cluster.node_name", name.into()));
    arguments.extend(set(
        "coordination.cluster.tls.ca_file",
        ca_dir.join("ca.pem").display().to_string(),
    ));
    arguments.extend(set(
        "coordination.cluster.tls.cert_file",
        certs.join(format!("{name}.pem")).display().to_string(),
    ));
    arguments.extend(set(
        "coordination.cluster.tls.key_file",
        certs.join(format!("{name}-key.pem")).display().to_string(),
    ));
    if let Some(seed) = join {
        arguments.push("--join".into());
        arguments.push(seed.to_string());
    }
    for override_ in overrides {
        arguments.push("--set".into());
        arguments.push(override_.clone());
    }
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    start_engine(&arguments)
}

fn cluster_address(engine: &RunningEngine) -> SocketAddr {
    let marker = "cluster listening on ";
    let start = engine
        .seen
        .find(marker)
        .unwrap_or_else(|| panic!("no cluster address in {}", engine.seen))
        + marker.len();
    let text: String = engine.seen[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    text.parse().expect("an address")
}

fn status(engine: &RunningEngine) -> serde_json::Value {
    let client = AdminClient::new(engine.admin_address(), None).expect("a client");
    let answer = client
        .get("/v1/cluster")
        .expect("the admin endpoint answers");
    assert!(answer.status.is_success(), "{}", answer.text());
    answer.json()
}

fn state_of(view: &serde_json::Value, name: &str) -> Option<String> {
    view["members"]
        .as_array()?
        .iter()
        .find(|member| member["name"] == name)
        .and_then(|member| member["state"].as_str().map(str::to_owned))
}

/// Poll `engine` until `done` holds; the time it took.
fn wait(
    engine: &RunningEngine,
    limit: Duration,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let view = status(engine);
        if done(&view) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what} within {limit:?}: {view:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn init_certs(directory: &Path, nodes: &str) {
    let output = engine(&[
        "cluster",
        "init-certs",
        &directory.display().to_string(),
        "--nodes",
        nodes,
    ]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout(&output).contains("coordination.cluster.tls.cert_file"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn three_processes_join_fail_rejoin_and_leave() {
    let (certs, a, b, c) = three_nodes();
    let dir = certs.path();
    let seed = cluster_address(&a);
    let c_address = cluster_address(&c);
    let view = status(&a);
    assert_eq!(view["authenticated"], true);
    assert_eq!(state_of(&view, "b").as_deref(), Some("alive"));

    // SIGKILL: no farewell, so the others must detect it.
    let mut profile = caxton_profiles::Profile::default();
    profile.coordination.cluster.gossip_interval = caxton_profiles::HumanDuration::from_millis(100);
    profile.coordination.cluster.gossip_fanout = 3;
    profile.coordination.cluster.probe_interval = caxton_profiles::HumanDuration::from_millis(500);
    profile.coordination.cluster.suspicion_multiplier = 3;
    let bound = SwimSettings::from_profile(&profile).down_detection_bound(3);
    let mut c = c;
    c.child.kill().expect("SIGKILL");
    let _ = c.child.wait();
    for engine in [&a, &b] {
        wait(engine, patience_for(bound), "c declared down", |view| {
            state_of(view, "c").as_deref() == Some("down")
        });
    }

    // It comes back at the same address, under a newer generation.
    let old_generation = status(&a)["members"]
        .as_array()
        .and_then(|members| {
            members
                .iter()
                .find(|member| member["name"] == "c")
                .map(|member| member["generation"].clone())
        })
        .expect("c known");
    let c = node(dir, dir, "c", &c_address.to_string(), Some(seed));
    wait(&a, Duration::from_secs(10), "c back", |view| {
        state_of(view, "c").as_deref() == Some("alive") && view["counts"]["alive"] == 2
    });
    let view = status(&a);
    let generation = view["members"].as_array().and_then(|members| {
        members
            .iter()
            .find(|member| member["name"] == "c")
            .map(|member| member["generation"].as_u64())
    });
    assert!(generation.flatten() > old_generation.as_u64(), "{view:#}");

    // A graceful stop is announced: the others declare b down on its word,
    // never suspecting it first (a failure is found by a missed probe, and
    // suspected before it is declared down).
    let suspicions_of_b = |engine: &RunningEngine| {
        let view = status(engine);
        view["members"]
            .as_array()
            .and_then(|members| members.iter().find(|member| member["name"] == "b"))
            .and_then(|member| member["suspicions"].as_u64())
            .unwrap_or_else(|| panic!("b's suspicions in {view:#}"))
    };
    let before = [suspicions_of_b(&a), suspicions_of_b(&c)];
    let (status_code, log) = b.terminate();
    assert!(status_code.success(), "{log}");
    assert!(log.contains("left the cluster"), "{log}");
    for engine in [&a, &c] {
        wait(engine, Duration::from_secs(5), "b seen to leave", |view| {
            state_of(view, "b").as_deref() == Some("down")
        });
    }
    assert_eq!(
        [suspicions_of_b(&a), suspicions_of_b(&c)],
        before,
        "b's leave was suspected"
    );
    drop(c);
    // a's log tells the crash it suspected from the leave it was told of.
    let (_, log) = a.terminate();
    assert!(
        log.lines()
            .any(|line| line.contains("member down: it failed") && line.contains("member=c")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|line| line.contains("member down: it left") && line.contains("member=b")),
        "{log}"
    );
}

#[test]
fn a_foreign_certificate_and_garbage_change_nothing() {
    let ours = tempfile::tempdir().expect("a directory");
    let theirs = tempfile::tempdir().expect("a directory");
    init_certs(ours.path(), "a,b");
    init_certs(theirs.path(), "intruder");
    let a = node(ours.path(), ours.path(), "a", "127.0.0.1:0", None);
    let seed = cluster_address(&a);
    let b = node(ours.path(), ours.path(), "b", "127.0.0.1:0", Some(seed));
    wait(&a, Duration::from_secs(10), "b joined", |view| {
        view["counts"]["alive"] == 1
    });
    let intruder = node(
        theirs.path(),
        theirs.path(),
        "intruder",
        "127.0.0.1:0",
        Some(seed),
    );
    wait(
        &a,
        Duration::from_secs(10),
        "the intruder refused",
        |view| view["transport_counts"]["handshakes_refused"].as_u64() >= Some(1),
    );
    // Garbage datagrams to the cluster port: QUIC authenticates every packet.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a socket");
    for index in 0..500u32 {
        let junk: Vec<u8> = (0..1200u32)
            .map(|at| (at.wrapping_mul(2_654_435_761).wrapping_add(index) >> 7) as u8)
            .collect();
        let _ = socket.send_to(&junk, seed);
    }
    std::thread::sleep(Duration::from_millis(500));
    let view = status(&a);
    assert_eq!(view["counts"]["alive"], 1, "{view:#}");
    assert_eq!(state_of(&view, "b").as_deref(), Some("alive"));
    assert!(state_of(&view, "intruder").is_none(), "{view:#}");
    assert_eq!(
        status(&intruder)["counts"]["alive"],
        0,
        "the intruder sees nobody"
    );
    let metrics = AdminClient::new(a.admin_address(), None)
        .expect("a client")
        .get("/metrics")
        .expect("scraped")
        .text();
    // The seed refused nothing: the intruder refused the seed's certificate
    // (from another CA than its own) and closed with an alert.
    assert!(
        metrics.contains("caxton_cluster_handshakes_refused_total{by=\"peer\"} ")
            && !metrics.contains("caxton_cluster_handshakes_refused_total{by=\"peer\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("caxton_cluster_members{state=\"alive\"} 1"),
        "{metrics}"
    );
    // The status names every reason a frame is dropped for.
    let shown = engine(&[
        "cluster",
        "status",
        "--admin",
        &a.admin_address().to_string(),
    ]);
    assert!(
        stdout(&shown).contains(", version ") && stdout(&shown).contains(", transport "),
        "{}",
        stdout(&shown)
    );
    // The intruder says which peer refused it and what to check, and does
    // not say it for every dial.
    // Its whole log: what it said while booting, and after.
    let booting = intruder.seen.clone();
    let (_, rest) = intruder.terminate();
    let log = booting + &rest;
    let lines = log
        .lines()
        .filter(|line| line.contains("is not from this node's CA"))
        .count();
    assert!(lines >= 1, "{log}");
    assert!(
        log.contains(&format!("refused a handshake with {seed}")),
        "{log}"
    );
    assert!(lines <= 2, "{lines} lines in about a second: {log}");
    drop(b);
}

#[test]
fn a_node_without_certificates_is_told_the_cluster_refused_it() {
    let certs = tempfile::tempdir().expect("a directory");
    init_certs(certs.path(), "a");
    let a = node(certs.path(), certs.path(), "a", "127.0.0.1:0", None);
    let seed = cluster_address(&a);
    // No certificates: loopback trial mode, which an authenticated cluster
    // refuses once the handshake reaches this node's (missing) certificate.
    let seed_text = seed.to_string();
    let mut arguments = PROFILES.to_vec();
    arguments.extend([
        "--set",
        "runtime.worker_threads=1",
        "--set",
        "coordination.cluster.node_name=stray",
        "--join",
        &seed_text,
    ]);
    let stray = start_engine(&arguments);
    // Joined without a listen address: in a cluster, so not told its
    // cluster keys wait for one.
    assert!(!stray.seen.contains("runs alone"), "{}", stray.seen);
    wait(
        &stray,
        Duration::from_secs(10),
        "the refusal counted",
        |view| view["transport_counts"]["handshakes_refused"].as_u64() >= Some(1),
    );
    let view = status(&stray);
    assert_eq!(view["counts"]["alive"], 0);
    assert!(
        view["transport_counts"]["handshakes_refused_by_peer"].as_u64() >= Some(1),
        "the seed refused it: {view:#}"
    );
    let booting = stray.seen.clone();
    let (_, rest) = stray.terminate();
    let log = booting + &rest;
    assert!(
        log.contains(&format!("{seed} refused this node's handshake"))
            && log.contains("does not trust this node's certificate"),
        "{log}"
    );
    drop(a);
}

#[test]
fn a_node_alone_answers_no_cluster_and_public_addresses_need_certificates() {
    let mut arguments = PROFILES.to_vec();
    arguments.extend(["--set", "runtime.worker_threads=1"]);
    let alone = start_engine(&arguments);
    // cluster-small's keys are written, and wait for a cluster.
    assert!(
        alone.seen.contains("runs alone") && alone.seen.contains("probe_interval"),
        "{}",
        alone.seen
    );
    let client = AdminClient::new(alone.admin_address(), None).expect("a client");
    let answer = client.get("/v1/cluster").expect("answers");
    assert_eq!(answer.status.as_u16(), 404);
    assert!(
        answer.text().contains("listen_address"),
        "{}",
        answer.text()
    );
    drop(alone);
    let refused = engine(&[
        "--profile",
        "default",
        "--set",
        "coordination.cluster.listen_address=0.0.0.0:0",
        "--set",
        "coordination.cluster.advertise_address=10.0.0.1:7946",
    ]);
    assert!(!refused.status.success());
    let text = common::stderr(&refused);
    // Pointed at the address the user set, which reaches beyond loopback.
    assert!(
        text.contains("coordination.cluster.tls")
            && text.contains("--set coordination.cluster.advertise_address=10.0.0.1:7946"),
        "{text}"
    );
    // A built-in profile's cluster section is not what is blamed for the
    // user's own public listen address or lone certificate file.
    for set in [
        "coordination.cluster.listen_address=192.0.2.2:7604",
        "coordination.cluster.tls.cert_file=certs/a.pem",
    ] {
        let refused = engine(&["--profile", "cluster-small", "--set", set]);
        assert_eq!(refused.status.code(), Some(2), "{set}");
        let text = common::stderr(&refused);
        assert!(
            text.contains(&format!("--set {set}")) && !text.contains("built-in"),
            "{set}: {text}"
        );
    }
    let refused = engine(&["--join", "10.0.0.1:7946"]);
    assert!(!refused.status.success());
    assert!(common::stderr(&refused).contains("coordination.cluster.listen_address"));
    // A join with no port, or none to reach, is refused as the join it is.
    for join in ["127.0.0.1", "127.0.0.1:99999", ":7601", "127.0.0.1:0"] {
        let refused = engine(&["--profile", "cluster-small", "--join", join]);
        assert_eq!(refused.status.code(), Some(2), "{join}");
        let text = common::stderr(&refused);
        assert!(
            text.contains("--join")
                && text.contains("is not HOST:PORT")
                && !text.contains("built-in"),
            "{join}: {text}"
        );
    }
    // A certificate file that does not read is named by its key, where it
    // was set: here the `--set`, not the built-in profile below it.
    let certs = tempfile::tempdir().expect("a directory");
    init_certs(certs.path(), "a,b");
    let file = |name: &str| certs.path().join(name).display().to_string();
    let missing = file("nope.pem");
    // A node on cluster-small with these three files, refused or not.
    let with_files = |ca: &str, cert: &str, key: &str| {
        engine(&[
            "--profile",
            "cluster-small",
            "--set",
            "coordination.cluster.listen_address=127.0.0.1:0",
            "--set",
            "observability.admin.listen=127.0.0.1:0",
            "--set",
            &format!("coordination.cluster.tls.ca_file={ca}"),
            "--set",
            &format!("coordination.cluster.tls.cert_file={cert}"),
            "--set",
            &format!("coordination.cluster.tls.key_file={key}"),
        ])
    };
    let refused = with_files(&file("ca.pem"), &missing, &file("a-key.pem"));
    assert_eq!(refused.status.code(), Some(2));
    let text = common::stderr(&refused);
    assert!(
        text.contains(&format!(
            "--set coordination.cluster.tls.cert_file={missing}: `coordination.cluster.tls.cert_file`"
        )),
        "{text}"
    );
    // A key file that holds no key, or another node's key, is named as the
    // key file, not as the certificate beside it.
    for (key_file, says) in [
        (file("a.pem"), "not a PEM private key"),
        (file("b-key.pem"), "does not match the certificate in"),
    ] {
        let refused = with_files(&file("ca.pem"), &file("a.pem"), &key_file);
        assert_eq!(refused.status.code(), Some(2), "{key_file}");
        let text = common::stderr(&refused);
        assert!(
            text.contains("`coordination.cluster.tls.key_file`") && text.contains(says),
            "{key_file}: {text}"
        );
        // Refused before anything serves: the endpoint never said it listened.
        assert!(
            !text.contains("admin endpoint listening"),
            "{key_file}: {text}"
        );
    }
}

#[test]
fn simulate_prints_figures_writes_its_logs_and_replays_from_its_seed() {
    let output = tempfile::tempdir().expect("a directory");
    let directory = output.path().display().to_string();
    let arguments = [
        "--profile",
        "cluster-small",
        "cluster",
        "simulate",
        "--nodes",
        "12",
        "--duration",
        "20s",
        "--scenario",
        "churn",
        "--seed",
        "5",
        "--output",
        &directory,
    ];
    let first = engine(&arguments);
    assert!(first.status.success(), "{}", common::stderr(&first));
    let text = stdout(&first);
    for expected in [
        "dissemination (arrival → every live node)",
        "formation formed",
        // Churn restarts each crashed node before the suspicion timeout ends.
        "crashes restarted before every node declared them down",
        "false down declarations",
        "traffic per node",
        "cluster simulate --nodes 12 --scenario churn --formation formed",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    for file in [
        "dissemination.hlog",
        "observations.hlog",
        "detection.hlog",
        "summary.json",
    ] {
        assert!(output.path().join(file).exists(), "{file}");
    }
    let digest = |text: &str| {
        text.split("trace digest ")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
    };
    let again = engine(&arguments);
    assert_eq!(
        digest(&text),
        digest(&stdout(&again)),
        "the same seed replays the same run"
    );
    assert!(digest(&text).is_some());

    let analyzed = engine(&["cluster", "analyze-gossip", "--from", &directory]);
    assert!(analyzed.status.success(), "{}", common::stderr(&analyzed));
    assert!(
        stdout(&analyzed).contains("advice:"),
        "{}",
        stdout(&analyzed)
    );

    let bad = engine(&["cluster", "simulate", "--scenario", "meteor"]);
    assert!(!bad.status.success());
    assert!(common::stderr(&bad).contains("meteor"));
    let bad = engine(&["cluster", "simulate", "--formation", "osmosis"]);
    assert!(!bad.status.success());
    assert!(
        common::stderr(&bad).contains("unknown formation `osmosis`: use formed or joins"),
        "{}",
        common::stderr(&bad)
    );
    // An --output that cannot take the report is refused before the run.
    let file = tempfile::NamedTempFile::new().expect("a file");
    let bad = engine(&[
        "cluster",
        "simulate",
        "--duration",
        "1h",
        "--output",
        file.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        common::stderr(&bad).contains("nothing was run"),
        "{}",
        common::stderr(&bad)
    );
}

/// A node on `cluster-small` in loopback trial mode (no certificates),
/// named `name`, joining through `seed` if given.
fn trial_node(name: &str, seed: Option<&str>) -> RunningEngine {
    trial_node_with(name, seed, &[])
}

/// [`trial_node`] with `extra` arguments after its own.
fn trial_node_with(name: &str, seed: Option<&str>, extra: &[&str]) -> RunningEngine {
    let name = format!("coordination.cluster.node_name={name}");
    let mut arguments = vec![
        "--profile",
        "default",
        "--profile",
        "cluster-small",
        "--set",
        "runtime.worker_threads=1",
        "--set",
        "coordination.cluster.listen_address=127.0.0.1:0",
        "--set",
        name.as_str(),
    ];
    if let Some(seed) = seed {
        arguments.extend(["--join", seed]);
    }
    arguments.extend_from_slice(extra);
    start_engine(&arguments)
}

/// A seed where nothing answers: the node serves alone, says so once the
/// directory's wait is over, and counts its failed dials (a QUIC handshake
/// gives up within its bound, not at the 2-minute idle timeout).
#[test]
fn a_seed_that_never_answers_is_named_and_its_dials_counted() {
    // A UDP port that takes packets and answers none.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("a socket");
    let seed = silent.local_addr().expect("an address").to_string();
    let a = trial_node("a", Some(&seed));
    // 10 probe intervals on cluster-small (5 s), and one handshake bound (5 s).
    wait(
        &a,
        Duration::from_secs(30),
        "a failed dial counted",
        |view| view["transport_counts"]["connect_failures"].as_u64() > Some(0),
    );
    // `cluster members` says why it lists nobody, naming the seed.
    let members = engine(&[
        "cluster",
        "members",
        "--admin",
        &a.admin_address().to_string(),
    ]);
    let listed = common::stdout(&members);
    assert!(
        listed.contains(&format!("joins through {seed};"))
            && listed.contains("rounds of joins unanswered"),
        "{listed}"
    );
    let (_, log) = a.terminate();
    assert!(
        log.contains("no member answered within 10 probe intervals"),
        "{log}"
    );
}

/// `coordination.cluster.seeds` in a profile joins as `--join` does.
#[test]
fn seeds_written_in_the_profile_are_joined() {
    let a = trial_node("a", None);
    let seeds = format!("coordination.cluster.seeds=[\"{}\"]", cluster_address(&a));
    let b = trial_node_with("b", None, &["--set", &seeds]);
    // The counts are of the other members.
    wait(
        &a,
        Duration::from_secs(10),
        "b joined through its seeds",
        |view| view["counts"]["alive"] == 1,
    );
    drop(b);
}

/// `coordination.cluster.advertise_address` is the address the other
/// members learn for the node, not the one it listens on: here b listens on
/// 127.0.0.1 and advertises 127.0.0.2 (a host behind a NAT would advertise
/// its public address), and a lists b there.
#[test]
fn members_learn_the_advertised_address() {
    let a = trial_node("a", None);
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("coordination.cluster.listen_address=127.0.0.1:{port}");
    let advertise = format!("coordination.cluster.advertise_address=127.0.0.2:{port}");
    let seed = cluster_address(&a).to_string();
    let b = trial_node_with("b", Some(&seed), &["--set", &listen, "--set", &advertise]);
    let advertised = format!("127.0.0.2:{port}");
    wait(
        &a,
        Duration::from_secs(10),
        "a lists b at its advertised address",
        |view| {
            view["members"].as_array().is_some_and(|members| {
                members
                    .iter()
                    .any(|member| member["name"] == "b" && member["addr"] == advertised.as_str())
            })
        },
    );
    drop(b);
}

/// A second member under a name already in use is named in the log, with
/// the key that gives each node its own.
#[test]
fn two_members_of_one_name_are_warned_about() {
    let a = trial_node("a", None);
    let seed = cluster_address(&a).to_string();
    let first = trial_node("b", Some(&seed));
    let second = trial_node("b", Some(&seed));
    wait(&a, Duration::from_secs(10), "both joined", |view| {
        view["counts"]["alive"] == 2
    });
    // Judged once the first could have been declared down, had the second
    // been its restart: on cluster-small, 2 × (probe interval, timeout and
    // suspicion) = 4.4 s.
    std::thread::sleep(Duration::from_secs(6));
    let (_, log) = a.terminate();
    assert!(
        log.contains("has the name of the member at")
            && log.contains("coordination.cluster.node_name"),
        "{log}"
    );
    // Each of the two sees the other take its own name, and says so as such.
    let (_, own) = second.terminate();
    assert!(own.contains("has this node's name"), "{own}");
    drop(first);
}

/// A node restarted at a new address comes up under its name before its
/// earlier entry is declared down: that is no second node of one name, and
/// nothing is warned.
#[test]
fn a_node_restarted_at_a_new_address_is_no_name_twin() {
    let a = trial_node("a", None);
    let seed = cluster_address(&a).to_string();
    let first = trial_node("b", Some(&seed));
    wait(&a, Duration::from_secs(10), "b joined", |view| {
        view["counts"]["alive"] == 1
    });
    // Killed without a farewell, and back at once on another port.
    drop(first);
    let second = trial_node("b", Some(&seed));
    wait(&a, Duration::from_secs(15), "b's old entry down", |view| {
        view["counts"]["alive"] == 1
            && state_of(view, "b").is_some()
            && view["members"].as_array().is_some_and(|members| {
                members
                    .iter()
                    .filter(|member| member["name"] == "b")
                    .any(|member| member["state"] == "down")
            })
    });
    // Past the judging time of the restart (4.4 s on cluster-small).
    std::thread::sleep(Duration::from_secs(6));
    let (_, log) = a.terminate();
    assert!(!log.contains("has the name of the member at"), "{log}");
    // Nor does the restarted node take its own old entry for a twin.
    let (_, own) = second.terminate();
    assert!(!own.contains("has this node's name"), "{own}");
}

/// A node with no name of its own (trial mode, its port picked at boot)
/// names itself at boot as the cluster will know it: `HOST-PORT` with the
/// port it was bound to, not port 0.
#[test]
fn a_node_without_a_name_logs_the_name_it_goes_by() {
    let a = start_engine(&[
        "--profile",
        "default",
        "--set",
        "runtime.worker_threads=1",
        "--set",
        "coordination.cluster.listen_address=127.0.0.1:0",
    ]);
    let logged = a
        .seen
        .lines()
        .find(|line| line.contains("cluster listening on"))
        .unwrap_or_else(|| panic!("no listening line in {}", a.seen))
        .to_owned();
    let name = status(&a)["node"]["name"]
        .as_str()
        .expect("a name")
        .to_owned();
    assert!(
        name.ends_with(&format!("-{}", cluster_address(&a).port())),
        "{name}"
    );
    assert!(
        logged.contains(&format!("node={name}")),
        "{logged} / {name}"
    );
}

#[test]
fn analyze_gossip_watches_a_running_node_and_advises() {
    let a = trial_node("a", None);
    let seed = cluster_address(&a).to_string();
    let b = trial_node("b", Some(&seed));
    wait(&a, Duration::from_secs(10), "b joined", |view| {
        view["counts"]["alive"] == 1
    });
    // Past the join's own burst (announces, feeds, the directory exchange):
    // the advice is about steady traffic.
    std::thread::sleep(Duration::from_millis(1500));
    let admin = a.admin_address().to_string();
    let analyzed = engine(&[
        "cluster",
        "analyze-gossip",
        "--window",
        "1s",
        "--admin",
        &admin,
    ]);
    assert!(analyzed.status.success(), "{}", common::stderr(&analyzed));
    let text = stdout(&analyzed);
    assert!(text.contains("MEMBER") && text.contains("\nb "), "{text}");
    // Per member: how often this node saw it declared down and suspected.
    assert!(text.contains("DOWNS SUSPECTED"), "{text}");
    assert!(
        text.contains("DOWNS and SUSPECTED since this node started"),
        "{text}"
    );
    assert!(text.contains("advice:\n- "), "{text}");
    assert!(text.contains("no gossip storm"), "{text}");
    drop(b);
}

/// `engine send AGENT CONTENT` through the admin endpoint at `admin`,
/// again until it succeeds (routes settle) or 10 s pass; its output.
fn send_until_answered(admin: &str, agent: &str, content: &str) -> String {
    let start = Instant::now();
    loop {
        let sent = engine(&["send", agent, content, "--admin", admin]);
        if sent.status.success() {
            return stdout(&sent);
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            common::stderr(&sent)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// POST `body` to `agent`'s messages through the admin API; its answer,
/// which must be a success.
fn post_body(client: &AdminClient, agent: &str, body: &serde_json::Value) -> serde_json::Value {
    let answer = client
        .call(
            hyper::Method::POST,
            &format!("/v1/agents/{agent}/messages"),
            "application/json",
            serde_json::to_vec(body).expect("json"),
        )
        .expect("answered");
    assert!(answer.status.is_success(), "{}", answer.text());
    answer.json()
}

/// The `content_base64` of a message body.
fn base64_of(content: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, content)
}

/// Send `content` to `agent` through the admin API and return the reply.
fn post_message(client: &AdminClient, agent: &str, content: &[u8]) -> serde_json::Value {
    let body = serde_json::json!({ "content_base64": base64_of(content), "timeout_ms": 5000 });
    post_body(client, agent, &body)
}

/// Nodes `a`, `b` and `c`, joined through `a`, each seeing the two others
/// alive; the certificates' directory lives as long as the first value.
fn three_nodes() -> (
    tempfile::TempDir,
    RunningEngine,
    RunningEngine,
    RunningEngine,
) {
    let certs = tempfile::tempdir().expect("a directory");
    init_certs(certs.path(), "a,b,c");
    let dir = certs.path();
    let a = node(dir, dir, "a", "127.0.0.1:0", None);
    let seed = cluster_address(&a);
    let b = node(dir, dir, "b", "127.0.0.1:0", Some(seed));
    let c = node(dir, dir, "c", "127.0.0.1:0", Some(seed));
    for engine in [&a, &b, &c] {
        wait(
            engine,
            Duration::from_secs(10),
            "two others alive",
            |view| view["counts"]["alive"] == 2,
        );
    }
    (certs, a, b, c)
}

/// Nodes `a` and `c` (with `c_overrides`), joined and each seeing the other
/// alive; the certificates' directory lives as long as the first value.
fn two_nodes(c_overrides: &[String]) -> (tempfile::TempDir, RunningEngine, RunningEngine) {
    two_nodes_with(&[], c_overrides)
}

/// [`two_nodes`], `a` with overrides of its own too.
fn two_nodes_with(
    a_overrides: &[String],
    c_overrides: &[String],
) -> (tempfile::TempDir, RunningEngine, RunningEngine) {
    let certs = tempfile::tempdir().expect("a directory");
    init_certs(certs.path(), "a,c");
    let dir = certs.path();
    let a = node_with(dir, dir, "a", "127.0.0.1:0", None, a_overrides);
    let seed = cluster_address(&a);
    let c = node_with(dir, dir, "c", "127.0.0.1:0", Some(seed), c_overrides);
    for engine in [&a, &c] {
        wait(engine, Duration::from_secs(10), "the other alive", |view| {
            view["counts"]["alive"] == 1
        });
    }
    (certs, a, c)
}

/// The agents other nodes host, as `GET /v1/agents` on `engine` lists them:
/// (name, node, instances).
fn elsewhere(engine: &RunningEngine) -> Vec<(String, String, u64)> {
    let client = AdminClient::new(engine.admin_address(), None).expect("a client");
    let answer = client
        .get("/v1/agents")
        .expect("the admin endpoint answers");
    assert!(answer.status.is_success(), "{}", answer.text());
    answer.json()["elsewhere"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            (
                entry["name"].as_str().unwrap_or_default().to_owned(),
                entry["node"].as_str().unwrap_or_default().to_owned(),
                entry["instances"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn wait_for_listing(engine: &RunningEngine, what: &str, want: &[(&str, &str, u64)]) {
    let want: Vec<(String, String, u64)> = want
        .iter()
        .map(|(name, node, count)| ((*name).to_owned(), (*node).to_owned(), *count))
        .collect();
    let start = Instant::now();
    loop {
        let seen = elsewhere(engine);
        if seen == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: want {want:?}, see {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_node_lists_the_agents_the_others_host() {
    let (_certs, a, b, c) = three_nodes();
    let echo = format!("{}/../examples/agents/echo.wat", env!("CARGO_MANIFEST_DIR"));
    let c_admin = c.admin_address().to_string();
    let deployed = engine(&[
        "agents",
        "deploy",
        &echo,
        "--instances",
        "2",
        "--admin",
        &c_admin,
    ]);
    assert!(deployed.status.success(), "{deployed:?}");
    for engine in [&a, &b] {
        wait_for_listing(engine, "echo on c", &[("echo", "c", 2)]);
    }
    assert!(
        elsewhere(&c).is_empty(),
        "a node does not list itself elsewhere"
    );
    let listed = engine(&["agents", "list", "--admin", &a.admin_address().to_string()]);
    assert!(
        stdout(&listed).contains("on other nodes of the cluster")
            && stdout(&listed).contains("echo"),
        "{}",
        stdout(&listed)
    );
    let view = status(&a);
    assert_eq!(
        view["directory"]["nodes"].as_array().map(Vec::len),
        Some(2),
        "{view:#}"
    );

    // An undeploy empties the listing everywhere.
    let undeployed = engine(&["agents", "undeploy", "echo", "--admin", &c_admin]);
    assert!(undeployed.status.success(), "{undeployed:?}");
    wait_for_listing(&a, "echo gone from c", &[]);

    // A node that dies takes its agents out of the directory.
    let b_admin = b.admin_address().to_string();
    let deployed = engine(&["agents", "deploy", &echo, "--admin", &b_admin]);
    assert!(deployed.status.success(), "{deployed:?}");
    wait_for_listing(&a, "echo on b", &[("echo", "b", 1)]);
    let mut b = b;
    b.child.kill().expect("SIGKILL");
    let _ = b.child.wait();
    wait(&a, Duration::from_secs(10), "b declared down", |view| {
        state_of(view, "b").as_deref() == Some("down")
    });
    // Still named, on its departed host with no instance: its sends are
    // answered node-down, and the listing says so.
    wait_for_listing(&a, "b's echo stranded", &[("echo", "b", 0)]);
    let listed = engine(&["agents", "list", "--admin", &a.admin_address().to_string()]);
    let text = stdout(&listed);
    assert!(
        text.lines().any(|line| line.starts_with("echo ")
            && line.contains("(declared down: sends answered caxton:node-down)")),
        "{text}"
    );

    // A send made now, to the agent only b hosted, says why it failed.
    let client = AdminClient::new(a.admin_address(), None).expect("a client");
    let reply = post_message(&client, "echo", b"anyone there?");
    assert_eq!(reply["performative"], "failure", "{reply:#}");
    assert_eq!(reply["content"], "caxton:node-down", "{reply:#}");
    drop(c);
}

#[test]
fn an_agent_undeployed_here_but_hosted_elsewhere_is_reached_there_at_once() {
    let (_certs, a, c) = two_nodes(&[]);
    let echo = format!("{}/../examples/agents/echo.wat", env!("CARGO_MANIFEST_DIR"));
    let (a_admin, c_admin) = (a.admin_address().to_string(), c.admin_address().to_string());
    for admin in [&a_admin, &c_admin] {
        let deployed = engine(&["agents", "deploy", &echo, "--admin", admin]);
        assert!(deployed.status.success(), "{deployed:?}");
    }
    wait_for_listing(&a, "echo on c too", &[("echo", "c", 1)]);
    let undeployed = engine(&["agents", "undeploy", "echo", "--admin", &a_admin]);
    assert!(undeployed.status.success(), "{undeployed:?}");
    // Straight after, every send through a reaches c's echo.
    let client = AdminClient::new(a.admin_address(), None).expect("a client");
    for index in 0..20 {
        let reply = post_message(&client, "echo", format!("try {index}").as_bytes());
        assert_eq!(reply["performative"], "inform", "try {index}: {reply:#}");
    }
    // Undeploying it where it does not run says where it does.
    let elsewhere = engine(&["agents", "undeploy", "echo", "--admin", &a_admin]);
    assert_eq!(elsewhere.status.code(), Some(2), "{elsewhere:?}");
    assert!(
        common::stderr(&elsewhere).contains("does not run on this node; it runs on c ("),
        "{}",
        common::stderr(&elsewhere)
    );
    drop(c);
}

#[test]
fn a_send_through_one_node_reaches_an_agent_on_another() {
    let (_certs, a, c) = two_nodes(&[]);
    let examples = format!("{}/../examples/agents", env!("CARGO_MANIFEST_DIR"));
    let a_admin = a.admin_address().to_string();
    let c_admin = c.admin_address().to_string();
    let deployed = engine(&[
        "agents",
        "deploy",
        &format!("{examples}/echo.wat"),
        "--admin",
        &c_admin,
    ]);
    assert!(deployed.status.success(), "{deployed:?}");
    wait_for_listing(&a, "echo on c", &[("echo", "c", 1)]);

    // A client of node a reaches echo on node c, and its answer comes back:
    // at the first try, since a lists only agents its shards route to.
    let sent = engine(&["send", "echo", "across the cluster", "--admin", &a_admin]);
    assert!(sent.status.success(), "{}", common::stderr(&sent));
    assert_eq!(stdout(&sent), "inform: across the cluster\n");

    // An agent on a reaches it too: a forwarder's last hop crosses nodes and
    // c's echo answers a's client directly.
    for agent in ["forwarder", "fanout", "counter"] {
        let deployed = engine(&[
            "agents",
            "deploy",
            &format!("{examples}/{agent}.wat"),
            "--admin",
            &a_admin,
        ]);
        assert!(deployed.status.success(), "{deployed:?}");
    }
    let client = AdminClient::new(a.admin_address(), None).expect("a client");
    let mut route = vec![1u8, 4];
    route.extend_from_slice(b"echo");
    route.extend_from_slice(b"piped");
    let reply = post_message(&client, "forwarder", &route);
    assert_eq!(reply["performative"], "inform", "{reply:#}");

    // A gather on a asks echo on c and counter on a, and answers when both did.
    let mut names = vec![2u8, 4];
    names.extend_from_slice(b"echo");
    names.push(7);
    names.extend_from_slice(b"counter");
    let gathered = post_message(&client, "fanout", &names);
    assert_eq!(gathered["performative"], "inform", "{gathered:#}");
    assert_eq!(
        gathered["content_base64"],
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            2u32.to_le_bytes()
        ),
        "{gathered:#}"
    );
    let metrics = client.get("/metrics").expect("metrics").text();
    assert!(
        metrics.contains("caxton_remote_messages_total{direction=\"sent\"}"),
        "{metrics}"
    );
    let to_c = format!(
        "caxton_remote_peer_messages_total{{peer=\"{}\",direction=\"sent\"}}",
        cluster_address(&c)
    );
    assert!(metrics.contains(&to_c), "{to_c} in {metrics}");
    // c timed the hops from a: send on a to handler start on c.
    let c_metrics = AdminClient::new(c.admin_address(), None)
        .expect("a client")
        .get("/metrics")
        .expect("metrics")
        .text();
    let remote_hops = c_metrics
        .lines()
        .find_map(|line| line.strip_prefix("caxton_remote_routing_latency_seconds_count "))
        .and_then(|count| count.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(remote_hops >= 2.0, "{c_metrics}");
    drop(c);
}

/// Deploy the example `agent` (with `deploy_flags`) on `c`, wait until `a`
/// lists it there, and send it a request through `a`, its deadline 30 s
/// away, on a thread that returns how long the answer took and the answer.
/// Returns once the request has had time to reach `c`.
fn request_held_on(
    a: &RunningEngine,
    c: &RunningEngine,
    agent: &'static str,
    deploy_flags: &[&str],
) -> std::thread::JoinHandle<(Duration, serde_json::Value)> {
    deploy_example_on(a, c, agent, deploy_flags);
    let waiting = request_through(a, agent);
    std::thread::sleep(Duration::from_millis(500));
    waiting
}

/// Deploy the example `agent` (with `deploy_flags`) on `c`, and wait until
/// `a` lists it there.
fn deploy_example_on(a: &RunningEngine, c: &RunningEngine, agent: &str, deploy_flags: &[&str]) {
    let module = format!(
        "{}/../examples/agents/{agent}.wat",
        env!("CARGO_MANIFEST_DIR")
    );
    let c_admin = c.admin_address().to_string();
    let mut command = vec!["agents", "deploy", module.as_str()];
    command.extend_from_slice(deploy_flags);
    command.extend_from_slice(&["--admin", &c_admin]);
    let deployed = engine(&command);
    assert!(deployed.status.success(), "{deployed:?}");
    wait_for_listing(a, &format!("{agent} on c"), &[(agent, "c", 1)]);
}

/// A request to `agent` through `a`, its deadline 30 s away, on a thread
/// that returns how long the answer took and the answer.
fn request_through(
    a: &RunningEngine,
    agent: &'static str,
) -> std::thread::JoinHandle<(Duration, serde_json::Value)> {
    let a_admin = a.admin_address();
    std::thread::spawn(move || {
        let client = AdminClient::new(a_admin, None).expect("a client");
        let body = serde_json::json!({ "content": "hold", "timeout_ms": 30_000 });
        let started = Instant::now();
        let reply = post_body(&client, agent, &body);
        (started.elapsed(), reply)
    })
}

#[test]
fn a_request_waiting_on_a_node_that_dies_is_answered_for_its_loss() {
    let (_certs, a, c) = two_nodes(&[]);
    // A request through a, held by c's loop; its deadline is far away.
    let waiting = request_held_on(&a, &c, "loop", &["--max-execution-time", "60s"]);
    let mut c = c;
    c.child.kill().expect("SIGKILL");
    let _ = c.child.wait();
    let (took, reply) = waiting.join().expect("the sender's thread");
    let content = reply["content"].as_str().unwrap_or_default().to_owned();
    assert_eq!(reply["performative"], "failure", "{reply:#}");
    assert!(
        content == "caxton:node-down" || content == "caxton:connection-lost",
        "{reply:#}"
    );
    // Answered for the node's loss, not at the request's deadline (that
    // answer would be `caxton:timeout`); how soon is the cluster suite's
    // figure (`cluster_node_down_answer`), not this test's.
    assert!(took < Duration::from_secs(30), "answered after {took:?}");
}

#[test]
fn over_tcp_a_request_in_flight_on_a_connection_that_ends_is_answered_connection_lost() {
    let tcp = ["transport.type=tcp".to_owned()];
    let (_certs, a, c) = two_nodes_with(&tcp, &tcp);
    let waiting = request_held_on(&a, &c, "sink", &[]);
    let mut c = c;
    c.child.kill().expect("SIGKILL");
    let _ = c.child.wait();
    // The kernel ends the dead process's connections at once; a sees its
    // connection to c end before any probe could declare c down.
    let (_, reply) = waiting.join().expect("the sender's thread");
    assert_eq!(reply["performative"], "failure", "{reply:#}");
    assert_eq!(reply["content"], "caxton:connection-lost", "{reply:#}");
}

#[test]
fn a_request_waiting_for_a_connection_that_cannot_be_made_is_answered_connection_lost() {
    // c is gone but not yet declared down (a suspects slowly): a still
    // routes c's agent there, and dials for the request's frame.
    let slow = [
        "transport.type=tcp".to_owned(),
        "coordination.cluster.probe_interval=1s".to_owned(),
        "coordination.cluster.suspicion_multiplier=30".to_owned(),
    ];
    let (_certs, a, c) = two_nodes_with(&slow, &slow);
    deploy_example_on(&a, &c, "sink", &[]);
    let mut c = c;
    c.child.kill().expect("SIGKILL");
    let _ = c.child.wait();
    // Once a has seen its connection end, the request waits for a new
    // one, which c's closed port refuses.
    wait(&a, Duration::from_secs(10), "no connection to c", |view| {
        view["transport_counts"]["connections"] == 0
    });
    let (took, reply) = request_through(&a, "sink")
        .join()
        .expect("the sender's thread");
    assert_eq!(reply["performative"], "failure", "{reply:#}");
    // Not `caxton:node-down` much later, once c is declared down, nor
    // `caxton:timeout` at the deadline.
    assert_eq!(reply["content"], "caxton:connection-lost", "{reply:#}");
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    assert_ne!(state_of(&status(&a), "c").as_deref(), Some("down"));
}

#[test]
fn the_largest_message_crosses_nodes_and_a_larger_one_is_refused_before_it_leaves() {
    let (_certs, a, c) = two_nodes(&[]);
    deploy_example_on(&a, &c, "echo", &[]);
    let client = AdminClient::new(a.admin_address(), None).expect("a client");
    // The most one message carries (1 MiB, an agent's limit too) crosses in
    // a frame and is handled there (echo answers what its one page of
    // memory holds of it).
    let largest = vec![b'x'; 1 << 20];
    let reply = post_message(&client, "echo", &largest);
    assert_eq!(reply["performative"], "inform", "{reply:#}");
    let echoed = reply["content"].as_str().unwrap_or_default();
    assert!(
        !echoed.is_empty() && echoed.bytes().all(|byte| byte == b'x'),
        "{reply:#}"
    );
    // Past it, the admin API refuses it (413) before it reaches a shard,
    // though its upload limit (16 MB) would take it: no node could carry it
    // on (the 2 MiB frame of remote messages answers `caxton:refused:too-large`
    // for anything past that, in `remote_tests`).
    let body = serde_json::json!({ "content_base64": base64_of(&vec![b'x'; 2_100_000]) });
    let refused = client
        .call(
            hyper::Method::POST,
            "/v1/agents/echo/messages",
            "application/json",
            body.to_string().into_bytes(),
        )
        .expect("answers");
    assert_eq!(refused.status.as_u16(), 413, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "content-too-large");
    // The lane the largest took did not break: others still cross.
    let reply = post_message(&client, "echo", b"still here");
    assert_eq!(reply["performative"], "inform", "{reply:#}");
    let metrics = client.get("/metrics").expect("metrics").text();
    assert!(
        !metrics.lines().any(|line| line
            .starts_with("caxton_remote_lanes_closed_total{reason=\"broken\"}")
            && !line.ends_with(" 0")),
        "{metrics}"
    );
    drop(c);
}

#[test]
fn over_quic_a_request_in_flight_on_a_connection_that_ended_is_answered_connection_lost() {
    // A QUIC connection that idles out says so to no one: c stalls (its
    // process stopped) past the idle timeout, well within what membership
    // would take to declare it down, and a's connection to it ends.
    let quic = [
        "transport.quic.keep_alive_interval=50ms".to_owned(),
        "transport.quic.idle_timeout=200ms".to_owned(),
        "coordination.cluster.probe_interval=1s".to_owned(),
        "coordination.cluster.suspicion_multiplier=30".to_owned(),
    ];
    let (_certs, a, c) = two_nodes_with(&quic, &quic);
    let waiting = request_held_on(&a, &c, "sink", &[]);
    let pid = c.child.id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(1_500));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // The next frame for c (a probe) finds the connection ended and dials
    // again; the request sent on the old one is answered lost, not left
    // to wait for its 30 s deadline.
    let (took, reply) = waiting.join().expect("the sender's thread");
    assert_eq!(reply["performative"], "failure", "{reply:#}");
    assert_eq!(reply["content"], "caxton:connection-lost", "{reply:#}");
    assert!(took < Duration::from_secs(20), "answered after {took:?}");
    // Not for c's loss: c was suspected at most, never declared down, and
    // is alive again.
    wait(&a, Duration::from_secs(10), "c alive again", |view| {
        view["counts"]["alive"] == 1
    });
    assert_eq!(status(&a)["counts"]["down"], 0, "{:#}", status(&a));
    drop(c);
}

#[test]
fn a_request_to_a_node_restarted_before_it_was_declared_down_is_answered_at_once() {
    let (certs, a, c) = two_nodes(&[]);
    let dir = certs.path();
    let (seed, c_address) = (cluster_address(&a), cluster_address(&c));
    // A request through a to c's sink, which never answers.
    let waiting = request_held_on(&a, &c, "sink", &[]);
    // Killed and started again at once: c is back under a newer generation
    // before anyone declares it down. Its old process took the request and
    // will never answer it.
    let mut c = c;
    c.child.kill().expect("SIGKILL");
    let _ = c.child.wait();
    let _c = node(dir, dir, "c", &c_address.to_string(), Some(seed));
    let (took, reply) = waiting.join().expect("the sender's thread");
    assert_eq!(reply["performative"], "failure", "{reply:#}");
    // Not `caxton:timeout`, which comes at the request's deadline.
    assert_eq!(reply["content"], "caxton:node-down", "{reply:#}");
    assert!(took < Duration::from_secs(30), "answered after {took:?}");
}

#[test]
fn a_seed_restarted_at_its_address_is_found_again_within_a_reconnect_round() {
    // c joined through a, which has no seeds of its own: restarted, a knows
    // nobody, and waits for c to find it.
    let (certs, a, c) = two_nodes(&[]);
    let dir = certs.path();
    let a_address = cluster_address(&a);
    let mut a = a;
    a.child.kill().expect("SIGKILL");
    let _ = a.child.wait();
    wait(&c, Duration::from_secs(10), "a declared down", |view| {
        state_of(view, "a").as_deref() == Some("down")
    });
    let a = node(dir, dir, "a", &a_address.to_string(), None);
    // c announces to a member it holds down every ten probe intervals
    // (cluster-small: 5 s). Its old connection to a's dead process must
    // not swallow that announce until the connection's idle timeout
    // (the default profile's: 2 minutes).
    for (engine, other) in [(&c, "a"), (&a, "c")] {
        wait(
            engine,
            patience_for(Duration::from_secs(5)),
            "a found again",
            |view| state_of(view, other).as_deref() == Some("alive"),
        );
    }
}

#[test]
fn a_node_declared_down_while_alive_rejoins_under_a_newer_generation_and_lists_only_the_others() {
    let (_certs, a, b, c) = three_nodes();
    let pid = libc::pid_t::try_from(c.child.id()).expect("a pid");
    // SAFETY: signalling a child process this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
    for engine in [&a, &b] {
        wait(engine, Duration::from_secs(10), "c declared down", |view| {
            state_of(view, "c").as_deref() == Some("down")
        });
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0, "SIGCONT");
    // c hears of its own death from both, rejoins under a newer
    // generation, and sees them alive; its old identity, whose death the
    // others keep gossiping, is not a member it lists.
    wait(
        &c,
        Duration::from_secs(10),
        "c renewed, beside a and b",
        |view| view["membership"]["renewals"] == 1 && view["counts"]["alive"] == 2,
    );
    for engine in [&a, &b] {
        wait(engine, Duration::from_secs(10), "c seen back", |view| {
            state_of(view, "c").as_deref() == Some("alive")
        });
    }
    // Long enough for the old identity's death to have gone round.
    std::thread::sleep(Duration::from_secs(2));
    let view = status(&c);
    assert!(state_of(&view, "c").is_none(), "c lists itself: {view:#}");
    assert_eq!(view["counts"]["down"], 0, "{view:#}");
    assert_eq!(view["counts"]["alive"], 2, "{view:#}");
}

#[test]
fn a_durable_send_is_stored_by_the_node_that_hosts_its_agent() {
    let data = tempfile::tempdir().expect("a data directory");
    let (_certs, a, c) = two_nodes(&[
        "messaging.enable_persistence=true".into(),
        format!("storage.data_directory={}", data.path().display()),
    ]);
    let echo = format!("{}/../examples/agents/echo.wat", env!("CARGO_MANIFEST_DIR"));
    let deployed = engine(&[
        "agents",
        "deploy",
        &echo,
        "--admin",
        &c.admin_address().to_string(),
    ]);
    assert!(deployed.status.success(), "{deployed:?}");
    wait_for_listing(&a, "echo on c", &[("echo", "c", 1)]);
    // a runs without persistence: the send is stored on c, where echo lives.
    let sent = engine(&[
        "send",
        "echo",
        "kept",
        "--persistent",
        "--admin",
        &a.admin_address().to_string(),
    ]);
    assert!(sent.status.success(), "{}", common::stderr(&sent));
    assert_eq!(stdout(&sent), "inform: kept\n");
    assert!(
        common::stderr(&sent).contains("stored"),
        "{}",
        common::stderr(&sent)
    );
    drop(c);
}

#[test]
fn a_restarted_node_with_persistence_is_routable_again_and_kept_its_durable_sends() {
    let data = tempfile::tempdir().expect("a data directory");
    let persistent = [
        "messaging.enable_persistence=true".to_owned(),
        format!("storage.data_directory={}", data.path().display()),
    ];
    let (certs, a, c) = two_nodes(&persistent);
    let echo = format!("{}/../examples/agents/echo.wat", env!("CARGO_MANIFEST_DIR"));
    let deployed = engine(&[
        "agents",
        "deploy",
        &echo,
        "--admin",
        &c.admin_address().to_string(),
    ]);
    assert!(deployed.status.success(), "{deployed:?}");
    let tally = format!(
        "{}/../examples/agents/tally.wat",
        env!("CARGO_MANIFEST_DIR")
    );
    let deployed = engine(&[
        "agents",
        "deploy",
        &tally,
        "--admin",
        &c.admin_address().to_string(),
    ]);
    assert!(deployed.status.success(), "{deployed:?}");
    wait_for_listing(
        &a,
        "echo and tally on c",
        &[("echo", "c", 1), ("tally", "c", 1)],
    );
    // Durable sends through a, stored on c, then c is killed at once.
    let a_admin = a.admin_address().to_string();
    let send_durably = || {
        engine(&[
            "send",
            "tally",
            "k",
            "--persistent",
            "--timeout",
            "5s",
            "--admin",
            &a_admin,
        ])
    };
    for _ in 0..3 {
        let sent = send_durably();
        assert!(
            common::stderr(&sent).contains("stored"),
            "{}",
            common::stderr(&sent)
        );
    }
    let c_address = cluster_address(&c);
    let mut c = c;
    c.child.kill().expect("SIGKILL");
    let _ = c.child.wait();
    wait(&a, Duration::from_secs(10), "c declared down", |view| {
        state_of(view, "c").as_deref() == Some("down")
    });
    // A durable send while c is down is refused at once, not stored, and
    // says why: its sender waits for a notice, which comes.
    let refused = send_durably();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        common::stderr(&refused).contains("did not accept the message: caxton:node-down"),
        "{}",
        common::stderr(&refused)
    );
    // Its agents stay named, stranded on it with no instance.
    wait_for_listing(
        &a,
        "c's agents stranded",
        &[("echo", "c", 0), ("tally", "c", 0)],
    );

    // Back at the same address with its data: its agents come back with it,
    // and a routes to them again.
    let dir = certs.path();
    let c = node_with(
        dir,
        dir,
        "c",
        &c_address.to_string(),
        Some(cluster_address(&a)),
        &persistent,
    );
    wait_for_listing(
        &a,
        "echo and tally on the restarted c",
        &[("echo", "c", 1), ("tally", "c", 1)],
    );
    assert_eq!(
        send_until_answered(&a_admin, "echo", "again"),
        "inform: again\n"
    );
    // Every durable send c accepted was handled, before the kill or after
    // the restart: the fourth count is at least 4 (a redelivered one may
    // have run twice).
    let counted = engine(&["send", "tally", "k", "--admin", &a_admin]);
    assert!(counted.status.success(), "{}", common::stderr(&counted));
    // `engine send` prints content with control bytes (the count's zeros) in base64.
    let raw = stdout(&counted);
    let encoded = raw
        .trim_end()
        .strip_prefix("inform: base64:")
        .unwrap_or_else(|| panic!("not a count in base64: {raw:?}"));
    let count = tally_count(&serde_json::json!({
        "performative": "inform",
        "content_base64": encoded,
    }));
    assert!(count >= 4, "tally counted {count}: {raw:?}");
    drop(c);
}

/// The count `tally` answered with (4 little-endian bytes).
fn tally_count(reply: &serde_json::Value) -> u32 {
    assert_eq!(reply["performative"], "inform", "{reply:#}");
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        reply["content_base64"].as_str().unwrap_or_default(),
    )
    .expect("base64");
    u32::from_le_bytes(bytes[..4].try_into().expect("four bytes"))
}

/// Two persistent nodes for durable chains across nodes: `forwarder` on
/// `a`, `tally` on `c`, and the directories where each keeps its data.
struct ChainPair {
    certs: tempfile::TempDir,
    a: RunningEngine,
    c: RunningEngine,
    a_data: tempfile::TempDir,
    c_data: tempfile::TempDir,
}

/// The overrides of a node that stores messages under `data`.
fn persistent(data: &Path) -> [String; 2] {
    [
        "messaging.enable_persistence=true".to_owned(),
        format!("storage.data_directory={}", data.display()),
    ]
}

fn chain_pair() -> ChainPair {
    let certs = tempfile::tempdir().expect("a directory");
    init_certs(certs.path(), "a,c");
    let dir = certs.path();
    let (a_data, c_data) = (
        tempfile::tempdir().expect("a data directory"),
        tempfile::tempdir().expect("a data directory"),
    );
    let a = node_with(
        dir,
        dir,
        "a",
        "127.0.0.1:0",
        None,
        &persistent(a_data.path()),
    );
    let c = node_with(
        dir,
        dir,
        "c",
        "127.0.0.1:0",
        Some(cluster_address(&a)),
        &persistent(c_data.path()),
    );
    let examples = format!("{}/../examples/agents", env!("CARGO_MANIFEST_DIR"));
    for (agent, on) in [("forwarder", &a), ("tally", &c)] {
        let deployed = engine(&[
            "agents",
            "deploy",
            &format!("{examples}/{agent}.wat"),
            "--admin",
            &on.admin_address().to_string(),
        ]);
        assert!(deployed.status.success(), "{deployed:?}");
    }
    wait_for_listing(&a, "tally on c", &[("tally", "c", 1)]);
    ChainPair {
        certs,
        a,
        c,
        a_data,
        c_data,
    }
}

/// Durable sends to the forwarder on `a`, each stored there before it is
/// acknowledged; each forwards one hop, to tally on c, which a stores as a
/// chain hop: the parent on a is finished only once c has stored it.
fn send_durable_chains(a: &RunningEngine, sends: u32) {
    let mut route = vec![1u8, 5];
    route.extend_from_slice(b"tally");
    route.extend_from_slice(b"chain");
    let client = AdminClient::new(a.admin_address(), None).expect("a client");
    let body = serde_json::json!({
        "content_base64": base64_of(&route),
        "persistent": true,
        "wait_for_reply": false,
    });
    for _ in 0..sends {
        let answer = post_body(&client, "forwarder", &body);
        assert!(
            answer["message_id"].is_u64(),
            "acknowledged as stored: {answer}"
        );
    }
}

/// Every acknowledged send reaches tally on `c` at least once: a probe
/// counts too, so after k probes the count is at least `sends` + k. Short
/// of that within `limit`, the test fails with what both nodes counted and
/// logged, which is what tells a lost hop from a slow one.
fn wait_for_tally(a: &mut RunningEngine, c: &mut RunningEngine, sends: u32, limit: Duration) {
    let c_client = AdminClient::new(c.admin_address(), None).expect("a client");
    let start = Instant::now();
    let mut probes = 0;
    loop {
        probes += 1;
        // What the forwarder passes on: the hops left (none), then the payload.
        let count = tally_count(&post_message(&c_client, "tally", b"\0chain"));
        if count >= sends + probes {
            return;
        }
        if start.elapsed() >= limit {
            let evidence = chain_evidence(a, c);
            panic!(
                "tally saw {} of {sends} acknowledged sends\n{evidence}",
                count - probes
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each node's remote routing counters, the shard counters that a lost hop
/// would move, and its log since it came up.
fn chain_evidence(a: &mut RunningEngine, c: &mut RunningEngine) -> String {
    let mut evidence = String::new();
    for (name, node) in [("a", a), ("c", c)] {
        let remote = status(node)["remote"].to_string();
        let client = AdminClient::new(node.admin_address(), None).expect("a client");
        let metrics = client.get("/metrics").expect("metrics").text();
        let shard_counters: Vec<&str> = metrics
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| {
                [
                    "redeliver",
                    "refused",
                    "unknown",
                    "undeliverable",
                    "persist",
                    "chain",
                ]
                .iter()
                .any(|word| line.contains(word))
            })
            .collect();
        // Every shard counter (agent failures and unknown receivers are in
        // no metric) and each agent's counts: a parent finished because its
        // hop could not be sent shows there, not in the remote counters.
        let counters = client
            .get("/v1/node")
            .map(|answer| answer.json()["counters"].to_string())
            .unwrap_or_default();
        let agents = client
            .get("/v1/agents")
            .map(|answer| answer.json()["agents"].to_string())
            .unwrap_or_default();
        let _ = node.child.kill();
        let mut log = String::new();
        let _ = std::io::Read::read_to_string(&mut node.log, &mut log);
        evidence.push_str(&format!(
            "--- {name}: remote {remote}\n{}\n--- {name}: counters {counters}\n--- {name}: agents {agents}\n--- {name}: log after start\n{log}\n",
            shard_counters.join("\n")
        ));
    }
    evidence
}

/// Kill `node` (SIGKILL), wait until `observer` declares it down, and start
/// it again at its cluster address on its data, joining through `observer`.
fn kill_and_restart(
    certs: &Path,
    node: RunningEngine,
    name: &str,
    data: &Path,
    observer: &RunningEngine,
    limit: Duration,
) -> RunningEngine {
    let address = cluster_address(&node);
    let mut node = node;
    node.child.kill().expect("SIGKILL");
    let _ = node.child.wait();
    wait(observer, limit, &format!("{name} declared down"), |view| {
        state_of(view, name).as_deref() == Some("down")
    });
    node_with(
        certs,
        certs,
        name,
        &address.to_string(),
        Some(cluster_address(observer)),
        &persistent(data),
    )
}

#[test]
fn a_chain_across_nodes_keeps_its_promise_when_the_parents_node_is_killed() {
    let ChainPair {
        certs,
        a,
        mut c,
        a_data,
        c_data: _c_data,
    } = chain_pair();
    // c is frozen while a takes the sends, so no hop can be stored there
    // before a dies: every parent is still unfinished on a's disk.
    let pid = libc::pid_t::try_from(c.child.id()).expect("a pid");
    // SAFETY: signalling a child process this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
    const SENDS: u32 = 40;
    send_durable_chains(&a, SENDS);
    let address = cluster_address(&a);
    let mut a = a;
    a.child.kill().expect("SIGKILL");
    let _ = a.child.wait();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0, "SIGCONT");
    wait(&c, Duration::from_secs(10), "a declared down", |view| {
        state_of(view, "a").as_deref() == Some("down")
    });
    // a comes back with its data and runs every unfinished parent again.
    let mut a = node_with(
        certs.path(),
        certs.path(),
        "a",
        &address.to_string(),
        Some(cluster_address(&c)),
        &persistent(a_data.path()),
    );
    wait_for_listing(
        &a,
        "tally on c, seen from the restarted a",
        &[("tally", "c", 1)],
    );
    wait_for_tally(&mut a, &mut c, SENDS, Duration::from_secs(15));
    let client = AdminClient::new(a.admin_address(), None).expect("a client");
    let node = client.get("/v1/node").expect("the node answers").json();
    let redelivered = node["counters"]["redelivered"]
        .as_u64()
        .unwrap_or_else(|| panic!("no redelivered counter in {node}"));
    assert!(
        redelivered >= u64::from(SENDS),
        "the restarted a ran {redelivered} stored parents again, not all {SENDS}"
    );
}

#[test]
fn a_chain_across_nodes_keeps_its_promise_when_the_childs_node_is_killed() {
    let ChainPair {
        certs,
        mut a,
        c,
        a_data: _a_data,
        c_data,
    } = chain_pair();
    // c freezes before it can store any hop, and is killed frozen: every
    // hop a sends it is lost with it, while a runs on.
    let pid = libc::pid_t::try_from(c.child.id()).expect("a pid");
    // SAFETY: signalling a child process this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
    const SENDS: u32 = 40;
    send_durable_chains(&a, SENDS);
    // c comes back with its data, tally's count starting again from nothing:
    // a, which kept every hop not acknowledged, sends them there once c
    // lists tally again.
    let mut c = kill_and_restart(
        certs.path(),
        c,
        "c",
        c_data.path(),
        &a,
        Duration::from_secs(20),
    );
    wait_for_listing(&a, "tally on the restarted c", &[("tally", "c", 1)]);
    wait_for_tally(&mut a, &mut c, SENDS, Duration::from_secs(15));
    let resent = status(&a)["remote"]["hops_resent"]
        .as_u64()
        .expect("a count of hops sent again");
    assert!(resent >= u64::from(SENDS), "{resent} hops sent again");
    drop((a, c));
}
