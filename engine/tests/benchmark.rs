//! `engine benchmark custom|stress` as users run them: bad input refused
//! before any load starts, results written where asked and readable by
//! `engine hdr report`, both designs in one summary, and a running engine
//! loaded through `--target`.

mod common;

use common::{engine, start_engine, stderr, stdout};
use serde_json::Value;

#[test]
fn bad_load_input_is_refused_before_anything_starts() {
    let cases: [(&[&str], &str); 9] = [
        (&["--agents", "0"], "--agents 0"),
        (&["--agents", "5000"], "runtime.max_agents"),
        (&["--messages-per-second", "0"], "--messages-per-second"),
        (&["--duration", "0s"], "--duration"),
        (&["--duration", "soon"], "--duration `soon`"),
        (
            &["--pattern", "scatter"],
            "request-reply, one-way, fan-out, pipeline",
        ),
        (&["--compare", "nginx"], "baseline"),
        (
            &["--pattern", "fan-out", "--agents", "3"],
            "fan-out needs at least 5",
        ),
        (&["--target", "127.0.0.1:1"], "cannot reach"),
    ];
    for (arguments, expected) in cases {
        let mut command = vec!["benchmark", "custom"];
        command.extend_from_slice(arguments);
        if !arguments.contains(&"--duration") {
            command.extend(["--duration", "1s"]);
        }
        let output = engine(&command);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{arguments:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{arguments:?}: {}",
            stderr(&output)
        );
    }
    let stress = engine(&[
        "benchmark",
        "stress",
        "--growth",
        "1",
        "--find-breaking-point",
    ]);
    assert_eq!(stress.status.code(), Some(2));
    assert!(stderr(&stress).contains("--growth"), "{}", stderr(&stress));
    let stress = engine(&["benchmark", "stress", "--max-agents", "0"]);
    assert_eq!(stress.status.code(), Some(2));
}

fn counts_add_up(design: &Value) {
    let count = |key: &str| design["counts"][key].as_u64().expect("a count");
    assert_eq!(
        count("scheduled"),
        count("sent") + count("refused"),
        "{design}"
    );
    assert_eq!(
        count("sent"),
        count("answered") + count("failed") + count("timed_out"),
        "{design}"
    );
}

#[test]
fn custom_writes_both_designs_and_histograms_engine_hdr_reads() {
    let output = tempfile::tempdir().expect("temp dir");
    let directory = output.path().to_str().expect("utf-8");
    let run = engine(&[
        "benchmark",
        "custom",
        "--agents",
        "4",
        "--messages-per-second",
        "2000",
        "--duration",
        "500ms",
        "--pattern",
        "request-reply",
        "--compare",
        "baseline",
        "--output",
        directory,
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let text = stdout(&run);
    assert!(text.starts_with("machine: "), "{text}");
    assert!(text.contains("caxton/baseline: throughput"), "{text}");
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(output.path().join("summary.json")).expect("summary"),
    )
    .expect("json");
    assert_eq!(summary["benchmark"], "custom");
    assert_eq!(summary["pattern"], "request-reply");
    let designs = summary["designs"].as_array().expect("designs");
    assert_eq!(designs.len(), 2);
    assert_eq!(designs[0]["design"], "caxton");
    assert_eq!(designs[1]["design"], "baseline");
    for design in designs {
        counts_add_up(design);
        assert_eq!(design["counts"]["scheduled"], 1000);
    }
    assert!(summary["comparison"]["p99_ratio"].as_f64().is_some());
    assert_eq!(summary["scenarios"][0]["name"], "caxton/request-reply");
    let log = output.path().join("caxton-request-reply.hlog");
    let report = engine(&["hdr", "report", log.to_str().expect("utf-8")]);
    assert!(report.status.success(), "{}", stderr(&report));
    assert!(
        stdout(&report).contains("Total count    =         1000"),
        "{}",
        stdout(&report)
    );
}

#[test]
fn stress_and_target_load_a_running_engine_through_its_admin_api() {
    let running = start_engine(&[]);
    let admin = running.admin_address().to_string();
    let output = tempfile::tempdir().expect("temp dir");
    let run = engine(&[
        "benchmark",
        "stress",
        "--target",
        &admin,
        "--max-agents",
        "2",
        "--start-rate",
        "100",
        "--growth",
        "2",
        "--steps",
        "2",
        "--ramp-up-time",
        "1s",
        "--p99-target",
        "1s",
        "--output",
        output.path().to_str().expect("utf-8"),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stdout(&run).contains("engine at 127.0.0.1:"),
        "{}",
        stdout(&run)
    );
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(output.path().join("summary.json")).expect("summary"),
    )
    .expect("json");
    let steps = summary["ramps"][0][1].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    for step in steps {
        counts_add_up(&step["result"]);
        assert!(
            step["result"]["counts"]["answered"]
                .as_u64()
                .expect("answered")
                > 0
        );
    }
    assert_eq!(summary["breaking_points"][0]["sustained_per_second"], 200.0);
    // The agents it deployed are on the engine.
    let listed = engine(&["agents", "list", "--admin", &admin, "--json"]);
    let agents: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(agents["agents"].as_array().map(Vec::len), Some(2));
}
