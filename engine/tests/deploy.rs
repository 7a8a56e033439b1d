//! The deployment artifacts under `deploy/`, checked with the tools that
//! consume them: the systemd unit with `systemd-analyze verify` (Debian
//! `systemd`), the Prometheus rules with `promtool check rules` and `promtool
//! test rules` (Debian `prometheus`), the Grafana dashboard against the
//! metrics a running node exports, and the container definition against the
//! repository and the engine's defaults. `scripts/bootstrap.sh --test`
//! installs the tools; these tests fail naming the package without them.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use caxton_admin::AdminClient;
use common::start_engine;
use hyper::Method;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn tool(program: &str, package: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "{program} is missing: install Debian's `{package}` (scripts/bootstrap.sh --test does)"
    );
    Command::new(program)
}

fn run(mut command: Command) -> String {
    let output = command.output().expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn the_systemd_unit_verifies_and_its_command_line_loads() {
    let unit = read("systemd/caxton.service");
    let exec = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/engine"));
    let arguments: Vec<&str> = words.collect();
    // The unit as installed, but pointing at this build's binary (verify
    // checks that the command exists and is executable).
    let dir = tempfile::tempdir().expect("tempdir");
    let installed = dir.path().join("caxton.service");
    std::fs::write(
        &installed,
        unit.replace("/usr/local/bin/engine", env!("CARGO_BIN_EXE_engine")),
    )
    .expect("write");
    let mut verify = tool("systemd-analyze", "systemd");
    verify.arg("verify").arg(&installed);
    let said = run(verify);
    assert!(
        !said.contains("caxton.service:"),
        "the unit has warnings:\n{said}"
    );

    // Its arguments are a profile the engine accepts, with the overlay file empty.
    let overlay = dir.path().join("node.yaml");
    std::fs::write(&overlay, "").expect("write");
    let overlay = overlay.display().to_string();
    let arguments: Vec<&str> = arguments
        .iter()
        .map(|argument| {
            if *argument == "/etc/caxton/node.yaml" {
                overlay.as_str()
            } else {
                argument
            }
        })
        .collect();
    let mut show = Command::new(env!("CARGO_BIN_EXE_engine"));
    show.args(&arguments).args(["profiles", "show"]);
    let shown = run(show);
    assert!(
        shown.contains("spin_before_park"),
        "the low-latency profile: {shown}"
    );
}

#[test]
fn the_prometheus_rules_load_and_each_alert_fires_in_its_unit_test() {
    let mut check = tool("promtool", "prometheus");
    check
        .args(["check", "rules"])
        .arg(deploy("prometheus/caxton-rules.yml"));
    run(check);
    let mut test = tool("promtool", "prometheus");
    test.current_dir(deploy("prometheus"))
        .args(["test", "rules", "caxton-rules.test.yml"]);
    assert!(run(test).contains("SUCCESS"));
    // Every alert has a test case that expects it to fire.
    let rules = read("prometheus/caxton-rules.yml");
    let tests = read("prometheus/caxton-rules.test.yml");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 5, "{alerts:?}");
    for alert in alerts {
        let fires = tests.split("- eval_time:").any(|case| {
            case.contains(&format!("alertname: {alert}\n")) && case.contains("exp_labels")
        });
        assert!(fires, "no test expects {alert} to fire");
    }
}

/// The `caxton_*` and `caxton:*` names in a PromQL expression.
fn names_in(expression: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    let mut in_string = false;
    for character in expression.chars().chain([' ']) {
        if character == '"' {
            in_string = !in_string;
        }
        if !in_string && (character.is_ascii_alphanumeric() || character == '_' || character == ':')
        {
            current.push(character);
            continue;
        }
        if current.starts_with("caxton_") || current.starts_with("caxton:") {
            names.push(current.clone());
        }
        current.clear();
    }
    names
}

/// Every sample name a node in a cluster exports, from its `# TYPE` lines.
fn exported_names() -> BTreeSet<String> {
    let running = start_engine(&[
        "--set",
        "runtime.worker_threads=1",
        "--set",
        "coordination.cluster.listen_address=127.0.0.1:0",
    ]);
    let client = AdminClient::new(running.admin_address(), None).expect("client");
    let answer = client
        .call(Method::GET, "/metrics", "text/plain", Vec::new())
        .expect("scrape");
    let mut names = BTreeSet::new();
    for line in answer.text().lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        names.insert(name.to_owned());
        let suffixes: &[&str] = match kind {
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["_sum", "_count"],
            _ => &[],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

fn expressions(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        // A datasource variable's `query` names the plugin, not metrics.
        serde_json::Value::Object(map)
            if map.get("type").and_then(|kind| kind.as_str()) == Some("datasource") => {}
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr" | "definition", serde_json::Value::String(text)) => {
                        out.push(text.clone())
                    }
                    ("query", serde_json::Value::String(text)) => out.push(text.clone()),
                    _ => expressions(inner, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| expressions(item, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_and_rules_name_only_metrics_a_node_exports() {
    let exported = exported_names();
    assert!(
        exported.contains("caxton_cluster_members"),
        "a cluster node: {exported:?}"
    );
    let rules = read("prometheus/caxton-rules.yml");
    let recorded: BTreeSet<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- record: "))
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("grafana/caxton-dashboard.json")).expect("dashboard JSON");
    let mut found = Vec::new();
    expressions(&dashboard, &mut found);
    let rule_expressions: Vec<String> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr: "))
        .map(str::to_owned)
        .collect();
    assert!(found.len() >= 20, "{found:?}");
    for expression in found.iter().chain(&rule_expressions) {
        let names = names_in(expression);
        assert!(!names.is_empty(), "no metric in `{expression}`");
        for name in names {
            if name.starts_with("caxton:") {
                assert!(
                    recorded.contains(name.as_str()),
                    "`{name}` is no recording rule: {expression}"
                );
            } else {
                assert!(
                    exported.contains(&name),
                    "`{name}` is not exported: {expression}"
                );
            }
        }
    }
    assert_eq!(
        names_in(r#"rate(caxton_a_total{x="caxton_not_a_name"}[1m]) / caxton:b"#),
        ["caxton_a_total", "caxton:b"]
    );
}

#[test]
fn the_container_copies_what_exists_and_exposes_the_engines_ports() {
    let dockerfile = read("container/Dockerfile");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for line in dockerfile
        .lines()
        .filter(|line| line.starts_with("COPY ") && !line.contains("--from="))
    {
        let source = line.split_whitespace().nth(1).expect("a source");
        assert!(root.join(source).exists(), "{line}: no {source}");
    }
    let admin_port = caxton_profiles::DEFAULT_ADMIN_PORT;
    assert!(
        dockerfile.contains(&format!("EXPOSE {admin_port}/tcp")),
        "the admin port"
    );
    assert!(dockerfile.contains(&format!("observability.admin.listen=0.0.0.0:{admin_port}")));
    assert!(dockerfile.contains("--bin engine"));
    // The build stage installs what bootstrap installs for building.
    let bootstrap = std::fs::read_to_string(root.join("scripts/bootstrap.sh")).expect("bootstrap");
    for package in ["pkg-config", "libhwloc-dev", "libudev-dev"] {
        assert!(
            bootstrap.contains(package) && dockerfile.contains(package),
            "{package}"
        );
    }
    // The image's command is one the engine accepts.
    let command = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("CMD "))
        .expect("a CMD");
    let arguments: Vec<String> = serde_json::from_str(command).expect("CMD in exec form");
    let output = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(&arguments)
        .args(["profiles", "show"])
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
