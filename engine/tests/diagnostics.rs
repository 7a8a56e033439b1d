//! The diagnostic commands against planted problems: `engine host check` on
//! a planted /sys and /proc, `engine performance diagnose` and `engine
//! memory analyze` against running engines with a slow and a leaking agent.
//! Each bad input is refused with exit status 2.

mod common;

use std::path::Path;

use caxton_admin::AdminClient;
use common::{engine, start_engine, stderr, stdout};
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
    assert_eq!(found.len(), 11, "every check reports");
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
    assert_eq!(found.len(), 11);
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
}

fn example(name: &str) -> Vec<u8> {
    let path = format!("{}/../examples/agents/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
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
    assert!(
        found.iter().all(|finding| finding["subject"] != "quick"),
        "echo's handler is not slow: {found:?}"
    );
    // The per-agent run-time histogram behind it: slow.wat spins 200 µs.
    let agents = call(&client, Method::GET, "/v1/agents/plodder", Vec::new());
    let p50 = agents["p50_processing_us"].as_f64().expect("p50");
    assert!((200.0..=400.0).contains(&p50), "{agents}");

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

    for (arguments, says) in [
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
    ] {
        let mut all = vec!["performance", "diagnose"];
        all.extend(arguments.iter().copied());
        if !all.contains(&"--admin") {
            all.extend(["--admin", &address]);
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
    }
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
        "steady",
    ] {
        assert!(
            trends.iter().any(|trend| trend["series"] == series),
            "no {series} in {trends:?}"
        );
    }

    for (arguments, says) in [
        (vec!["--duration", "0s"], "zero"),
        (vec!["--duration", "2s", "--interval", "5s"], "longer than"),
        (
            vec!["--duration", "1s", "--admin", "127.0.0.1:1"],
            "cannot reach",
        ),
    ] {
        let mut all = vec!["memory", "analyze"];
        all.extend(arguments.iter().copied());
        if !all.contains(&"--admin") {
            all.extend(["--admin", &address]);
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
    }
}
