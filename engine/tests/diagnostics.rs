//! The diagnostic commands against planted problems: `engine host check` on
//! a planted /sys and /proc, `engine performance diagnose` and `engine
//! memory analyze` against running engines with a slow and a leaking agent.
//! Each bad input is refused with exit status 2.

mod common;

use std::path::Path;

use caxton_admin::AdminClient;
use common::{engine, example, start_engine, stderr, stdout};
use hyper::Method;
use serde_json::Value;

fn plant(root: &Path, file: &str, text: &str) {
    let path = root.join(file.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    std::fs::write(path, text).expect("write");
}

fn findings(output: &std::process::Output) -> Vec<Value> {
    assert!(output.status.success(), "{}", stderr(output));
    let report: Value = serde_json::from_str(&stdout(output)).expect("JSON report");
    report["findings"].as_array().expect("findings").clone()
}

fn verdict<'a>(findings: &'a [Value], check: &str) -> &'a str {
    findings
        .iter()
        .find(|finding| finding["check"] == check)
        .and_then(|finding| finding["verdict"].as_str())
        .unwrap_or_else(|| panic!("no {check} in {findings:?}"))
}

#[test]
fn host_check_ranks_a_planted_hosts_problems_first_with_their_fixes() {
    let root = tempfile::tempdir().expect("tempdir");
    let at = root.path();
    plant(
        at,
        "/sys/devices/system/cpu/cpu2/cpufreq/scaling_governor",
        "powersave\n",
    );
    plant(
        at,
        "/sys/devices/system/cpu/cpu3/cpufreq/scaling_governor",
        "performance\n",
    );
    plant(
        at,
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "[always] madvise never\n",
    );
    plant(at, "/proc/sys/vm/max_map_count", "1000\n");
    plant(at, "/proc/irq/40/smp_affinity_list", "0-1\n");
    let output = engine(&[
        "host",
        "check",
        "--cpus",
        "2-3",
        "--json",
        "--root",
        at.to_str().expect("utf-8"),
    ]);
    let found = findings(&output);
    assert_eq!(found.len(), 12, "every check reports");
    // A map limit below the pools' need is the one problem; it comes first.
    assert_eq!(found[0]["check"], "max-map-count");
    assert_eq!(found[0]["verdict"], "problem");
    assert!(found[0]["remedy"]
        .as_str()
        .expect("remedy")
        .starts_with("sysctl -w vm.max_map_count="));
    assert_eq!(verdict(&found, "cpu-governor"), "warn");
    assert_eq!(verdict(&found, "transparent-huge-pages"), "warn");
    assert_eq!(
        verdict(&found, "irq-affinity"),
        "ok",
        "IRQs stay off cpus 2-3"
    );
    assert_eq!(
        verdict(&found, "swap"),
        "unknown",
        "missing files are unknown, not errors"
    );

    let text = engine(&[
        "host",
        "check",
        "--cpus",
        "2-3",
        "--root",
        at.to_str().expect("utf-8"),
    ]);
    assert!(text.status.success());
    assert!(
        stdout(&text).contains("fix: cpupower -c 2-3 frequency-set -g performance"),
        "{}",
        stdout(&text)
    );
}

#[test]
fn host_check_reads_this_host_and_refuses_bad_cpu_lists() {
    let output = engine(&["--profile", "low-latency", "host", "check", "--json"]);
    let found = findings(&output);
    assert_eq!(found.len(), 12);
    for finding in &found {
        let verdict = finding["verdict"].as_str().expect("verdict");
        assert!(
            ["ok", "unknown", "info", "warn", "problem"].contains(&verdict),
            "{finding}"
        );
    }
    for bad in ["", "two", "3-x"] {
        let refused = engine(&["host", "check", "--cpus", bad]);
        assert_eq!(refused.status.code(), Some(2), "--cpus `{bad}`");
        assert!(stderr(&refused).contains("--cpus"), "{}", stderr(&refused));
    }
    // CPUs the host does not have are named, not judged.
    let beyond = engine(&["host", "check", "--cpus", "4094-4095"]);
    assert_eq!(beyond.status.code(), Some(2), "{}", stderr(&beyond));
    assert!(
        stderr(&beyond).contains("this host has no CPU 4094-4095"),
        "{}",
        stderr(&beyond)
    );
}

