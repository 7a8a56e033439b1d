//! Every fuzz target runs its seed corpus (`fuzz/corpus/TARGET/`), plus any
//! finding kept beside it, as a regression test. The seeds are real inputs,
//! made here: `CAXTON_FUZZ_WRITE_SEEDS=1 cargo test -p caxton-fuzz` writes
//! them again after a format changes; without it this test checks that each
//! is still in the corpus, so the corpus never drifts from what the engine
//! really sends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use caxton_cluster::directory::DirectoryMessage;
use caxton_cluster::remote::{RemoteBatch, RemoteMessage, Target};
use caxton_cluster::wire::{self, FrameKind};
use caxton_cluster::{Membership, NodeId, Now};
use caxton_messaging::{
    Address, AgentId, Durability, Envelope, InstanceId, Performative, PriorityClass,
};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn node(port: u16) -> NodeId {
    NodeId::new(
        format!("node-{port}"),
        SocketAddr::from(([127, 0, 0, 1], port)),
        1_800_000_000_000_000 + u64::from(port),
    )
}

fn envelopes() -> Vec<Envelope> {
    let instance = Address::Instance(InstanceId {
        agent: AgentId(3),
        shard: 1,
        slot: 0,
    });
    let request = Envelope {
        reply_with: 42,
        conversation_id: 7,
        priority: PriorityClass(1),
        deadline_ns: 5_000_000,
        ..Envelope::new(
            Performative::Request,
            Address::Client { port: 4, id: 9 },
            Address::Agent(AgentId(2)),
            b"hello".to_vec(),
            1_000,
            4,
        )
    };
    let answer = request
        .reply_path()
        .answer(Performative::Inform, b"hello".to_vec(), 2_000, 0);
    let durable = Envelope {
        durability: Durability::Requested,
        ..Envelope::new(
            Performative::Inform,
            instance,
            Address::Agent(AgentId(5)),
            vec![0; 300],
            3_000,
            1,
        )
    };
    let failure =
        answer
            .reply_path()
            .answer(Performative::Failure, b"caxton:timeout".to_vec(), 4_000, 0);
    vec![
        request,
        answer,
        durable,
        failure,
        Envelope::chain_ack(1 << 48, 5_000, 2),
    ]
}

/// Frames two membership cores really exchange while one joins the other,
/// and the directory frames that follow.
fn cluster_frames() -> Vec<Vec<u8>> {
    let swim = caxton_fuzz::swim_settings();
    let now = |ms: u64| Now {
        elapsed: Duration::from_millis(ms),
        unix_us: 1_800_000_000_000_000 + ms * 1_000,
    };
    let a_addr = node(1).addr;
    let b_addr = node(2).addr;
    let mut a = Membership::new(swim.clone(), "node-1".into(), a_addr, 1, now(0));
    let mut b = Membership::new(swim, "node-2".into(), b_addr, 2, now(0));
    b.publish_agents(
        [("echo".to_owned(), 2)]
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        now(0),
    );
    a.join(&[b_addr], now(0));
    let mut frames = Vec::new();
    for step in 1..20 {
        let time = now(step * 50);
        let from_a = a.take_outgoing();
        let from_b = b.take_outgoing();
        for out in from_a {
            let _ = b.handle_frame(&out.frame, time);
            frames.push(out.frame);
        }
        for out in from_b {
            let _ = a.handle_frame(&out.frame, time);
            frames.push(out.frame);
        }
        a.advance(time);
        b.advance(time);
    }
    frames.sort();
    frames.dedup();
    frames.truncate(24);
    // A leaving node's handed-over suspicion: no two-node exchange sends one.
    let handover = caxton_cluster::watch::WatchMessage::Suspect {
        from: b_addr,
        member: node(3),
        incarnation: 1,
        left_us: 750_000,
    };
    frames.push(wire::frame_of(
        FrameKind::Watch,
        wire::FrameHeader { nonce: 7, seq: 1 },
        &handover.encode(),
    ));
    // A suspicion told to the member suspected.
    let told = caxton_cluster::watch::WatchMessage::Suspected {
        from: b_addr,
        member: node(1),
        incarnation: 2,
    };
    frames.push(wire::frame_of(
        FrameKind::Watch,
        wire::FrameHeader { nonce: 7, seq: 2 },
        &told.encode(),
    ));
    frames
}

fn directory_messages() -> Vec<DirectoryMessage> {
    vec![
        DirectoryMessage::Pull { from: node(1) },
        DirectoryMessage::List {
            from: node(2),
            version: 3,
            agents: vec![("counter".into(), 1), ("echo".into(), 2)],
        },
    ]
}

