//! The admin endpoint of a running engine, as users and their tools meet it:
//! Prometheus scrapes checked by `promtool`, HDR logs read by HdrHistogram's
//! own `HistogramLogProcessor`, every JSON route with its bad inputs, the
//! access token, and the command-line wrappers.
//!
//! `promtool` (Debian `prometheus`) and `java` with HdrHistogram (Debian
//! `default-jre-headless`, `libhdrhistogram-java`) are installed by
//! `scripts/bootstrap.sh --test`, which `scripts/test.sh` runs; these tests
//! fail, naming the package, without them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caxton_admin::{AdminClient, Answer};
use common::{engine, example, start_engine, start_engine_with, stderr, stdout, RunningEngine};
use hyper::{Method, StatusCode};
use serde_json::Value;

const HDR_JAR: &str = "/usr/share/java/hdrhistogram.jar";
const TOKEN: &str = "0123456789abcdef-test-token";

fn client(running: &RunningEngine) -> AdminClient {
    AdminClient::new(running.admin_address(), None).expect("client")
}

fn call(client: &AdminClient, method: Method, path: &str, body: Vec<u8>) -> Answer {
    client
        .call(method, path, "application/json", body)
        .expect("the endpoint answers")
}

fn deploy(client: &AdminClient, name: &str, module: &str, instances: u16) -> Answer {
    call(
        client,
        Method::POST,
        &format!("/v1/agents?name={name}&instances={instances}"),
        example(module),
    )
}

fn send(client: &AdminClient, agent: &str, content: &str) -> Answer {
    let body = serde_json::json!({ "content": content }).to_string();
    call(
        client,
        Method::POST,
        &format!("/v1/agents/{agent}/messages"),
        body.into_bytes(),
    )
}

/// Send `content` to echo-like `agent` and check it came back as `inform`.
fn echoed(client: &AdminClient, agent: &str, content: &str) {
    let answer = send(client, agent, content);
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        (
            answer.json()["performative"].as_str(),
            answer.json()["content"].as_str()
        ),
        (Some("inform"), Some(content)),
        "{}",
        answer.text()
    );
}

fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], code, "{}", answer.text());
    assert!(
        !answer.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{}",
        answer.text()
    );
}

/// The value of the sample `series` in a Prometheus text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series}"))
        .parse()
        .expect("a number")
}

fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "`{program}` is missing: install Debian's {package} (`scripts/bootstrap.sh --test` does; `scripts/test.sh` runs it)"
    );
}

#[test]
fn a_scrape_shows_the_documented_metrics_and_passes_promtool() {
    require("promtool", "prometheus");
    let running = start_engine(&["--set", "runtime.worker_threads=2"]);
    let client = client(&running);
    assert_eq!(
        deploy(&client, "echo", "echo.wat", 2).status,
        StatusCode::CREATED
    );
    for index in 0..40 {
        echoed(&client, "echo", &format!("ping {index}"));
    }
    // Rates are taken over at least 0.2 s since the last reading (here, the
    // node's start): wait that long, so this scrape takes one.
    std::thread::sleep(Duration::from_millis(250));
    let scrape = call(&client, Method::GET, "/metrics", Vec::new());
    assert_eq!(scrape.status, StatusCode::OK);
    let text = scrape.text();
    for quantile in ["0.5", "0.9", "0.99", "0.999"] {
        for name in [
            "caxton_routing_latency_seconds",
            "caxton_agent_startup_time_seconds",
            "caxton_message_processing_time_seconds",
        ] {
            let value = sample(&text, &format!("{name}{{quantile=\"{quantile}\"}}"));
            assert!(value > 0.0 && value < 10.0, "{name} {quantile}: {value}");
        }
        // No cluster in this build: present, honest, empty.
        for name in [
            "caxton_remote_routing_latency_seconds",
            "caxton_gossip_convergence_time_seconds",
        ] {
            assert!(sample(&text, &format!("{name}{{quantile=\"{quantile}\"}}")).is_nan());
        }
    }
    assert_eq!(sample(&text, "caxton_routing_latency_seconds_count"), 40.0);
    assert_eq!(
        sample(&text, "caxton_message_processing_time_seconds_count"),
        40.0
    );
    assert_eq!(
        sample(
            &text,
            "caxton_routing_latency_distribution_seconds_bucket{le=\"+Inf\"}"
        ),
        40.0
    );
    // Two instances started at deploy.
    assert!(sample(&text, "caxton_agent_startup_time_seconds_count") >= 2.0);
    assert_eq!(
        sample(&text, "caxton_agents_messages_processed_total"),
        40.0
    );
    let per_shard = sample(&text, "caxton_shard_messages_handled_total{shard=\"0\"}")
        + sample(&text, "caxton_shard_messages_handled_total{shard=\"1\"}");
    assert_eq!(per_shard, 40.0);
    assert!(sample(&text, "caxton_memory_used_bytes") > 1e6);
    // The 40 echoes and the deploy are in the window since the start.
    assert!(sample(&text, "caxton_messages_per_second") > 0.0);
    assert!(sample(&text, "caxton_cpu_usage_percent") > 0.0);
    for name in [
        "caxton_shard_queue_depth{shard=\"0\"}",
        "caxton_shard_refused_total{shard=\"1\"}",
        "caxton_shard_timeouts_total{shard=\"0\"}",
        "caxton_shard_agent_traps_total{shard=\"0\"}",
    ] {
        sample(&text, name);
    }
    // `curl -s localhost:1476/metrics | grep latency` shows what the performance tuning guide shows.
    assert!(text
        .lines()
        .any(|line| line.starts_with("caxton_routing_latency_seconds{quantile=\"0.99\"} ")));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool ends");
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        stdout(&checked),
        stderr(&checked)
    );
}