fn call(client: &AdminClient, method: Method, path: &str, body: Vec<u8>) -> Value {
    let answer = client
        .call(method, path, "application/json", body)
        .expect("the endpoint answers");
    assert!(
        answer.status.is_success(),
        "{path}: {}",
        answer.error_message()
    );
    answer.json()
}

fn deploy(client: &AdminClient, name: &str, module: &str) {
    call(
        client,
        Method::POST,
        &format!("/v1/agents?name={name}&instances=1"),
        example(module),
    );
}

fn send(client: &AdminClient, agent: &str, content: &str) -> Value {
    let body = serde_json::json!({ "content": content }).to_string();
    call(
        client,
        Method::POST,
        &format!("/v1/agents/{agent}/messages"),
        body.into_bytes(),
    )
}

#[test]
fn diagnose_names_the_slow_agent_first_and_refuses_bad_input() {
    let running = start_engine(&[]);
    let address = running.admin_address().to_string();
    let client = AdminClient::new(running.admin_address(), None).expect("client");
    deploy(&client, "quick", "echo.wat");
    deploy(&client, "plodder", "slow.wat");
    for round in 0..200 {
        send(&client, "quick", &format!("q{round}"));
        if round % 2 == 0 {
            send(&client, "plodder", &format!("s{round}"));
        }
    }
    let output = engine(&[
        "performance",
        "diagnose",
        "--issue",
        "high-latency",
        "--window",
        "300ms",
        "--json",
        "--admin",
        &address,
    ]);
    let found = findings(&output);
    let report: Value = serde_json::from_str(&stdout(&output)).expect("json");
    assert_eq!(
        report["basis"], "since-start",
        "nothing was sent in the window"
    );
    assert_eq!(found[0]["check"], "slow-agent", "{found:?}");
    assert_eq!(found[0]["subject"], "plodder", "{found:?}");
    assert_eq!(
        found[0]["profile_key"],
        "agents.default_limits.max_execution_time"
    );
    // On a loaded machine echo's tail can pass the threshold too (handler
    // time is wall time, preemptions included); it never outranks slow.wat.
    let position = |subject: &str| {
        found
            .iter()
            .position(|finding| finding["subject"] == subject)
    };
    assert!(
        position("quick").is_none_or(|quick| quick > 0),
        "echo never ranks first: {found:?}"
    );
    // The per-agent run-time histogram behind it: slow.wat spins 200 µs
    // by the clock, so no run is shorter; the ceiling, ten times that,
    // leaves room for preemptions on a loaded machine and still catches a
    // figure in the wrong unit.
    let agents = call(&client, Method::GET, "/v1/agents/plodder", Vec::new());
    let p50 = agents["p50_processing_us"].as_f64().expect("p50");
    assert!((200.0..=2_000.0).contains(&p50), "{agents}");

    // Traffic during the window is judged on the window alone.
    let sender = {
        let client = AdminClient::new(running.admin_address(), None).expect("client");
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
            while std::time::Instant::now() < deadline {
                send(&client, "plodder", "during");
            }
        })
    };
    let windowed = engine(&[
        "performance",
        "diagnose",
        "--issue",
        "throughput",
        "--window",
        "1s",
        "--json",
        "--admin",
        &address,
    ]);
    sender.join().expect("sender");
    let report: Value = serde_json::from_str(&stdout(&windowed)).expect("json");
    assert_eq!(report["basis"], "window", "{report}");
    let text = engine(&[
        "performance",
        "diagnose",
        "--issue",
        "high-latency",
        "--window",
        "100ms",
        "--admin",
        &address,
    ]);
    assert!(
        stdout(&text).contains("slow-agent: agent `plodder`"),
        "{}",
        stdout(&text)
    );

    assert_refused(
        &["performance", "diagnose"],
        &address,
        vec![
            (vec!["--issue", "slowness"], "slowness"),
            (vec!["--issue", "throughput", "--window", "0s"], "zero"),
            (
                vec!["--issue", "throughput", "--window", "soon"],
                "--window",
            ),
            (
                vec!["--issue", "throughput", "--admin", "127.0.0.1:1"],
                "cannot reach",
            ),
        ],
    );
}

