//! The Rust SDK's agents (`examples/rust/`) in whole nodes: each answers
//! exactly like its WAT twin in `examples/agents/`, a panic is a trap the
//! shard survives, and a module of another ABI version is refused.
//!
//! These tests build the Rust examples for `wasm32-unknown-unknown`; without
//! that target they fail saying how to add it (`caxton_tests::rust_agent`).

use std::time::Duration;

use caxton_messaging::Performative;
use caxton_shards::{Node, NodeError, FAILURE_PREFIX};
use caxton_tests::{example, Planned};

const PATIENCE: Duration = Duration::from_secs(10);

/// The Rust SDK's echo must stay within this (the SDK's size goal).
const ECHO_SIZE_GOAL: usize = 32 * 1024;

/// Which twin of each example a node runs.
#[derive(Clone, Copy, Debug)]
enum Twin {
    Wat,
    Rust,
}

impl Twin {
    fn module(self, name: &str) -> Vec<u8> {
        match self {
            Twin::Wat => example(name),
            Twin::Rust => rust_agent(name),
        }
    }
}

fn boot() -> (Planned, Node) {
    caxton_tests::boot_default(2, &[])
}

/// `[count][len][name]…` as the forwarder and fanout read names.
fn names(prefix: u8, names: &[&str]) -> Vec<u8> {
    let mut content = vec![prefix];
    for name in names {
        content.push(name.len() as u8);
        content.extend_from_slice(name.as_bytes());
    }
    content
}