fn remote_frames() -> Vec<Vec<u8>> {
    let message = RemoteMessage {
        sender: Some(Address::Client { port: 4, id: 9 }),
        conversation_id: 7,
        reply_with: 42,
        deadline_in_ns: Some(5_000_000),
        sent_unix_ns: 1_800_000_000_000_000_000,
        sender_name: Some("driver".into()),
        ..RemoteMessage::new(
            Target::Agent("echo".into()),
            Performative::Request,
            b"hello".to_vec(),
        )
    };
    let answer = RemoteMessage {
        target: Target::Address(Address::Client { port: 4, id: 9 }),
        sender: None,
        performative: Performative::Inform,
        reply_with: 0,
        in_reply_to: 42,
        deadline_in_ns: None,
        ..message.clone()
    };
    // A hop of a durable chain, kept by its sender under a hop id.
    let chain_hop = RemoteMessage {
        chained: Some(0x0001_0000_0000_0003),
        hop: 1_800_000_000_000_000_001,
        ..message.clone()
    };
    let header = wire::FrameHeader { nonce: 0, seq: 0 };
    let batches: Vec<Vec<u8>> = [vec![message.clone()], vec![answer, message, chain_hop]]
        .into_iter()
        .map(|messages| {
            RemoteBatch {
                from: node(1),
                messages,
            }
            .encode()
        })
        .collect();
    // Each as a frame, then the last as a bare packet: the hand-written
    // reader's way in (the target reads the bytes as both).
    let bare = batches.last().cloned();
    batches
        .iter()
        .map(|batch| wire::frame_of(FrameKind::Messages, header, batch))
        .chain(bare)
        .collect()
}

/// The example agents as uploaded: every WAT example, and echo compiled to
/// the binary format.
fn modules() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agents");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "wat"))
        .collect();
    names.sort();
    let mut modules: Vec<Vec<u8>> = names
        .iter()
        .map(|path| std::fs::read(path).expect("readable"))
        .collect();
    let echo = std::fs::read(dir.join("echo.wat")).expect("echo");
    modules.push(wat::parse_bytes(&echo).expect("echo compiles").into_owned());
    modules
}

/// HDR interval logs as the engine writes them, at a fixed start time.
fn hdr_logs() -> Vec<Vec<u8>> {
    let start = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut routing = caxton_shards::nanosecond_histogram();
    let mut processing = caxton_shards::nanosecond_histogram();
    for value in [180u64, 210, 250, 900, 4_000, 120_000] {
        routing.record(value).expect("in range");
        processing.record(value * 10).expect("in range");
    }
    let empty = caxton_shards::nanosecond_histogram();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut logs = Vec::new();
    for (index, intervals) in [1usize, 3].into_iter().enumerate() {
        let path = dir.path().join(format!("{index}.hlog"));
        let mut log = caxton_telemetry::HdrLogWriter::create(&path, start, "seed").expect("log");
        for interval in 0..intervals {
            let began = start + Duration::from_secs(interval as u64);
            log.append(
                began,
                Duration::from_secs(1),
                &[
                    ("routing_latency", &routing),
                    ("message_processing_time", &processing),
                    ("remote_routing_latency", &empty),
                ],
            )
            .expect("appended");
        }
        logs.push(std::fs::read(&path).expect("written"));
    }
    logs
}

/// Rows as a partition stores them: message rows plain and compressed, and
/// agents' limits.
fn storage_rows() -> Vec<Vec<u8>> {
    let mut rows = Vec::new();
    for envelope in envelopes() {
        let encoded = envelope.encode();
        for (kind, compressed) in [(0u8, false), (1, true)] {
            let mut row = vec![kind];
            row.extend_from_slice(&caxton_storage::stored_form(&encoded, compressed));
            rows.push(row);
        }
    }
    let mut limits = caxton_profiles::Profile::default().agents.default_limits;
    rows.push(
        [
            &[2u8][..],
            serde_json::to_string(&limits).expect("encodes").as_bytes(),
        ]
        .concat(),
    );
    limits.memory = caxton_profiles::ByteSize::mib(8);
    limits.max_execution_time = caxton_profiles::HumanDuration::from_millis(250);
    rows.push(
        [
            &[2u8][..],
            serde_json::to_string(&limits).expect("encodes").as_bytes(),
        ]
        .concat(),
    );
    rows
}