#[test]
fn memory_analyze_names_the_leaking_agent_and_refuses_bad_input() {
    let running = start_engine(&[]);
    let address = running.admin_address().to_string();
    let client = AdminClient::new(running.admin_address(), None).expect("client");
    deploy(&client, "leaky", "leak.wat");
    deploy(&client, "steady", "echo.wat");
    assert_eq!(send(&client, "leaky", "x")["content"], "kept");
    let analysis = std::thread::spawn({
        let address = address.clone();
        move || {
            engine(&[
                "memory",
                "analyze",
                "--duration",
                "3s",
                "--interval",
                "200ms",
                "--json",
                "--admin",
                &address,
            ])
        }
    });
    // 64 KiB kept per message, about 25 a second, while the window is open.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(3300);
    while std::time::Instant::now() < deadline {
        send(&client, "leaky", "more");
        send(&client, "steady", "same");
        std::thread::sleep(std::time::Duration::from_millis(40));
    }
    let output = analysis.join().expect("analysis");
    let found = findings(&output);
    assert_eq!(found[0]["check"], "agent-memory-growth", "{found:?}");
    assert_eq!(found[0]["subject"], "leaky", "{found:?}");
    assert!(
        found.iter().all(|finding| finding["subject"] != "steady"),
        "{found:?}"
    );
    let report: Value = serde_json::from_str(&stdout(&output)).expect("json");
    assert!(
        report["samples"].as_u64().expect("samples") >= 10,
        "{report}"
    );
    let trends = report["trends"].as_array().expect("trends");
    for series in [
        "resident memory",
        "jemalloc allocated",
        "jemalloc retained",
        "messages in mailboxes",
        "module cache",
        "steady",
    ] {
        assert!(
            trends.iter().any(|trend| trend["series"] == series),
            "no {series} in {trends:?}"
        );
    }

    assert_refused(
        &["memory", "analyze"],
        &address,
        vec![
            (vec!["--duration", "0s"], "zero"),
            (vec!["--duration", "2s", "--interval", "5s"], "longer than"),
            (
                vec!["--duration", "2s", "--interval", "1ms"],
                "shorter than 10ms",
            ),
            (
                vec!["--duration", "1s", "--admin", "127.0.0.1:1"],
                "cannot reach",
            ),
        ],
    );
}

/// The trace events of one message, by kind: (ts µs, name, duration µs).
fn events_by_trace(trace: &Value) -> std::collections::BTreeMap<u64, Vec<(f64, String, f64)>> {
    let mut by_trace = std::collections::BTreeMap::<u64, Vec<(f64, String, f64)>>::new();
    for event in trace["traceEvents"].as_array().expect("traceEvents") {
        let Some(id) = event["args"]["trace"].as_u64() else {
            continue;
        };
        by_trace.entry(id).or_default().push((
            event["ts"].as_f64().expect("ts"),
            event["name"].as_str().expect("name").to_owned(),
            event["dur"].as_f64().unwrap_or(0.0),
        ));
    }
    by_trace
}