#[test]
fn every_route_answers_and_bad_input_gets_a_4xx_naming_the_problem() {
    let running = start_engine(&["--set", "observability.admin.max_upload_size=64KB"]);
    // The boot log says how many handlers each shard can time-slice.
    let stacks: u64 = running
        .seen
        .split("handler_stacks_per_shard=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no handler stack count in the boot log: {}", running.seen));
    assert!(stacks >= u64::from(caxton_agents::HANDLER_STACKS_MIN));
    let client = client(&running);

    let deployed = call(
        &client,
        Method::POST,
        "/v1/agents?name=echo&instances=3&memory=8MB&cpu_shares=500m&max_execution_time=250ms",
        example("echo.wat"),
    );
    assert_eq!(deployed.status, StatusCode::CREATED, "{}", deployed.text());
    assert_eq!(deployed.json()["limits"]["memory"], "8MB");
    assert_eq!(deployed.json()["limits"]["max_execution_time"], "250ms");
    assert_error(
        &deploy(&client, "echo", "echo.wat", 1),
        StatusCode::CONFLICT,
        "refused",
    );

    let reply = send(&client, "echo", "hello");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["performative"], "inform");
    assert_eq!(reply.json()["content"], "hello");

    let listed = call(&client, Method::GET, "/v1/agents", Vec::new()).json();
    let agents = listed["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["name"], "echo");
    assert_eq!(agents[0]["instances"], 3);
    assert_eq!(agents[0]["handled"], 1);
    assert_eq!(agents[0]["stackless_runs"], 0, "it ran on a pooled stack");
    assert!(agents[0]["mean_processing_us"].as_f64().expect("mean") > 0.0);
    // Percentiles come from buckets, whose upper bounds lie above the runs
    // in them; none is shown above the longest run.
    let longest = agents[0]["max_processing_us"].as_f64().expect("max");
    for percentile in ["p50_processing_us", "p99_processing_us"] {
        let value = agents[0][percentile].as_f64().expect("a percentile");
        assert!(
            value > 0.0 && value <= longest,
            "{percentile} {value} over {longest}"
        );
    }
    let one = call(&client, Method::GET, "/v1/agents/echo", Vec::new()).json();
    assert_eq!(one["name"], "echo");

    let node = call(&client, Method::GET, "/v1/node", Vec::new()).json();
    assert_eq!(node["agents"], 1);
    assert_eq!(node["counters"]["handled"], 1);
    assert_eq!(node["latency"]["routing_latency"]["count"], 1);

    // A trapping agent: the sender gets a failure, the engine keeps serving.
    assert_eq!(
        deploy(&client, "trap", "trap.wat", 1).status,
        StatusCode::CREATED
    );
    let trapped = send(&client, "trap", "boom");
    assert_eq!(trapped.status, StatusCode::OK);
    assert_eq!(trapped.json()["performative"], "failure");
    assert!(
        trapped.json()["content"]
            .as_str()
            .unwrap_or("")
            .starts_with("caxton:trap"),
        "{}",
        trapped.text()
    );

    // Bad input, one case at a time.
    assert_error(
        &call(
            &client,
            Method::POST,
            "/v1/agents?name=bad",
            b"(module (func".to_vec(),
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-module",
    );
    assert_error(
        &call(
            &client,
            Method::POST,
            "/v1/agents?name=big",
            vec![b'x'; 65 * 1024],
        ),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
    );
    // Far over the limit, more than the sockets' buffers hold: the client
    // is still writing when the endpoint answers, and must get the answer,
    // not a broken write.
    for _ in 0..3 {
        assert_error(
            &call(
                &client,
                Method::POST,
                "/v1/agents?name=huge",
                vec![b'x'; 16 << 20],
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
        );
    }
    assert_error(
        &call(
            &client,
            Method::POST,
            "/v1/agents?instances=1",
            example("echo.wat"),
        ),
        StatusCode::BAD_REQUEST,
        "bad-parameter",
    );
    assert_error(
        &call(
            &client,
            Method::POST,
            "/v1/agents?name=x&instances=0",
            example("echo.wat"),
        ),
        StatusCode::BAD_REQUEST,
        "bad-parameter",
    );
    assert_error(
        &call(
            &client,
            Method::POST,
            "/v1/agents?name=x&memory=lots",
            example("echo.wat"),
        ),
        StatusCode::BAD_REQUEST,
        "bad-parameter",
    );
    assert_error(
        &call(
            &client,
            Method::POST,
            "/v1/agents?name=x&colour=red",
            example("echo.wat"),
        ),
        StatusCode::BAD_REQUEST,
        "bad-parameter",
    );
    // A memory limit past the node's ceiling for any agent.
    let over = call(
        &client,
        Method::POST,
        "/v1/agents?name=x&memory=1GB",
        example("echo.wat"),
    );
    assert_error(&over, StatusCode::BAD_REQUEST, "bad-parameter");
    assert!(
        over.text().contains("runtime.max_memory_per_agent"),
        "{}",
        over.text()
    );
    // One below the memory the module starts with (echo: one 64 KiB page).
    let under = call(
        &client,
        Method::POST,
        "/v1/agents?name=x&memory=10KB",
        example("echo.wat"),
    );
    assert!(under.status.is_client_error(), "{}", under.text());
    assert!(
        under
            .text()
            .contains("below the 65536 bytes the module starts with"),
        "{}",
        under.text()
    );
    assert_error(
        &call(
            &client,
            Method::POST,
            "/v1/agents?name=a%2Fb",
            example("echo.wat"),
        ),
        StatusCode::BAD_REQUEST,
        "bad-name",
    );
    assert_error(
        &call(&client, Method::POST, "/v1/agents?name=x", Vec::new()),
        StatusCode::BAD_REQUEST,
        "empty-module",
    );
    assert_error(
        &call(
            &client,
            Method::POST,
            "/v1/agents/echo/messages",
            b"{not json".to_vec(),
        ),
        StatusCode::BAD_REQUEST,
        "bad-json",
    );
    assert_error(
        &call(
            &client,
            Method::POST,
            "/v1/agents/echo/messages",
            br#"{"content": "x", "timeout_ms": 0}"#.to_vec(),
        ),
        StatusCode::BAD_REQUEST,
        "bad-json",
    );
    assert_error(
        &send(&client, "nobody", "hi"),
        StatusCode::NOT_FOUND,
        "unknown-agent",
    );
    assert_error(
        &call(&client, Method::GET, "/v1/agents/nobody", Vec::new()),
        StatusCode::NOT_FOUND,
        "unknown-agent",
    );
    // A slip of the keyboard gets the name it was near.
    for misspelt in [
        send(&client, "ehco", "hi"),
        call(&client, Method::GET, "/v1/agents/ehco", Vec::new()),
    ] {
        assert_error(&misspelt, StatusCode::NOT_FOUND, "unknown-agent");
        assert!(
            misspelt.text().contains("did you mean `echo`?"),
            "{}",
            misspelt.text()
        );
    }
    assert_error(
        &send(&client, "bad!name", "hi"),
        StatusCode::BAD_REQUEST,
        "bad-name",
    );
    assert_error(
        &call(&client, Method::PUT, "/v1/agents", Vec::new()),
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    );
    assert_error(
        &call(&client, Method::GET, "/v2/everything", Vec::new()),
        StatusCode::NOT_FOUND,
        "not-found",
    );
    assert_error(
        &call(&client, Method::POST, "/v1/hdr/dump", Vec::new()),
        StatusCode::CONFLICT,
        "no-directory",
    );

    let undeployed = call(&client, Method::DELETE, "/v1/agents/echo", Vec::new());
    assert_eq!(undeployed.status, StatusCode::OK);
    assert_error(
        &call(&client, Method::DELETE, "/v1/agents/echo", Vec::new()),
        StatusCode::NOT_FOUND,
        "unknown-agent",
    );
    // Still serving, and what it acknowledged is still there.
    let after = call(&client, Method::GET, "/v1/agents", Vec::new()).json();
    assert_eq!(after["agents"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        send(&client, "trap", "again").json()["performative"],
        "failure"
    );

    // The operator's log names the faulting agent once; its second trap,
    // within the fault log's interval, is counted for the next line.
    let (status, log) = running.terminate();
    assert!(status.success(), "{log}");
    let faults: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("agent fault"))
        .collect();
    assert_eq!(faults.len(), 1, "{log}");
    assert!(
        faults[0].contains("WARN")
            && faults[0].contains("trapped: wasm trap")
            && faults[0].contains("agent=\"trap\""),
        "{}",
        faults[0]
    );
}

#[test]
fn a_public_address_needs_a_token_and_requests_must_carry_it() {
    let refused = engine(&["--set", "observability.admin.listen=0.0.0.0:0"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("observability.admin.listen")
            && stderr(&refused).contains("access token"),
        "{}",
        stderr(&refused)
    );

    let running = start_engine_with(
        &["--set", "observability.admin.listen=0.0.0.0:0"],
        &[("CAXTON_ADMIN_TOKEN", TOKEN)],
    );
    let port = running.admin_address().port();
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let anonymous = AdminClient::new(address, None).expect("client");
    assert_error(
        &call(&anonymous, Method::GET, "/metrics", Vec::new()),
        StatusCode::UNAUTHORIZED,
        "missing-token",
    );
    let wrong = AdminClient::new(address, Some("x".repeat(TOKEN.len()))).expect("client");
    assert_error(
        &call(&wrong, Method::GET, "/v1/node", Vec::new()),
        StatusCode::UNAUTHORIZED,
        "bad-token",
    );
    let trusted = AdminClient::new(address, Some(TOKEN.into())).expect("client");
    assert_eq!(
        call(&trusted, Method::GET, "/v1/node", Vec::new()).status,
        StatusCode::OK
    );
    // The scheme's name is case-insensitive (RFC 7235).
    let mut stream = TcpStream::connect(address).expect("connects");
    write!(
        stream,
        "GET /v1/node HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .expect("written");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The command line finds the token in the environment, or takes --token.
    let admin = address.to_string();
    let listed = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["agents", "list", "--admin", &admin])
        .env("CAXTON_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("runs");
    assert!(listed.status.success(), "{}", stderr(&listed));
    let without = engine(&["agents", "list", "--admin", &admin]);
    assert_eq!(without.status.code(), Some(2));
    assert!(
        stderr(&without).contains("Authorization"),
        "{}",
        stderr(&without)
    );
    let with_flag = engine(&["agents", "list", "--admin", &admin, "--token", TOKEN]);
    assert!(with_flag.status.success(), "{}", stderr(&with_flag));
    // A token in the profile is checked like the environment's.
    let short = engine(&["--set", "observability.admin.access_token=short"]);
    assert_eq!(short.status.code(), Some(2));
    assert!(stderr(&short).contains("observability.admin.access_token"));
}

#[test]
fn the_command_line_wrappers_drive_a_running_engine() {
    let running = start_engine(&[]);
    let admin = running.admin_address().to_string();
    let echo = format!("{}/../examples/agents/echo.wat", env!("CARGO_MANIFEST_DIR"));
    let deployed = engine(&[
        "agents",
        "deploy",
        &echo,
        "--instances",
        "2",
        "--memory",
        "4MB",
        "--admin",
        &admin,
    ]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    assert!(
        stdout(&deployed).contains("deployed `echo`: 2 instances, memory 4MB"),
        "{}",
        stdout(&deployed)
    );

    let sent = engine(&["send", "echo", "hello there", "--admin", &admin]);
    assert!(sent.status.success(), "{}", stderr(&sent));
    assert_eq!(stdout(&sent), "inform: hello there\n");

    let listed = engine(&["agents", "list", "--admin", &admin]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let row = stdout(&listed)
        .lines()
        .find(|line| line.starts_with("echo "))
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .expect("an echo row");
    assert_eq!(row[1], "2", "instances");
    assert_eq!(row[2], "1", "handled");
    // `-` reads stdin: bytes that are not text go as they are (base64 on
    // the wire) and come back so.
    let mut piped = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["send", "echo", "-", "--admin", &admin])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("engine send");
    piped
        .stdin
        .take()
        .expect("stdin")
        .write_all(&[0xff, 0x00, 0x01])
        .expect("write stdin");
    let binary = piped.wait_with_output().expect("engine send ends");
    assert!(binary.status.success(), "{}", stderr(&binary));
    assert_eq!(stdout(&binary), "inform: base64:/wAB\n");
    // One-way: done once the node took it, the reply not awaited.
    let one_way = engine(&[
        "send",
        "echo",
        "no reply wanted",
        "--performative",
        "inform",
        "--no-wait",
        "--admin",
        &admin,
    ]);
    assert!(one_way.status.success(), "{}", stderr(&one_way));
    assert_eq!(stdout(&one_way), "accepted by the node\n");
    // Scaled up and back; the listing follows.
    let scaled = engine(&[
        "agents",
        "scale",
        "echo",
        "--instances",
        "3",
        "--admin",
        &admin,
    ]);
    assert!(scaled.status.success(), "{}", stderr(&scaled));
    assert_eq!(stdout(&scaled), "scaled `echo`: 2 → 3 instances\n");
    let listed = stdout(&engine(&["agents", "list", "--admin", &admin]));
    let instances = listed
        .lines()
        .find(|line| line.starts_with("echo "))
        .and_then(|line| line.split_whitespace().nth(1).map(str::to_owned));
    assert_eq!(instances.as_deref(), Some("3"), "{listed}");
    let back = engine(&[
        "agents",
        "scale",
        "echo",
        "--instances",
        "2",
        "--admin",
        &admin,
    ]);
    assert_eq!(stdout(&back), "scaled `echo`: 3 → 2 instances\n");
    let none = engine(&[
        "agents",
        "scale",
        "ghost",
        "--instances",
        "2",
        "--admin",
        &admin,
    ]);
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));

    // Bytes that are not printable text come back in base64: counter's
    // answer is its count as 8 little-endian bytes.
    let example_path = |name: &str| {
        format!(
            "{}/../examples/agents/{name}.wat",
            env!("CARGO_MANIFEST_DIR")
        )
    };
    for agent in ["counter", "grow"] {
        let deployed = engine(&["agents", "deploy", &example_path(agent), "--admin", &admin]);
        assert!(deployed.status.success(), "{}", stderr(&deployed));
    }
    let counted = engine(&["send", "counter", "x", "--admin", &admin]);
    assert_eq!(stdout(&counted), "inform: base64:AQAAAAAAAAA=\n");
    // An agent past its memory limit fails the send, and the listing
    // counts the fault.
    let grown = engine(&["send", "grow", "x", "--admin", &admin]);
    assert_eq!(grown.status.code(), Some(1), "{}", stderr(&grown));
    assert!(
        stdout(&grown).contains("caxton:memory-limit"),
        "{}",
        stdout(&grown)
    );
    let listed = stdout(&engine(&["agents", "list", "--admin", &admin]));
    assert!(
        listed
            .lines()
            .next()
            .is_some_and(|header| header.contains("MEM FAULTS")),
        "{listed}"
    );
    let grow_row: Vec<&str> = listed
        .lines()
        .find(|line| line.starts_with("grow "))
        .map(|line| line.split_whitespace().collect())
        .expect("a grow row");
    assert_eq!(&grow_row[2..7], ["0", "0", "0", "0", "1"], "{listed}");
    for agent in ["counter", "grow"] {
        assert!(engine(&["agents", "undeploy", agent, "--admin", &admin])
            .status
            .success());
    }
    // A timeout the endpoint would refuse is refused here, by its flag.
    let too_long = engine(&["send", "echo", "x", "--timeout", "2m", "--admin", &admin]);
    assert_eq!(too_long.status.code(), Some(2));
    assert!(
        stderr(&too_long).contains("--timeout 2m: a send waits 1ms to 60s"),
        "{}",
        stderr(&too_long)
    );

    let unknown = engine(&["send", "ghost", "x", "--admin", &admin]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("no agent named `ghost`"),
        "{}",
        stderr(&unknown)
    );
    // A priority class by name, as the profile calls it; a name the profile
    // does not have is refused with the ones it has.
    let named = engine(&[
        "send",
        "echo",
        "first",
        "--priority",
        "critical",
        "--admin",
        &admin,
    ]);
    assert!(named.status.success(), "{}", stderr(&named));
    assert_eq!(stdout(&named), "inform: first\n");
    let unnamed = engine(&[
        "send",
        "echo",
        "x",
        "--priority",
        "urgent",
        "--admin",
        &admin,
    ]);
    assert_eq!(unnamed.status.code(), Some(2), "{}", stderr(&unnamed));
    assert!(
        stderr(&unnamed).contains("no priority class `urgent`")
            && stderr(&unnamed).contains("critical, high, normal, low"),
        "{}",
        stderr(&unnamed)
    );
    let out_of_range = engine(&["send", "echo", "x", "--priority", "300", "--admin", &admin]);
    assert_eq!(out_of_range.status.code(), Some(2));
    assert!(
        stderr(&out_of_range).contains("--priority 300: a class number is 0"),
        "{}",
        stderr(&out_of_range)
    );
    let missing = engine(&["agents", "deploy", "/nonexistent.wat", "--admin", &admin]);
    assert_eq!(missing.status.code(), Some(2));

    let undeployed = engine(&["agents", "undeploy", "echo", "--admin", &admin]);
    assert!(undeployed.status.success(), "{}", stderr(&undeployed));
    let gone = engine(&["agents", "list", "--admin", &admin, "--json"]);
    let json: Value = serde_json::from_slice(&gone.stdout).expect("json");
    assert_eq!(json["agents"].as_array().map(Vec::len), Some(0));

    // Nothing listens here: a clear error, and status 2 (the address is
    // the user's to fix) from every command that drives an engine, as from
    // `performance diagnose`; 1 stays for an agent's failure answer.
    drop(running);
    for command in [
        &["agents", "list"][..],
        &["send", "echo", "hi"],
        &["hdr", "dump", "--output", "/tmp/caxton-unreachable.hlog"],
        &["cluster", "status"],
    ] {
        let mut arguments = command.to_vec();
        arguments.extend(["--admin", &admin]);
        let unreachable = engine(&arguments);
        assert_eq!(unreachable.status.code(), Some(2), "{command:?}");
        assert!(
            stderr(&unreachable).contains("cannot reach"),
            "{command:?}: {}",
            stderr(&unreachable)
        );
    }
    // A performative the engine does not know, named before anything is asked.
    let bogus = engine(&[
        "send",
        "echo",
        "hi",
        "--performative",
        "bogus",
        "--admin",
        &admin,
    ]);
    assert_eq!(bogus.status.code(), Some(2));
    assert!(
        stderr(&bogus).contains("use one of request, inform, query-if"),
        "{}",
        stderr(&bogus)
    );
    let unknown_host = engine(&["agents", "list", "--admin", "nonexistent.invalid:80"]);
    assert!(
        stderr(&unknown_host).contains("cannot resolve the host name"),
        "{}",
        stderr(&unknown_host)
    );
}

/// HistogramLogProcessor's overall distribution of `tag` in `log`, in µs:
/// (the `.hgrm` table, the P50/P90/P99 of its interval summary line).
fn java_report(log: &Path, tag: &str, work: &Path) -> (String, [f64; 3]) {
    require("java", "default-jre-headless");
    assert!(
        Path::new(HDR_JAR).exists(),
        "install Debian's libhdrhistogram-java"
    );
    let prefix = work.join(format!("java-{tag}"));
    let output = Command::new("java")
        .args([
            "-cp",
            HDR_JAR,
            "org.HdrHistogram.HistogramLogProcessor",
            "-i",
        ])
        .arg(log)
        .args(["-tag", tag, "-outputValueUnitRatio", "1000", "-o"])
        .arg(&prefix)
        .output()
        .expect("java runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let table = std::fs::read_to_string(prefix.with_extension("hgrm")).expect("hgrm");
    // Skip HdrHistogram's two comment lines (time range, start time).
    let table: String = table
        .lines()
        .skip(2)
        .map(|line| format!("{line}\n"))
        .collect();
    let intervals = std::fs::read_to_string(&prefix).expect("interval output");
    let last = intervals
        .lines()
        .rfind(|line| line.contains("T:"))
        .expect("an interval line");
    // `... T:count ( 50% 90% 99% 99.9% 99.99% Max )`
    let totals: Vec<f64> = last
        .split("T:")
        .nth(1)
        .and_then(|part| part.split_once('('))
        .map(|(_, values)| {
            values
                .trim_end_matches(')')
                .split_whitespace()
                .filter_map(|value| value.parse().ok())
                .collect()
        })
        .expect("totals");
    (table, [totals[0], totals[1], totals[2]])
}

/// The node's periodic HDR log in `logs`, once it exists.
fn periodic_log(logs: &Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(logs)
        .expect("log directory")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("caxton-"))
        })
}

/// How many intervals of routing latency a log's text holds.
fn routing_intervals(text: &str) -> usize {
    text.matches("Tag=routing_latency,").count()
}

#[test]
fn hdr_logs_open_in_hdrhistograms_tools_with_the_engines_percentiles() {
    let work = tempfile::tempdir().expect("temp dir");
    let logs = work.path().join("hdr");
    let running = start_engine(&[
        "--set",
        &format!("observability.hdr_log.directory={}", logs.display()),
        "--set",
        "observability.hdr_log.interval=200ms",
        "--set",
        "runtime.worker_threads=2",
    ]);
    let client = client(&running);
    assert_eq!(
        deploy(&client, "echo", "echo.wat", 2).status,
        StatusCode::CREATED
    );
    for index in 0..200 {
        echoed(&client, "echo", &format!("{index}"));
    }
    // Intervals of the periodic log closed so far; the one open now may hold some of the traffic.
    let intervals_after_traffic = periodic_log(&logs).map_or(0, |path| {
        routing_intervals(&std::fs::read_to_string(path).expect("read"))
    });
    // Both readings after the traffic: the node's stats and the on-demand dump.
    let node = call(&client, Method::GET, "/v1/node", Vec::new()).json();
    let dumped = work.path().join("dump.hlog");
    let dump = engine(&[
        "hdr",
        "dump",
        "-o",
        dumped.to_str().expect("utf-8"),
        "--admin",
        &running.admin_address().to_string(),
    ]);
    assert!(dump.status.success(), "{}", stderr(&dump));
    let written = call(&client, Method::POST, "/v1/hdr/dump", Vec::new());
    assert_eq!(written.status, StatusCode::CREATED, "{}", written.text());
    assert!(Path::new(written.json()["path"].as_str().expect("path")).exists());

    for tag in ["routing_latency", "message_processing_time"] {
        let (java_table, java_percentiles) = java_report(&dumped, tag, work.path());
        let ours = engine(&[
            "hdr",
            "report",
            dumped.to_str().expect("utf-8"),
            "--tag",
            tag,
        ]);
        assert!(ours.status.success(), "{}", stderr(&ours));
        assert_eq!(stdout(&ours), java_table, "tag {tag}");
        let reported = &node["latency"][tag];
        assert_eq!(reported["count"], 200);
        for (java, key) in java_percentiles.iter().zip(["p50_us", "p90_us", "p99_us"]) {
            let engine_value = reported[key].as_f64().expect("percentile");
            assert!(
                (java - engine_value).abs() <= 0.0011,
                "{tag} {key}: java {java}, engine {engine_value}"
            );
        }
    }

    // The periodic log: once two intervals have closed after the traffic,
    // every route is in a closed interval, and Java reads them all.
    let deadline = Instant::now() + Duration::from_secs(20);
    let periodic = loop {
        let found = periodic_log(&logs).expect("a periodic log");
        let text = std::fs::read_to_string(&found).expect("read");
        if routing_intervals(&text) >= (intervals_after_traffic + 2).max(3) {
            break found;
        }
        assert!(Instant::now() < deadline, "too few intervals:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (table, _) = java_report(&periodic, "routing_latency", work.path());
    let total_line = table
        .lines()
        .find(|line| line.starts_with("#[Max"))
        .expect("totals line");
    let logged: u64 = total_line
        .rsplit('=')
        .next()
        .and_then(|count| count.trim().trim_end_matches(']').trim().parse().ok())
        .expect("count");
    // Every route is in exactly one closed interval: none lost, none counted twice.
    assert_eq!(logged, 200, "{total_line}");

    // Plots of both logs.
    for name in ["latency.svg", "latency.png"] {
        let image = work.path().join(name);
        let plotted = engine(&[
            "hdr",
            "plot",
            dumped.to_str().expect("utf-8"),
            &format!("{}:routing_latency", periodic.display()),
            "--tag",
            "routing_latency",
            "-o",
            image.to_str().expect("utf-8"),
        ]);
        assert!(plotted.status.success(), "{}", stderr(&plotted));
        let bytes = std::fs::read(&image).expect("image");
        if name.ends_with(".svg") {
            let svg = String::from_utf8(bytes).expect("utf-8");
            assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
            assert!(svg.contains("dump.hlog routing_latency: P50"));
        } else {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        }
    }
    let (status, rest) = running.terminate();
    assert_eq!(status.code(), Some(0), "{rest}");
}

#[test]
fn hdr_commands_refuse_what_they_cannot_read() {
    let work = tempfile::tempdir().expect("temp dir");
    let corrupt = work.path().join("corrupt.hlog");
    std::fs::write(&corrupt, "Tag=a,0.0,1.0,1.0,HISTFAAAAnotbase64!!\n").expect("write");
    let report = engine(&["hdr", "report", corrupt.to_str().expect("utf-8")]);
    assert_eq!(report.status.code(), Some(2));
    assert!(
        stderr(&report).contains("not a readable HDR log"),
        "{}",
        stderr(&report)
    );
    let missing = engine(&["hdr", "report", "/nonexistent.hlog"]);
    assert_eq!(missing.status.code(), Some(2));
    let wrong_format = engine(&[
        "hdr",
        "plot",
        corrupt.to_str().expect("utf-8"),
        "-o",
        "x.gif",
    ]);
    assert_eq!(wrong_format.status.code(), Some(2));
}

#[test]
fn the_log_level_comes_from_the_profile_unless_rust_log_is_set() {
    let debug = start_engine_with(
        &["--set", "observability.log_level=debug"],
        &[("RUST_LOG", "")],
    );
    assert!(debug.seen.contains(" DEBUG "), "{}", debug.seen);
    drop(debug);
    // RUST_LOG wins: the profile asks for errors only, yet the INFO lines appear.
    let overridden = start_engine_with(
        &["--set", "observability.log_level=error"],
        &[("RUST_LOG", "info")],
    );
    assert!(overridden.seen.contains(" INFO "));
    drop(overridden);
    let bad = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["--set", "observability.log_level=caxton=[[["])
        .env_remove("RUST_LOG")
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("observability.log_level"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn the_endpoint_can_be_disabled_and_bounds_its_connections() {
    let disabled = start_engine(&["--set", "observability.admin.enabled=false"]);
    assert!(
        disabled.seen.contains("admin endpoint disabled"),
        "{}",
        disabled.seen
    );
    assert!(!disabled.seen.contains("listening on"));
    drop(disabled);

    let running = start_engine(&["--set", "observability.admin.max_connections=1"]);
    let address = running.admin_address();
    // One idle connection holds the only slot...
    let holder = TcpStream::connect(address).expect("connect");
    std::thread::sleep(Duration::from_millis(200));
    let mut waiting = TcpStream::connect(address).expect("the backlog accepts");
    waiting
        .write_all(b"GET /v1/node HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buffer = [0u8; 64];
    let early = waiting.read(&mut buffer);
    assert!(
        matches!(&early, Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "answered while the only slot was taken: {early:?}"
    );
    // ...and once it goes, the waiting request is served.
    drop(holder);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = String::new();
    waiting.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Sends waiting for replies are not bounded by the client ports: each
/// port's sender keeps many in flight and matches every answer to its send
/// by token. Callers that hang up have their sends forgotten, so they
/// cannot pile up for their sends' whole timeouts.
#[test]
fn many_sends_wait_at_once_on_few_client_ports() {
    let running = start_engine(&[
        "--set",
        "runtime.worker_threads=1",
        "--set",
        "runtime.client_ports=2",
    ]);
    let client = client(&running);
    assert_eq!(
        deploy(&client, "echo", "echo.wat", 1).status,
        StatusCode::CREATED
    );
    let deployed = deploy(&client, "sink", "sink.wat", 1);
    assert_eq!(deployed.status, StatusCode::CREATED, "{}", deployed.text());
    let admin_sends = |field: &str| {
        let node = client.get("/v1/node").expect("node");
        node.json()["admin_sends"][field]
            .as_u64()
            .unwrap_or_else(|| panic!("admin_sends.{field} in {}", node.text()))
    };
    assert_eq!(admin_sends("senders"), 2, "one sender per client port");
    // Twelve sends wait 60 s for replies that never come: six per port.
    let waiting = waiting_at_sink(&running, 12);
    let all_waiting_by = Instant::now() + Duration::from_secs(10);
    while admin_sends("in_flight") < 12 {
        assert!(
            Instant::now() < all_waiting_by,
            "the twelve sends never all waited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Beside them, eight callers at once each get their own replies.
    let callers: Vec<_> = (0..8)
        .map(|caller| {
            let address = running.admin_address();
            std::thread::spawn(move || {
                let client = AdminClient::new(address, None).expect("client");
                for round in 0..10 {
                    echoed(&client, "echo", &format!("caller {caller} round {round}"));
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().expect("every caller got its own replies");
    }
    assert_eq!(admin_sends("in_flight"), 12, "the sink's sends still wait");
    // Their callers hang up: within a few sweeps nothing waits.
    drop(waiting);
    let forgotten_by = Instant::now() + Duration::from_secs(10);
    while admin_sends("in_flight") > 0 {
        assert!(
            Instant::now() < forgotten_by,
            "the hung-up sends were kept: {} waiting",
            admin_sends("in_flight")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `count` sends to `sink` that wait 60 s for a reply that never comes,
/// each on its own connection, left open (dropping one hangs up).
fn waiting_at_sink(running: &RunningEngine, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let body = r#"{"content": "x", "timeout_ms": 60000}"#;
            let mut stream = TcpStream::connect(running.admin_address()).expect("connects");
            write!(
                stream,
                "POST /v1/agents/sink/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .expect("written");
            stream
        })
        .collect()
}

/// Waiting sends hold their connections, so they may take only so many:
/// the last connections stay free for the reads an operator needs under
/// load, and a send past the bound is answered 503 `busy` at once.
#[test]
fn waiting_sends_leave_connections_for_reads() {
    let running = start_engine(&[
        "--set",
        "runtime.worker_threads=1",
        "--set",
        "observability.admin.max_connections=12",
    ]);
    let client = client(&running);
    let deployed = deploy(&client, "sink", "sink.wat", 1);
    assert_eq!(deployed.status, StatusCode::CREATED, "{}", deployed.text());
    let node = client.get("/v1/node").expect("node");
    // Twelve connections, a quarter kept for reads: nine sends may wait.
    assert_eq!(
        node.json()["admin_sends"]["in_flight_max"],
        9,
        "{}",
        node.text()
    );
    let waiting = waiting_at_sink(&running, 9);
    let all_waiting_by = Instant::now() + Duration::from_secs(10);
    loop {
        let node = client.get("/v1/node").expect("reads are still served");
        if node.json()["admin_sends"]["in_flight"] == 9 {
            break;
        }
        assert!(Instant::now() < all_waiting_by, "{}", node.text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = send(&client, "sink", "one too many");
    assert_error(&refused, StatusCode::SERVICE_UNAVAILABLE, "busy");
    assert!(
        refused.error_message().contains("max_connections"),
        "{}",
        refused.text()
    );
    let scrape = client.get("/metrics").expect("a scrape is still served");
    assert_eq!(scrape.status, StatusCode::OK);
    drop(waiting);
}

/// A clean stop answers the sends still waiting through the endpoint
/// (`caxton:shutting-down` for the one queued behind a busy agent, 503
/// `shutting-down` for one waiting for a reply that will never come)
/// before their connections close; none sees its connection cut.
#[test]
fn a_clean_stop_answers_sends_in_flight_through_the_endpoint() {
    let running = start_engine(&["--set", "runtime.worker_threads=1"]);
    let client = client(&running);
    let deployed = call(
        &client,
        Method::POST,
        "/v1/agents?name=spin&max_execution_time=3s",
        example("loop.wat"),
    );
    assert_eq!(deployed.status, StatusCode::CREATED, "{}", deployed.text());
    let deployed = deploy(&client, "sink", "sink.wat", 1);
    assert_eq!(deployed.status, StatusCode::CREATED, "{}", deployed.text());
    let post = |agent: &'static str, content: &'static str| {
        let client = AdminClient::new(running.admin_address(), None).expect("client");
        std::thread::spawn(move || {
            let body = serde_json::json!({ "content": content, "timeout_ms": 60000 }).to_string();
            client.call(
                Method::POST,
                &format!("/v1/agents/{agent}/messages"),
                "application/json",
                body.into_bytes(),
            )
        })
    };
    // Handled, and never answered: it waits for the whole 60 s.
    let unanswered = post("sink", "never answered");
    let sends: Vec<_> = ["running", "queued"]
        .into_iter()
        .map(|content| {
            let sent = post("spin", content);
            std::thread::sleep(Duration::from_millis(300));
            sent
        })
        .collect();
    let stopped_at = Instant::now();
    running.signal_stop();
    // While the stop waits for the sends in flight, a new caller is told
    // the node is stopping, not reset by a listener that closed.
    std::thread::sleep(Duration::from_millis(200));
    let late = AdminClient::new(running.admin_address(), None)
        .expect("client")
        .get("/v1/node");
    let late = late.unwrap_or_else(|error| panic!("a caller during the stop was cut: {error}"));
    assert_error(&late, StatusCode::SERVICE_UNAVAILABLE, "shutting-down");
    let (status, log) = running.wait_for_exit();
    let unanswered = unanswered
        .join()
        .expect("the sender")
        .unwrap_or_else(|error| panic!("the send to sink was cut: {error}; {log}"));
    assert_error(
        &unanswered,
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting-down",
    );
    assert!(
        stopped_at.elapsed() < Duration::from_secs(30),
        "answered at the stop, not at its 60 s timeout"
    );
    assert!(status.success(), "{log}");
    let answers: Vec<Answer> = sends
        .into_iter()
        .map(|sent| {
            sent.join()
                .expect("the sender")
                .unwrap_or_else(|error| panic!("a send was cut: {error}; {log}"))
        })
        .collect();
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(
            answer.json()["performative"],
            "failure",
            "{}",
            answer.text()
        );
    }
    assert_eq!(
        answers[1].json()["content"],
        "caxton:shutting-down",
        "{}",
        answers[1].text()
    );
}

/// A module that takes long to compile is compiled off the endpoint's
/// controller: reads and scrapes answer meanwhile, and the module deploys
/// (or is refused) when it is done. Judged against the deploy's own
/// length, not a clock figure: a read asked while it compiled must not
/// wait for the compile (on the controller, a read asked a fifth of the
/// way in waited the other four fifths).
#[test]
fn a_long_compile_leaves_the_endpoint_answering() {
    let running = start_engine(&["--set", "runtime.worker_threads=1"]);
    let client = client(&running);
    // 20 functions of 5,000 additions each: over a second to compile on
    // the development machine's release build, several in a test build.
    let echo = String::from_utf8(example("echo.wat")).expect("UTF-8");
    let body: String = (0..20)
        .map(|index| {
            format!(
                "(func $long{index} (param i32) (result i32) (local.get 0){})",
                " (i32.const 1) (i32.add)".repeat(5_000)
            )
        })
        .collect();
    let module = echo
        .trim_end()
        .strip_suffix(')')
        .map(|head| format!("{head}{body})"))
        .expect("echo.wat ends its module with `)`");
    let address = running.admin_address();
    let again = module.clone().into_bytes();
    let sent = Instant::now();
    let deploying = std::thread::spawn(move || {
        let client = AdminClient::new(address, None).expect("client");
        call(
            &client,
            Method::POST,
            "/v1/agents?name=long&instances=1",
            module.into_bytes(),
        )
    });
    // (when asked, how long it took), from the deploy's send.
    let mut reads = Vec::new();
    while !deploying.is_finished() {
        let asked = sent.elapsed();
        let node = client.get("/v1/node").expect("node");
        assert_eq!(node.status, StatusCode::OK);
        reads.push((asked, sent.elapsed() - asked));
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = sent.elapsed();
    let deployed = deploying.join().expect("deploy thread");
    assert_eq!(deployed.status, StatusCode::CREATED, "{}", deployed.text());
    let middle: Vec<_> = reads
        .iter()
        .filter(|(asked, _)| *asked >= total / 5 && *asked <= total * 3 / 5)
        .collect();
    assert!(
        !middle.is_empty(),
        "no read was asked while the module compiled ({total:?}): {reads:?}"
    );
    for (asked, took) in middle {
        assert!(
            *took < total / 5,
            "a read asked {asked:?} into the deploy waited {took:?} of its {total:?}"
        );
    }
    echoed(&client, "long", "compiled apart, served the same");
    // Deployed again under another name, the module comes from the cache
    // the off-thread compile filled.
    let cache =
        |client: &AdminClient| client.get("/v1/node").expect("node").json()["module_cache"].clone();
    let before = cache(&client);
    let twice = call(
        &client,
        Method::POST,
        "/v1/agents?name=long2&instances=1",
        again,
    );
    assert_eq!(twice.status, StatusCode::CREATED, "{}", twice.text());
    let after = cache(&client);
    assert_eq!(after["compilations"], before["compilations"], "{after}");
    assert_eq!(
        after["hits"].as_u64(),
        before["hits"].as_u64().map(|hits| hits + 1),
        "{after}"
    );
}