/// Admin API requests the engine's own commands make, in the target's form.
fn admin_requests() -> Vec<Vec<u8>> {
    let request = |method: &str, path: &str, query: &str, body: &[u8]| {
        let index = caxton_fuzz::ADMIN_METHODS
            .iter()
            .position(|known| *known == method)
            .expect("a known method") as u8;
        [
            &[index][..],
            path.as_bytes(),
            b"\n",
            query.as_bytes(),
            b"\n",
            body,
        ]
        .concat()
    };
    let echo =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agents/echo.wat"))
            .expect("echo");
    vec![
        request("GET", "/metrics", "", b""),
        request("GET", "/v1/node", "", b""),
        request("GET", "/v1/agents/echo", "", b""),
        request("POST", "/v1/agents", "name=echo&instances=2&memory=8MB&cpu_shares=500m&max_execution_time=250ms", &echo),
        request("POST", "/v1/agents/echo/messages", "", br#"{"content": "hello", "timeout_ms": 500}"#),
        request(
            "POST",
            "/v1/agents/forwarder/messages",
            "",
            br#"{"content_base64": "AQRlY2hvaGk=", "performative": "query-if", "priority": 1, "conversation_id": 7, "persistent": true, "wait_for_reply": false}"#,
        ),
        request("DELETE", "/v1/agents/echo", "", b""),
        request("POST", "/v1/hdr/dump", "", b""),
        request("POST", "/v1/profile/trace", "messages=1000", b""),
        request("POST", "/v1/profile/cpu", "frequency=99", b""),
        request("GET", "/v1/profile/memory", "", b""),
    ]
}

/// Every target's seeds, by target.
fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        (
            "envelope",
            envelopes().iter().map(Envelope::encode).collect(),
        ),
        ("cluster_frame", cluster_frames()),
        (
            "directory_message",
            directory_messages()
                .iter()
                .map(DirectoryMessage::encode)
                .collect(),
        ),
        ("remote_batch", remote_frames()),
        (
            "profile",
            caxton_profiles::BUILTIN_NAMES
                .iter()
                .filter_map(|name| caxton_profiles::builtin_text(name))
                .map(|text| text.as_bytes().to_vec())
                .collect(),
        ),
        ("module", modules()),
        ("hdr_log", hdr_logs()),
        ("storage_row", storage_rows()),
        ("admin_request", admin_requests()),
    ]
}

fn seed_name(index: usize) -> String {
    format!("seed-{index:02}")
}

#[test]
fn every_target_runs_its_corpus_and_the_seeds_are_current() {
    let write = std::env::var_os("CAXTON_FUZZ_WRITE_SEEDS").is_some();
    for (target, seeds) in seeds() {
        assert!(!seeds.is_empty(), "{target} has seeds");
        let dir = corpus(target);
        if write {
            std::fs::create_dir_all(&dir).expect("corpus directory");
        }
        for (index, seed) in seeds.iter().enumerate() {
            let path = dir.join(seed_name(index));
            if write {
                std::fs::write(&path, seed).expect("seed written");
            } else {
                let kept = std::fs::read(&path).unwrap_or_else(|error| {
                    panic!(
                        "{}: {error}; CAXTON_FUZZ_WRITE_SEEDS=1 cargo test -p caxton-fuzz writes the seeds",
                        path.display()
                    )
                });
                assert_eq!(
                    &kept,
                    seed,
                    "{} is stale: CAXTON_FUZZ_WRITE_SEEDS=1 cargo test -p caxton-fuzz",
                    path.display()
                );
            }
        }
        let run = caxton_fuzz::target(target).expect("a target");
        let mut ran = 0;
        for entry in std::fs::read_dir(&dir).expect("a corpus") {
            let path = entry.expect("an entry").path();
            let bytes = std::fs::read(&path).expect("readable");
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(
                outcome.is_ok(),
                "{target}: {} breaks an invariant",
                path.display()
            );
            ran += 1;
        }
        assert!(ran >= seeds.len(), "{target}: {ran} inputs");
    }
}

#[test]
fn the_targets_refuse_damage_without_panicking() {
    for (target, seeds) in seeds() {
        let run = caxton_fuzz::target(target).expect("a target");
        for seed in seeds {
            // Every prefix, and every seed with each byte flipped in turn
            // (bounded): a cheap, deterministic slice of what the fuzzer tries.
            for cut in (0..seed.len()).step_by(seed.len().div_ceil(64).max(1)) {
                run(&seed[..cut]);
            }
            for at in (0..seed.len()).step_by(seed.len().div_ceil(64).max(1)) {
                let mut flipped = seed.clone();
                flipped[at] ^= 0xff;
                run(&flipped);
            }
        }
    }
}

#[test]
fn the_fuzz_script_knows_every_target() {
    let script =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fuzz.sh"))
            .expect("scripts/fuzz.sh");
    let listed: Vec<&str> = script
        .lines()
        .find_map(|line| line.strip_prefix("targets=\""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("a targets= line")
        .split_whitespace()
        .collect();
    let targets: Vec<&str> = caxton_fuzz::TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(listed, targets);
}