/// One request and its answer, as a line of the transcript.
type Exchange = (&'static str, Performative, Vec<u8>);

/// Deploy the five examples of `twin` under their usual names and drive them
/// with one fixed script, well-formed and malformed requests alike.
fn transcript(twin: Twin) -> Vec<Exchange> {
    let (planned, mut node) = boot();
    let limits = planned.profile.agents.default_limits.clone();
    let mut ids = std::collections::HashMap::new();
    for (name, instances) in [
        ("echo", 2),
        ("counter", 1),
        ("tally", 1),
        ("forwarder", 1),
        ("fanout", 1),
    ] {
        let id = node
            .deploy(name, &twin.module(name), instances, &limits)
            .unwrap_or_else(|error| panic!("{twin:?} {name} deploys: {error}"));
        ids.insert(name, id);
    }
    let mut pipeline = names(2, &["forwarder", "forwarder"]);
    pipeline.extend_from_slice(b"payload");
    let mut to_echo = names(1, &["echo"]);
    to_echo.extend_from_slice(b"across");
    let script: Vec<(&'static str, &'static str, Vec<u8>)> = vec![
        ("echo hello", "echo", b"hello".to_vec()),
        ("echo empty", "echo", Vec::new()),
        ("echo oversized", "echo", vec![7; 70_000]),
        ("counter 1", "counter", b"x".to_vec()),
        ("counter 2", "counter", b"y".to_vec()),
        ("counter 3", "counter", Vec::new()),
        ("tally a", "tally", b"a".to_vec()),
        ("tally a again", "tally", b"a".to_vec()),
        ("tally b", "tally", b"b".to_vec()),
        ("tally oversized key", "tally", vec![b'k'; 300]),
        ("pipeline", "forwarder", pipeline),
        ("forward to echo", "forwarder", to_echo),
        ("forwarder empty", "forwarder", Vec::new()),
        ("forwarder cut route", "forwarder", vec![1, 9, b'f']),
        ("forwarder unknown hop", "forwarder", names(1, &["nobody"])),
        (
            "fanout echo+counter",
            "fanout",
            names(2, &["echo", "counter"]),
        ),
        ("counter after fanout", "counter", Vec::new()),
        // The forwarder fails an empty request: a failed leaf still answers.
        (
            "fanout echo+failing forwarder",
            "fanout",
            names(2, &["echo", "forwarder"]),
        ),
        ("fanout empty", "fanout", Vec::new()),
        ("fanout zero names", "fanout", vec![0]),
        ("fanout unknown name", "fanout", names(1, &["nobody"])),
        (
            "fanout after a failed gather",
            "fanout",
            names(1, &["echo"]),
        ),
    ];
    let mut client = node.client().expect("client");
    let mut exchanges = Vec::new();
    for (label, agent, content) in script {
        let answer = client
            .request(ids[agent], content, PATIENCE)
            .unwrap_or_else(|error| panic!("{twin:?} {label}: {error:?}"));
        exchanges.push((label, answer.performative, answer.content));
    }
    drop(client);
    node.shutdown().expect("clean stop");
    exchanges
}

fn failure(code: &str) -> (Performative, Vec<u8>) {
    (
        Performative::Failure,
        format!("{FAILURE_PREFIX}agent-failed:{code}").into_bytes(),
    )
}

#[test]
fn rust_examples_answer_exactly_like_their_wat_twins() {
    let wat = transcript(Twin::Wat);
    let rust = transcript(Twin::Rust);
    let inform = |content: &[u8]| (Performative::Inform, content.to_vec());
    let expected: Vec<(&str, (Performative, Vec<u8>))> = vec![
        ("echo hello", inform(b"hello")),
        ("echo empty", inform(b"")),
        ("echo oversized", inform(&[7; 64512])),
        ("counter 1", inform(&1u64.to_le_bytes())),
        ("counter 2", inform(&2u64.to_le_bytes())),
        ("counter 3", inform(&3u64.to_le_bytes())),
        ("tally a", inform(&1u32.to_le_bytes())),
        ("tally a again", inform(&2u32.to_le_bytes())),
        ("tally b", inform(&1u32.to_le_bytes())),
        ("tally oversized key", failure("1")),
        ("pipeline", inform(b"payload")),
        ("forward to echo", inform(b"\0across")),
        ("forwarder empty", failure("1")),
        ("forwarder cut route", failure("2")),
        ("forwarder unknown hop", failure("3")),
        ("fanout echo+counter", inform(&2u32.to_le_bytes())),
        // The gather's request was the counter's fourth message.
        ("counter after fanout", inform(&5u64.to_le_bytes())),
        ("fanout echo+failing forwarder", inform(&2u32.to_le_bytes())),
        ("fanout empty", failure("1")),
        ("fanout zero names", failure("1")),
        ("fanout unknown name", failure("3")),
        ("fanout after a failed gather", inform(&1u32.to_le_bytes())),
    ];
    for (twin, transcript) in [("WAT", &wat), ("Rust", &rust)] {
        assert_eq!(transcript.len(), expected.len());
        for ((label, performative, content), (expected_label, (want_performative, want_content))) in
            transcript.iter().zip(&expected)
        {
            assert_eq!(label, expected_label);
            assert_eq!(
                (performative, content.len(), content),
                (want_performative, want_content.len(), want_content),
                "{twin} {label}: {}",
                String::from_utf8_lossy(&content[..content.len().min(80)])
            );
        }
    }
    assert_eq!(wat, rust, "the twins' transcripts differ");
}

#[test]
fn a_panic_traps_and_the_shard_serves_on_with_a_fresh_instance() {
    let (planned, mut node) = boot();
    let limits = planned.profile.agents.default_limits.clone();
    let panics = node
        .deploy("panics", &rust_agent("panics"), 1, &limits)
        .expect("deploys");
    let echo = node
        .deploy("echo", &rust_agent("echo"), 1, &limits)
        .expect("deploys");
    let mut client = node.client().expect("client");
    let mut ask = |content: &[u8]| {
        let answer = client
            .request(panics, content.to_vec(), PATIENCE)
            .expect("answered");
        (answer.performative, answer.content)
    };
    let handled = |count: u32| (Performative::Inform, count.to_le_bytes().to_vec());
    assert_eq!(ask(b"x"), handled(1));
    assert_eq!(ask(b"x"), handled(2));
    for (content, count_before) in [(&b"panic"[..], 2), (b"index", 1)] {
        let (performative, reason) = ask(content);
        let reason = String::from_utf8_lossy(&reason).into_owned();
        assert_eq!(performative, Performative::Failure, "{reason}");
        assert!(
            reason.starts_with(&format!("{FAILURE_PREFIX}trap:")),
            "{content:?} after {count_before}: {reason}"
        );
        // The instance was replaced: its count starts again.
        assert_eq!(ask(b"x"), handled(1));
    }
    assert_eq!(ask(b"fail"), failure("142"));
    assert_eq!(ask(b"x"), handled(3), "a failure code keeps the instance");
    let echoed = client
        .request(echo, b"alive".to_vec(), PATIENCE)
        .expect("echo serves");
    assert_eq!(echoed.content, b"alive");
    assert_eq!(node.agent_stats("panics").expect("stats").traps, 2);
    drop(client);
    node.shutdown().expect("clean stop");
}

#[test]
fn a_module_built_for_another_abi_version_is_refused_naming_both() {
    let (planned, mut node) = boot();
    let limits = planned.profile.agents.default_limits.clone();
    let refused = node.deploy("future", &rust_agent("future-abi"), 1, &limits);
    let message = match refused {
        Err(error @ NodeError::Deploy { .. }) => error.to_string(),
        other => panic!("expected a deploy refusal, got {other:?}"),
    };
    assert!(
        message.contains("version 2") && message.contains("version 1"),
        "{message}"
    );
    // The node still deploys and serves.
    let echo = node
        .deploy("echo", &rust_agent("echo"), 1, &limits)
        .expect("deploys");
    let mut client = node.client().expect("client");
    assert_eq!(
        client
            .request(echo, b"ok".to_vec(), PATIENCE)
            .expect("answered")
            .content,
        b"ok"
    );
    drop(client);
    node.shutdown().expect("clean stop");
}

#[test]
fn the_rust_echo_module_is_small() {
    let echo = rust_agent("echo");
    eprintln!("Rust SDK echo.wasm: {} bytes", echo.len());
    assert!(
        echo.len() <= ECHO_SIZE_GOAL,
        "echo.wasm is {} bytes, over the SDK's {ECHO_SIZE_GOAL}-byte goal",
        echo.len()
    );
}

/// The Rust example agent `name` (`examples/rust/NAME`, built with the
/// agent SDK), as a `.wasm` module. The first call builds every Rust
/// example for `wasm32-unknown-unknown` in release mode, in a target
/// directory of its own; later calls (and later test runs) reuse it.
///
/// Panics, saying what to do, when the Rust toolchain lacks the
/// `wasm32-unknown-unknown` target: these tests cannot run without it, and a
/// silent pass would hide that.
fn rust_agent(name: &str) -> Vec<u8> {
    static BUILT: std::sync::OnceLock<Result<std::path::PathBuf, String>> =
        std::sync::OnceLock::new();
    let directory = BUILT
        .get_or_init(build_rust_agents)
        .as_ref()
        .unwrap_or_else(|why| panic!("{why}"));
    let path = directory.join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// `cargo build --release` in `examples/rust`; the directory of the modules.
fn build_rust_agents() -> Result<std::path::PathBuf, String> {
    use std::process::Command;
    const TARGET: &str = "wasm32-unknown-unknown";
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(|error| format!("cannot run {rustc}: {error}"))?;
    let libdir = String::from_utf8_lossy(&libdir.stdout).trim().to_owned();
    let has_core = std::fs::read_dir(&libdir).is_ok_and(|mut entries| {
        entries.any(|entry| {
            entry.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
        })
    });
    if !has_core {
        return Err(format!(
            "the Rust target {TARGET} is not installed, so the Rust SDK's agents cannot be built \
             and this test cannot run: run `rustup target add {TARGET}` \
             (scripts/bootstrap.sh --test does when it can reach the toolchain server)"
        ));
    }
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rust");
    let target_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rust-agents");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // In `examples/rust`, so its `.cargo/config.toml` (target, stack size)
    // applies; flags meant for the engine's own build must not leak in.
    let status = Command::new(&cargo)
        .current_dir(&examples)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .map_err(|error| format!("cannot run {cargo}: {error}"))?;
    if !status.success() {
        return Err(format!(
            "building the Rust example agents in {} failed ({status}); cargo's messages are above",
            examples.display()
        ));
    }
    Ok(target_dir.join(TARGET).join("release"))
}