#[test]
fn profile_trace_writes_each_sampled_messages_hops_in_time_order() {
    use base64::Engine as _;
    let running = start_engine(&["--set", "runtime.worker_threads=2"]);
    let address = running.admin_address().to_string();
    let client = AdminClient::new(running.admin_address(), None).expect("client");
    deploy(&client, "echo", "echo.wat");
    deploy(&client, "forwarder", "forwarder.wat");
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("trace.json");
    let tracer = std::thread::spawn({
        let (address, output) = (address.clone(), output.display().to_string());
        move || {
            engine(&[
                "profile",
                "trace",
                "--messages",
                "30",
                "--output",
                &output,
                "--timeout",
                "30s",
                "--admin",
                &address,
            ])
        }
    });
    // Through the forwarder to echo: [1 hop]["echo"] then the payload.
    let route = base64::engine::general_purpose::STANDARD.encode(b"\x01\x04echohi");
    let body = serde_json::json!({ "content_base64": route }).to_string();
    while !tracer.is_finished() {
        send(&client, "echo", "traced?");
        call(
            &client,
            Method::POST,
            "/v1/agents/forwarder/messages",
            body.clone().into_bytes(),
        );
    }
    let finished = tracer.join().expect("tracer");
    assert!(finished.status.success(), "{}", stderr(&finished));
    assert!(
        stderr(&finished).contains("30 messages traced"),
        "{}",
        stderr(&finished)
    );
    let trace: Value = serde_json::from_str(&std::fs::read_to_string(&output).expect("written"))
        .expect("trace JSON");
    let by_trace = events_by_trace(&trace);
    assert_eq!(by_trace.len(), 30);
    let mut through_both = 0;
    for (id, events) in &by_trace {
        let first = |prefix: &str| {
            events
                .iter()
                .filter(|(_, name, _)| name.starts_with(prefix))
                .map(|(ts, _, _)| *ts)
                .fold(f64::INFINITY, f64::min)
        };
        let send = first("send");
        assert!(send.is_finite(), "trace {id} has no send: {events:?}");
        assert!(
            events.iter().all(|(ts, _, _)| *ts >= send),
            "trace {id} starts at its send: {events:?}"
        );
        // Each handler run follows its admission to that agent's mailbox.
        for (ts, name, duration) in events
            .iter()
            .filter(|(_, name, _)| name.starts_with("handle "))
        {
            let agent = &name["handle ".len()..];
            let admitted = first(&format!("mailbox of {agent}"));
            assert!(
                admitted <= *ts,
                "trace {id}: {agent} ran before its mailbox: {events:?}"
            );
            // A run lasts: zero is a handler end whose start went missing.
            assert!(
                *duration > 0.0,
                "trace {id}: {agent}'s run has no start: {events:?}"
            );
        }
        let handled = |agent: &str| first(&format!("handle {agent}"));
        if handled("forwarder").is_finite() && handled("echo").is_finite() {
            through_both += 1;
            assert!(
                handled("forwarder") <= first("mailbox of echo"),
                "trace {id}: {events:?}"
            );
        }
        // The answer leaves for the client port after the last handler.
        let answered = first("ring to client port");
        assert!(answered >= handled("echo"), "trace {id}: {events:?}");
    }
    assert!(
        through_both > 0,
        "a forwarded message's trace follows it into echo"
    );
    let threads: Vec<&str> = trace["traceEvents"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| event["name"] == "thread_name")
        .filter_map(|event| event["args"]["name"].as_str())
        .collect();
    assert!(
        threads.iter().any(|name| name.starts_with("shard ")),
        "{threads:?}"
    );

    assert_refused(
        &["profile", "trace"],
        &address,
        vec![
            (vec!["--messages", "0", "--output", "x.json"], "--messages"),
            (
                vec!["--output", "/nonexistent/dir/trace.json"],
                "cannot write",
            ),
            (vec!["--output", "y.json", "--timeout", "0s"], "zero"),
        ],
    );
    let unreachable = engine(&[
        "profile",
        "trace",
        "--output",
        &dir.path().join("z.json").display().to_string(),
        "--admin",
        "127.0.0.1:1",
    ]);
    assert_eq!(
        unreachable.status.code(),
        Some(2),
        "{}",
        stderr(&unreachable)
    );
    // Checked for writing, never written: no empty file is left behind.
    assert!(!dir.path().join("z.json").exists());
}

