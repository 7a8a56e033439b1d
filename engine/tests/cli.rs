//! The `engine` binary as a user meets it: commands, exit statuses, one-line
//! errors, and a node that stops cleanly on SIGTERM.

mod common;

use common::{engine, start_engine, stderr, stdout};

#[test]
fn help_and_version_work() {
    let help = engine(&["--help"]);
    assert!(help.status.success());
    assert!(stdout(&help).contains("--profile"));
    let version = engine(&["--version"]);
    assert_eq!(
        stdout(&version).trim(),
        format!("engine {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn profiles_list_prints_one_name_a_line() {
    let output = engine(&["profiles", "list"]);
    assert!(output.status.success());
    let names: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(names.len(), 10);
    for expected in [
        "default",
        "low-latency",
        "high-throughput",
        "memory-optimized",
        "cluster-small",
        "network-unreliable",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[test]
fn profiles_show_output_loads_back_to_the_same_profile() {
    let directory = tempfile::tempdir().expect("temp dir");
    for name in [
        "default",
        "low-latency",
        "high-throughput",
        "memory-optimized",
    ] {
        let shown = engine(&["profiles", "show", name, "network-lan"]);
        assert!(shown.status.success(), "{}", stderr(&shown));
        let path = directory.path().join(format!("{name}.yaml"));
        std::fs::write(&path, &shown.stdout).expect("write");
        let reshown = engine(&["profiles", "show", path.to_str().expect("utf-8")]);
        assert!(reshown.status.success(), "{}", stderr(&reshown));
        assert_eq!(
            stdout(&reshown),
            stdout(&shown),
            "{name} + network-lan survives a round trip"
        );
    }
    let with_set = engine(&[
        "profiles",
        "show",
        "low-latency",
        "--set",
        "messaging.batch_size=4",
    ]);
    assert!(stdout(&with_set).contains("batch_size: 4"));
    // `--profile` before `show`, or after it, overlays under the names given
    // to `show`: low-latency's one-message batches and network-wan's
    // gossip both show.
    for arguments in [
        &[
            "--profile",
            "low-latency",
            "profiles",
            "show",
            "network-wan",
        ][..],
        &[
            "profiles",
            "show",
            "--profile",
            "low-latency",
            "network-wan",
        ][..],
    ] {
        let shown = engine(arguments);
        assert!(shown.status.success(), "{arguments:?}: {}", stderr(&shown));
        let text = stdout(&shown);
        let has = |wanted: &str| text.lines().any(|line| line.trim() == wanted);
        assert!(
            has("batch_size: 1") && has("agent_pool_size: 200"),
            "{arguments:?} lost low-latency: {text}"
        );
        assert!(
            has("probe_timeout: 2s"),
            "{arguments:?} lost network-wan: {text}"
        );
    }
}

#[test]
fn every_bad_input_class_gives_one_line_and_status_2() {
    let directory = tempfile::tempdir().expect("temp dir");
    let file = |name: &str, text: &str| {
        let path = directory.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8").to_owned()
    };
    let syntax = file("syntax.yaml", "runtime:\n  max_agents: [1\n");
    let unknown_key = file("unknown.yaml", "runtime:\n  max_agnets: 10\n");
    let contradiction = file(
        "contra.yaml",
        "coordination:\n  cluster:\n    probe_interval: 1s\n    probe_timeout: 1s\n",
    );
    let missing_core = file("pin.yaml", "runtime:\n  cpu_affinity:\n    pinned_agents:\n      - agent_id: router\n        cpu_cores: [0, 4095]\n");
    let cases: [(Vec<&str>, &[&str]); 8] = [
        (
            vec!["--profile", "/no/such/file.yaml", "profiles", "show"],
            &["cannot read profile file", "/no/such/file.yaml"],
        ),
        (
            vec!["--profile", &syntax, "profiles", "show"],
            &["syntax.yaml:2:"],
        ),
        (
            vec!["--profile", "turbo"],
            &[
                "no built-in profile or file named `turbo`",
                "low-latency",
                "memory-optimized",
            ],
        ),
        (
            vec!["--profile", &unknown_key],
            &[
                "unknown.yaml:2:3",
                "runtime.max_agnets",
                "did you mean `max_agents`?",
            ],
        ),
        (
            vec!["--profile", &contradiction],
            &["contra.yaml:4:5", "probe_timeout", "hint:"],
        ),
        (
            vec!["--profile", &missing_core],
            &["pin.yaml:5:", "pinned_agents[0].cpu_cores[1]", "CPU 4095"],
        ),
        (
            vec!["--set", "runtime.worker_threads=0"],
            &["runtime.worker_threads", "out of range"],
        ),
        // Pools past the address space: refused before a shard starts,
        // with the sizes that make it, not the allocator's bare error.
        (
            vec![
                "--set",
                "runtime.max_memory_per_agent=4GiB",
                "--set",
                "runtime.max_agents=20000",
                "--set",
                "runtime.worker_threads=1",
            ],
            &[
                "runtime.max_memory_per_agent",
                "20050 pooled instances per shard",
                "TiB of address space",
                "memory_pooling: false",
            ],
        ),
    ];
    for (arguments, expected) in cases {
        let output = engine(&arguments);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{arguments:?}: {message}");
        assert_eq!(
            message.lines().count(),
            1,
            "{arguments:?} gives one line: {message}"
        );
        for fragment in expected {
            assert!(
                message.contains(fragment),
                "{arguments:?}: `{fragment}` missing from {message}"
            );
        }
    }
}

#[test]
fn agent_flags_are_refused_by_their_own_names_before_any_call() {
    // Nothing listens on port 1: these are refused before a connection.
    let echo = format!("{}/../examples/agents/echo.wat", env!("CARGO_MANIFEST_DIR"));
    let cases: [(Vec<&str>, &str); 5] = [
        (
            vec!["agents", "deploy", &echo, "--memory", "10XB"],
            "'--memory <MEMORY>': `10XB` is not a size",
        ),
        (
            vec!["agents", "deploy", &echo, "--cpu-shares", "lots"],
            "'--cpu-shares <CPU_SHARES>': `lots` is not a CPU share",
        ),
        (
            vec!["agents", "deploy", &echo, "--max-execution-time", "soon"],
            "'--max-execution-time <MAX_EXECUTION_TIME>': `soon` is not a duration",
        ),
        (
            vec!["agents", "deploy", &echo, "--instances", "0"],
            "'--instances <INSTANCES>': 0 is not in 1..=4096",
        ),
        (
            vec!["agents", "scale", "echo", "--instances", "0"],
            "'--instances <INSTANCES>': 0 is not in 1..=4096",
        ),
    ];
    for (mut arguments, expected) in cases {
        arguments.extend(["--admin", "127.0.0.1:1"]);
        common::assert_refused_saying(&engine(&arguments), &format!("{arguments:?}"), expected);
    }
}

#[test]
fn topology_prints_plans_for_synthetic_servers() {
    let output = engine(&[
        "topology",
        "--synthetic",
        "package:2 numa:1 l3:1 core:8 pu:2",
        "--profile",
        "low-latency",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("2 package(s), 2 NUMA node(s), 2 L3 group(s), 16 core(s), 32 PU(s)"),
        "{text}"
    );
    assert!(
        text.contains("placement plan: 15 data shard(s) + gossip shard"),
        "{text}"
    );
    assert!(text.contains("data-14"), "{text}");
    assert!(
        !text.contains("shards that share a PU yield it"),
        "one shard per PU: every shard spins\n{text}"
    );
    // More shards than cores: those that share a PU yield it as they poll, and the plan says so.
    let crowded = engine(&[
        "topology",
        "--synthetic",
        "core:2 pu:1",
        "--profile",
        "low-latency",
        "--set",
        "runtime.worker_threads=3",
    ]);
    assert!(crowded.status.success(), "{}", stderr(&crowded));
    assert!(
        stdout(&crowded).contains(
            "runtime.spin_before_park: shards that share a PU yield it at every poll; only a shard alone on its PU holds it"
        ),
        "{}",
        stdout(&crowded)
    );

    let here = engine(&["topology"]);
    assert!(here.status.success(), "{}", stderr(&here));
    assert!(stdout(&here).contains("topology (this machine)"));

    let invalid = engine(&["topology", "--synthetic", "widgets:3"]);
    assert_eq!(invalid.status.code(), Some(2));
}

#[test]
fn a_running_node_stops_cleanly_on_sigterm() {
    let running = start_engine(&[
        "--profile",
        "low-latency",
        "--set",
        "runtime.worker_threads=2",
    ]);
    assert_eq!(
        running.seen.matches("shard placed").count(),
        3,
        "{}",
        running.seen
    );
    let (status, rest) = running.terminate();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(rest.contains("engine stopped cleanly"), "{rest}");
}

#[test]
fn a_node_outlives_its_log_reader_and_still_stops_on_sigterm() {
    use std::os::fd::AsRawFd;
    let running = start_engine(&[]);
    let admin = running.admin_address().to_string();
    // The reader goes (as `engine ... 2>&1 | head` does): the pipe's read
    // end is swapped for /dev/null, so the node's next log lines meet a
    // pipe with no reader.
    let null = std::fs::File::open("/dev/null").expect("/dev/null");
    // SAFETY: dup2(2) onto a descriptor this process owns; the reader
    // then holds /dev/null under the same number.
    let swapped = unsafe { libc::dup2(null.as_raw_fd(), running.log.get_ref().as_raw_fd()) };
    assert!(swapped >= 0, "dup2: {}", std::io::Error::last_os_error());
    let echo = format!("{}/../examples/agents/echo.wat", env!("CARGO_MANIFEST_DIR"));
    // Each deploy logs a line the node cannot write; it serves on.
    for name in ["echo", "echo-2"] {
        let deployed = engine(&["agents", "deploy", &echo, "--name", name, "--admin", &admin]);
        assert!(deployed.status.success(), "{}", stderr(&deployed));
    }
    let sent = engine(&["send", "echo-2", "still here", "--admin", &admin]);
    assert!(sent.status.success(), "{}", stderr(&sent));
    assert!(stdout(&sent).contains("still here"), "{}", stdout(&sent));
    // The signal is heard, and logged to nobody, and the node stops cleanly.
    let (status, _) = running.terminate();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn agents_listed_in_a_profile_are_deployed_at_boot() {
    let directory = tempfile::tempdir().expect("temp dir");
    let echo = format!("{}/../examples/agents/echo.wat", env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(&echo, directory.path().join("echo.wat")).expect("copy");
    let profile = directory.path().join("agents.yaml");
    std::fs::write(
        &profile,
        "agents:\n  deploy:\n    - name: echo\n      module: echo.wat\n      instances: 2\n  overrides:\n    - agent_id: echo\n      memory: 2MB\n      max_execution_time: 250ms\n",
    )
    .expect("write");
    let running = start_engine(&[
        "--profile",
        profile.to_str().expect("utf-8"),
        "--set",
        "runtime.worker_threads=2",
    ]);
    let deployed = running
        .seen
        .lines()
        .find(|line| line.contains("agent deployed"))
        .unwrap_or_else(|| panic!("no deploy in {}", running.seen));
    // With its override's limits, and the default CPU share.
    assert!(
        deployed.contains("agent=echo")
            && deployed.contains("memory=2MB")
            && deployed.contains("max_execution_time=250ms")
            && deployed.contains("cpu_shares="),
        "{deployed}"
    );
    let (status, rest) = running.terminate();
    assert_eq!(status.code(), Some(0), "{rest}");

    std::fs::write(
        &profile,
        "agents:\n  deploy:\n    - name: echo\n      module: missing.wat\n",
    )
    .expect("write");
    let missing = engine(&["--profile", profile.to_str().expect("utf-8")]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("agents.deploy[0].module"),
        "{}",
        stderr(&missing)
    );
    // A module that is there but cannot be deployed: the entry is named too.
    std::fs::write(directory.path().join("bad.wat"), "(module)").expect("write");
    std::fs::write(
        &profile,
        "agents:
  deploy:
    - name: echo
      module: bad.wat
",
    )
    .expect("write");
    let bad = engine(&["--profile", profile.to_str().expect("utf-8")]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("agents.deploy[0] (module bad.wat)")
            && stderr(&bad).contains("does not export `memory`"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn the_quick_standard_benchmark_reports_every_scenario() {
    let directory = tempfile::tempdir().expect("temp dir");
    let output = engine(&[
        "benchmark",
        "run",
        "--suite",
        "standard",
        "--quick",
        "--set",
        "runtime.worker_threads=2",
        "--output",
        directory.path().to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    for scenario in [
        "local_routing",
        "cross_shard_routing",
        "message_processing",
        "agent_startup_warm",
        "agent_startup_cold",
        "request_reply_throughput",
        "agent_density",
        "noisy_neighbour_quiet",
        "noisy_neighbour_busy",
        "goal <= 2 x time_slice",
    ] {
        assert!(table.contains(scenario), "{scenario} missing from {table}");
    }
    let summary: String =
        std::fs::read_to_string(directory.path().join("summary.json")).expect("summary written");
    assert!(
        summary.contains("\"shards\": 2")
            && summary.contains("\"p999_ns\"")
            && summary.contains("\"machine\": \"machine: "),
        "{summary}"
    );
    let json: serde_json::Value = serde_json::from_str(&summary).expect("json");
    let busy = &json["noisy_neighbour"]["busy"];
    assert!(
        busy["count"].as_u64().is_some_and(|count| count > 0),
        "{summary}"
    );
    assert_eq!(json["noisy_neighbour"]["sliced"], true);
    // The driver's every request is one cross-shard arrival, as many as the
    // client's local ones.
    let count = |name: &str| {
        json["scenarios"]
            .as_array()
            .and_then(|rows| rows.iter().find(|row| row["name"] == name))
            .and_then(|row| row["count"].as_u64())
    };
    assert!(
        count("local_routing").is_some_and(|local| local > 0),
        "{summary}"
    );
    assert_eq!(
        count("cross_shard_routing"),
        count("local_routing"),
        "{summary}"
    );
    assert!(
        directory.path().join("cross_shard_routing.hlog").exists(),
        "cross_shard_routing's histogram written"
    );
    let log = std::fs::read_to_string(directory.path().join("local_routing.hlog"))
        .expect("histogram written");
    assert!(
        log.lines()
            .any(|line| line.starts_with("Tag=local_routing,")),
        "{log}"
    );
    let unknown = engine(&["benchmark", "run", "--suite", "bogus"]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn storage_keys_without_persistence_are_reported_at_boot() {
    let running = start_engine(&["--profile", "memory-optimized"]);
    assert!(
        running
            .seen
            .contains("no storage partitions without messaging.enable_persistence")
            && running.seen.contains("messaging.enable_compression"),
        "{}",
        running.seen
    );
}

#[test]
fn keys_that_wait_for_another_key_are_reported_at_boot() {
    let running = start_engine(&[
        "--set",
        "runtime.worker_threads=1",
        "--set",
        "runtime.wasm.stack_pooling=false",
        "--set",
        "runtime.time_slice=1ms",
        "--set",
        "messaging.priority_routing.queues=[{name: only, priority: 0, max_latency: 1s}]",
        // A block that names the section turns it on unless it says otherwise.
        "--set",
        "messaging.priority_routing.enabled=false",
        // The guide's override, over the default 64MB ceiling.
        "--set",
        "agents.overrides=[{agent_id: heavy-processor, memory: 500MB}]",
        "--set",
        "runtime.numa.cpu_bind=false",
        "--set",
        "runtime.wasm.cache_compiled_modules=false",
        "--set",
        "runtime.wasm.module_cache_size=10",
        "--set",
        "observability.hdr_log.interval=5s",
        "--set",
        "runtime.max_concurrent_messages=100",
    ]);
    for notice in [
        "without runtime.wasm.stack_pooling a handler cannot yield",
        "runtime.numa.cpu_bind: acts only with runtime.numa.enabled",
        "runtime.wasm.module_cache_size: sizes a cache",
        "observability.hdr_log.interval: paces the HDR log",
        "each of the 1 data shards' mailboxes holds 100 messages, below messaging.queue_size (10000)",
        "messaging.priority_routing.queues wait for messaging.priority_routing.enabled",
        "agents.overrides[0].memory (500MB for `heavy-processor`) over runtime.max_memory_per_agent (64MB): those agents get 64MB",
    ] {
        assert!(running.seen.contains(notice), "{notice}: {}", running.seen);
    }
    // With the keys they wait for on, nothing is said.
    let running = start_engine(&[
        "--set",
        "runtime.worker_threads=1",
        "--set",
        "runtime.time_slice=1ms",
        "--set",
        "messaging.priority_routing.enabled=true",
        // Written at its default (as saved `profiles show` output writes
        // every key), an idle key changes nothing and is not named.
        "--set",
        "runtime.numa.cpu_bind=true",
    ]);
    assert!(!running.seen.contains("cannot yield"), "{}", running.seen);
    assert!(
        !running.seen.contains("runtime.numa.cpu_bind: acts only"),
        "{}",
        running.seen
    );
    assert!(
        !running.seen.contains("mailboxes holds"),
        "{}",
        running.seen
    );
    // The default classes under the default 5s delivery_timeout: low's 10s never counts.
    assert!(
        running
            .seen
            .contains("messaging.priority_routing.queues: low (10s) wait no longer than messaging.delivery_timeout (5s)"),
        "{}",
        running.seen
    );
    assert!(
        !running.seen.contains("over runtime.max_memory_per_agent"),
        "{}",
        running.seen
    );
    assert!(
        !running.seen.contains(" wait for messaging"),
        "{}",
        running.seen
    );
}

#[test]
fn a_built_in_profiles_tuning_of_the_other_transport_is_reported_at_boot() {
    // low-latency tunes QUIC; a later layer picks TCP.
    let running = start_engine(&[
        "--profile",
        "low-latency",
        "--set",
        "transport.type=tcp",
        "--set",
        "runtime.worker_threads=1",
    ]);
    let line = running
        .seen
        .lines()
        .find(|line| line.contains("belong to the other transport"))
        .unwrap_or_else(|| panic!("no notice in {}", running.seen));
    assert!(
        line.contains("transport.type is tcp")
            && line.contains("transport.quic.keep_alive_interval"),
        "{line}"
    );
    // A user's TCP key at its default, on QUIC, changes nothing either way:
    // it loads, and is named as the other transport's, not as waiting for
    // a cluster.
    let running = start_engine(&[
        "--set",
        "transport.tcp.nodelay=true",
        "--set",
        "runtime.worker_threads=1",
    ]);
    let named = |what: &str| {
        running
            .seen
            .lines()
            .find(|line| line.contains(what))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    assert!(
        named("belong to the other transport").contains("transport.tcp.nodelay"),
        "{}",
        running.seen
    );
    assert!(
        !named("wait for a cluster").contains("transport.tcp.nodelay"),
        "{}",
        running.seen
    );
    // Written by the user with a value of its own, the same is refused.
    let refused = engine(&["--set", "transport.tcp.nodelay=false", "profiles", "show"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("transport.tcp.nodelay applies to the TCP transport only"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn server_start_runs_a_node_as_the_guides_command_spells_it() {
    let running = start_engine(&["--profile", "low-latency", "server", "start"]);
    let admin = running.admin_address().to_string();
    let listed = engine(&["agents", "list", "--admin", &admin]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).starts_with("NAME"), "{}", stdout(&listed));
}
