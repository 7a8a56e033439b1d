//! The one-minute soak of CI: this build's engine, with persistence, under
//! an open-loop load and faults (trapping, looping, memory-grabbing agents,
//! a redeploy every 10 s, the data directory full for 5 s every 15 s,
//! SIGKILL and restart every 20 s). Nothing acknowledged may be lost, the
//! counts must add up and every shard must serve at the end. The full data
//! directory is a size-limited tmpfs, so this test needs root (as CI has).
//! `scripts/soak.sh 30m` is the long one.

use std::time::Duration;

use caxton_bench::soak::{run, SoakConfig};

#[test]
fn a_minute_of_load_and_faults_loses_nothing_acknowledged() {
    let output = tempfile::tempdir().expect("tempdir");
    let config = SoakConfig {
        engine: env!("CARGO_BIN_EXE_engine").into(),
        duration: Duration::from_secs(60),
        output: output.path().to_owned(),
        kill_every: Duration::from_secs(20),
        redeploy_every: Duration::from_secs(10),
        rate: 400,
        fill: Some((Duration::from_secs(15), Duration::from_secs(5))),
    };
    let report = run(&config, &|_| {}).expect("the soak runs");
    let summary = report.summary();
    assert!(report.durable_acknowledged > 0, "{summary}");
    assert!(
        report.restarts >= 1 && report.redeploys >= 2,
        "faults were injected: {summary}"
    );
    assert!(
        report.fills >= 1 && report.refused_while_full > 0,
        "a full data directory refused durable sends: {summary}"
    );
    assert!(
        report.acknowledged_after_full > 0,
        "durable sends are stored again once there is room: {summary}"
    );
    assert!(report.durable_lost.is_empty(), "{summary}");
    assert!(report.counts_add_up(), "{summary}");
    assert!(report.idle_shards.is_empty(), "{summary}");
    assert!(report.answered > 0, "{summary}");
    // Memory flatness needs a long run; the minute only prints it.
    println!("{summary}");
}