#[test]
fn profile_cpu_writes_a_pprof_with_the_handlers_frames_and_thread_names() {
    use pprof::protos::Message as _;
    let running = start_engine(&["--set", "runtime.worker_threads=1"]);
    let address = running.admin_address().to_string();
    let client = AdminClient::new(running.admin_address(), None).expect("client");
    deploy(&client, "plodder", "slow.wat");
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("cpu.prof");
    let profiler = std::thread::spawn({
        let (address, output) = (address.clone(), output.display().to_string());
        move || {
            engine(&[
                "profile",
                "cpu",
                "--duration",
                "2s",
                "--frequency",
                "499",
                "--output",
                &output,
                "--admin",
                &address,
            ])
        }
    });
    // slow.wat spins 200 µs in its handler: the shard is busy in wasm.
    while !profiler.is_finished() {
        send(&client, "plodder", "spin");
    }
    let finished = profiler.join().expect("profiler");
    assert!(finished.status.success(), "{}", stderr(&finished));
    let profile =
        pprof::protos::Profile::decode(std::fs::read(&output).expect("written").as_slice())
            .expect("a pprof protobuf");
    let strings = &profile.string_table;
    let function_name = |id: u64| {
        profile
            .function
            .iter()
            .find(|function| function.id == id)
            .map(|function| strings[function.name as usize].as_str())
            .unwrap_or("")
    };
    let mut shard_handler_samples = 0;
    for sample in &profile.sample {
        let thread = sample
            .label
            .iter()
            .find(|label| strings[label.key as usize] == "thread")
            .map(|label| strings[label.str as usize].as_str())
            .unwrap_or("");
        let frames: Vec<&str> = sample
            .location_id
            .iter()
            .filter_map(|id| profile.location.iter().find(|location| location.id == *id))
            .flat_map(|location| {
                location
                    .line
                    .iter()
                    .map(|line| function_name(line.function_id))
            })
            .collect();
        if thread.starts_with("caxton-shard-")
            && frames
                .iter()
                .any(|frame| frame.contains("wasmtime") || frame.contains("caxton_agents"))
        {
            shard_handler_samples += sample.value[0];
        }
    }
    assert!(
        shard_handler_samples > 0,
        "no sample of a shard running a handler: {strings:?}"
    );
    let svg = std::fs::read_to_string(dir.path().join("cpu.svg")).expect("flame graph beside it");
    assert!(
        svg.starts_with("<?xml") && svg.contains("caxton-shard-0"),
        "{}",
        &svg[..svg.len().min(200)]
    );
    assert!(
        stderr(&finished).contains("samples over"),
        "{}",
        stderr(&finished)
    );

    // One profile at a time; stopping none is refused.
    let started = client
        .call(
            Method::POST,
            "/v1/profile/cpu",
            "application/json",
            Vec::new(),
        )
        .expect("answers");
    assert_eq!(started.status.as_u16(), 202);
    let again = client
        .call(
            Method::POST,
            "/v1/profile/cpu",
            "application/json",
            Vec::new(),
        )
        .expect("answers");
    assert_eq!(again.status.as_u16(), 409, "{}", again.error_message());
    let stopped = client
        .call(
            Method::DELETE,
            "/v1/profile/cpu",
            "application/json",
            Vec::new(),
        )
        .expect("answers");
    assert_eq!(stopped.status.as_u16(), 200);
    let none = client
        .call(
            Method::DELETE,
            "/v1/profile/cpu",
            "application/json",
            Vec::new(),
        )
        .expect("answers");
    assert_eq!(none.status.as_u16(), 409);
    // So with a heap profile and a trace: a second start would take over
    // the first operator's.
    let call = |method: Method, path: &str| {
        client
            .call(method, path, "application/json", Vec::new())
            .expect("answers")
    };
    for (start, stop) in [
        ("/v1/profile/memory", "/v1/profile/memory"),
        ("/v1/profile/trace?messages=1000", "/v1/profile/trace"),
    ] {
        let first = call(Method::POST, start);
        assert!(first.status.is_success(), "{start}: {}", first.text());
        let second = call(Method::POST, start);
        assert_eq!(second.status.as_u16(), 409, "{start}: {}", second.text());
        assert_eq!(second.json()["error"]["code"], "profile-running");
        assert!(call(Method::DELETE, stop).status.is_success());
        let again = call(Method::POST, start);
        assert!(
            again.status.is_success(),
            "{start} after a stop: {}",
            again.text()
        );
        assert!(call(Method::DELETE, stop).status.is_success());
    }
    // A heap profile that is not running is neither read nor stopped, as
    // with the CPU profile: each is the caller's slip, said the same way.
    for method in [Method::GET, Method::DELETE] {
        let idle = call(method.clone(), "/v1/profile/memory");
        assert_eq!(idle.status.as_u16(), 409, "{method}: {}", idle.text());
        assert_eq!(idle.json()["error"]["code"], "no-profile");
    }
    // Every start answers 202: each runs on after the answer.
    let started = call(Method::POST, "/v1/profile/trace?messages=10");
    assert_eq!(started.status.as_u16(), 202, "{}", started.text());
    assert!(call(Method::DELETE, "/v1/profile/trace")
        .status
        .is_success());
    assert_refused(
        &["profile", "cpu"],
        &address,
        vec![
            (vec!["--duration", "0s", "--output", "a.prof"], "zero"),
            (
                vec!["--frequency", "0", "--output", "a.prof"],
                "--frequency",
            ),
            (vec!["--output", "cpu.svg"], "overwritten"),
            (
                vec!["--output", "/nonexistent/dir/cpu.prof"],
                "cannot write",
            ),
        ],
    );
}

#[test]
fn profile_memory_writes_heap_profiles_and_allocator_statistics_per_sample() {
    use pprof::protos::Message as _;
    use std::io::Read as _;
    // jemalloc samples about one allocation per 2^lg_prof_sample bytes (512
    // KiB in the engine); one per 4 KiB here, so the live heap of a test this
    // short is sure to hold sampled allocations.
    let running = common::start_engine_with(
        &["--set", "runtime.worker_threads=1"],
        &[("_RJEM_MALLOC_CONF", "lg_prof_sample:12")],
    );
    let address = running.admin_address().to_string();
    let client = AdminClient::new(running.admin_address(), None).expect("client");
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("mem.prof");
    let profiler = std::thread::spawn({
        let (address, output) = (address.clone(), output.display().to_string());
        move || {
            engine(&[
                "profile",
                "memory",
                "--interval",
                "400ms",
                "--duration",
                "1600ms",
                "--output",
                &output,
                "--admin",
                &address,
            ])
        }
    });
    // Allocations that stay live while the profiler samples (about one
    // allocation per 512 KiB is): a compiled module and many instances.
    std::thread::sleep(std::time::Duration::from_millis(200));
    call(
        &client,
        Method::POST,
        "/v1/agents?name=echo&instances=48",
        example("echo.wat"),
    );
    while !profiler.is_finished() {
        send(&client, "echo", "allocate");
    }
    let finished = profiler.join().expect("profiler");
    assert!(finished.status.success(), "{}", stderr(&finished));
    for sample in 1..=4 {
        assert!(
            dir.path().join(format!("mem-{sample:03}.prof")).exists(),
            "sample {sample}"
        );
    }
    let stats: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("mem.stats.json")).expect("statistics"),
    )
    .expect("JSON");
    let samples = stats["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 4);
    for sample in samples {
        for key in [
            "allocated_bytes",
            "active_bytes",
            "resident_bytes",
            "retained_bytes",
        ] {
            assert!(
                sample["allocator"][key].as_u64().is_some(),
                "{key} in {sample}"
            );
        }
        assert!(sample["allocator"]["allocated_bytes"].as_u64() > Some(0));
    }
    let mut protobuf = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&output).expect("written"))
        .read_to_end(&mut protobuf)
        .expect("gzipped");
    let profile = pprof::protos::Profile::decode(protobuf.as_slice()).expect("a pprof protobuf");
    let strings = &profile.string_table;
    assert!(
        strings.iter().any(|text| text == "inuse_space"),
        "{strings:?}"
    );
    assert!(
        strings
            .iter()
            .any(|text| text.contains("wasmtime") || text.contains("caxton")),
        "the live heap's frames are named: {strings:?}"
    );
    assert!(std::fs::read_to_string(dir.path().join("mem.svg"))
        .expect("flame graph")
        .contains("<svg"));
    // Sampling stopped with the command: a dump now is refused.
    let after = client
        .call(
            Method::GET,
            "/v1/profile/memory",
            "application/json",
            Vec::new(),
        )
        .expect("answers");
    assert_eq!(after.status.as_u16(), 409, "{}", after.error_message());
    assert_eq!(after.json()["error"]["code"], "no-profile");

    assert_refused(
        &["profile", "memory", "--output", "m.prof"],
        &address,
        vec![
            (vec!["--interval", "0s"], "zero"),
            (vec!["--interval", "5s", "--duration", "1s"], "longer than"),
        ],
    );
}

/// Each case's arguments after `command` (with `--admin ADDRESS` unless the
/// case names its own) exit with status 2, and the error says `says`.
fn assert_refused(command: &[&str], address: &str, cases: Vec<(Vec<&str>, &str)>) {
    for (arguments, says) in cases {
        let mut all = command.to_vec();
        all.extend(arguments.iter().copied());
        if !all.contains(&"--admin") {
            all.extend(["--admin", address]);
        }
        let refused = engine(&all);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{all:?}: {}",
            stderr(&refused)
        );
        assert!(
            stderr(&refused).contains(says),
            "{all:?}: {}",
            stderr(&refused)
        );
        // Said once, not wrapped in a second telling of itself.
        assert_eq!(
            stderr(&refused).matches("cannot reach").count(),
            usize::from(says == "cannot reach"),
            "{all:?}: {}",
            stderr(&refused)
        );
    }
}
