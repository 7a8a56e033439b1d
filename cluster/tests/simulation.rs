//! The cluster simulator at CI sizes (16 to 50 nodes), seeded: every live
//! node learns every arrival, crashes are declared down within the bound the
//! preset implies, no node is falsely declared down at 1% loss, a partition
//! heals, and a seed replays its run exactly.

use std::time::Duration;

use caxton_cluster::simulation::{
    simulate, Formation, Network, Report, Scenario, SimulationConfig,
};
use caxton_cluster::SwimSettings;
use caxton_profiles::Profile;

/// The SWIM settings of built-in profiles layered in order.
fn preset(names: &[&str]) -> SwimSettings {
    let mut profile = Profile::default();
    for name in names {
        let text = caxton_profiles::builtin_text(name).expect("a built-in profile");
        let layer: serde_json::Value = serde_saphyr::from_str(text).expect("yaml");
        if let Some(cluster) = layer
            .pointer("/coordination/cluster")
            .and_then(|value| value.as_object())
        {
            let current = serde_json::to_value(&profile.coordination.cluster).expect("serializes");
            let mut merged = current.as_object().cloned().expect("an object");
            for (key, value) in cluster {
                merged.insert(key.clone(), value.clone());
            }
            profile.coordination.cluster =
                serde_json::from_value(serde_json::Value::Object(merged)).expect("valid");
        }
    }
    SwimSettings::from_profile(&profile)
}

fn run(
    nodes: usize,
    swim: &SwimSettings,
    scenario: Scenario,
    duration: Duration,
    seed: u64,
    loss: f64,
) -> Report {
    let config = SimulationConfig {
        nodes,
        swim: Some(swim.clone()),
        network: Network {
            loss,
            ..Network::default()
        },
        duration,
        seed,
        scenario,
        formation: Formation::Formed,
    };
    simulate(&config, |_, _| {})
}

fn replay(seed: u64) -> String {
    format!("replay: engine cluster simulate --seed {seed}")
}

#[test]
fn a_node_falsely_declared_down_twice_by_one_observer_is_flapping() {
    // 30% loss and suspicion timeouts of a single probe interval: nodes
    // that run are declared down, again and again.
    let mut profile = Profile::default();
    profile.coordination.cluster.suspicion_multiplier = 1;
    let swim = SwimSettings::from_profile(&profile);
    let seed = 1;
    let report = run(
        8,
        &swim,
        Scenario::Steady,
        Duration::from_secs(300),
        seed,
        0.3,
    );
    assert!(report.false_downs >= 2, "{}", replay(seed));
    assert!(!report.flapping.is_empty(), "{}", replay(seed));
    assert!(
        report.flapping.iter().all(|&node| node < 8),
        "{:?}",
        report.flapping
    );
    // At 1% loss with the preset's timing: none.
    let calm = run(
        8,
        &preset(&["cluster-small"]),
        Scenario::Steady,
        Duration::from_secs(300),
        seed,
        0.01,
    );
    assert_eq!(
        (calm.false_downs, calm.flapping.len()),
        (0, 0),
        "{}",
        replay(seed)
    );
}

#[test]
fn every_live_node_learns_every_arrival_at_16_nodes() {
    let swim = preset(&["cluster-small"]);
    let seed = 11;
    let report = run(
        16,
        &swim,
        Scenario::Steady,
        Duration::from_secs(60),
        seed,
        0.01,
    );
    assert!(
        report.dissemination.len() >= 10,
        "{} arrivals; {}",
        report.dissemination.len(),
        replay(seed)
    );
    assert!(
        report.arrivals_unfinished <= 1,
        "{} unfinished; {}",
        report.arrivals_unfinished,
        replay(seed)
    );
    assert_eq!(report.false_downs, 0, "{}", replay(seed));
    assert!(report.observations.len() >= report.dissemination.len() * 15);
}

#[test]
fn crashes_are_declared_down_within_the_presets_bound() {
    let swim = preset(&["cluster-small"]);
    let seed = 12;
    let report = run(
        16,
        &swim,
        Scenario::Crash,
        Duration::from_secs(60),
        seed,
        0.01,
    );
    assert!(
        report.detection.len() >= 5,
        "{} crashes detected; {}",
        report.detection.len(),
        replay(seed)
    );
    // The goal at P99: suspicion timeout + two probe intervals, which the
    // ring watch makes a bound (SWIM's shuffled probes alone miss it).
    let goal = swim.detection_goal(16);
    let p99 = Duration::from_nanos(report.detection.value_at_quantile(0.99));
    assert!(
        p99 <= goal,
        "detection P99 {p99:?}, goal {goal:?}; {}",
        replay(seed)
    );
    assert_eq!(report.false_downs, 0, "{}", replay(seed));
}

#[test]
fn no_false_down_in_a_simulated_hour_at_one_percent_loss() {
    let swim = preset(&["cluster-small"]);
    let seed = 13;
    let report = run(
        16,
        &swim,
        Scenario::Steady,
        Duration::from_secs(3600),
        seed,
        0.01,
    );
    assert_eq!(report.false_downs, 0, "{}", replay(seed));
}

#[test]
fn a_partition_heals_and_the_halves_agree_again() {
    let swim = preset(&["cluster-small"]);
    let seed = 14;
    let report = run(
        16,
        &swim,
        Scenario::Partition,
        Duration::from_secs(120),
        seed,
        0.0,
    );
    assert!(
        report.heal.is_some(),
        "the halves never agreed again; {}",
        replay(seed)
    );
}

#[test]
fn churn_at_50_nodes_with_cluster_medium_keeps_everyone_informed() {
    let swim = preset(&["cluster-medium"]);
    let seed = 15;
    let report = run(
        50,
        &swim,
        Scenario::Churn,
        Duration::from_secs(150),
        seed,
        0.01,
    );
    assert!(report.dissemination.len() >= 10, "{}", replay(seed));
    // Each node restarts three probe intervals after its crash, before the
    // suspicion timeout ends: the newer generation replaces the crashed
    // identity everywhere, and no crash is left hanging.
    assert!(
        report.crashes_superseded >= 3,
        "{} crashes restarted; {}",
        report.crashes_superseded,
        replay(seed)
    );
    // At most the crashes of the last three probe intervals wait for their
    // restart when the run ends (one every two and a half intervals).
    assert!(report.crashes_undetected <= 2, "{}", replay(seed));
    assert_eq!(report.false_downs, 0, "{}", replay(seed));
}

#[test]
fn a_cluster_formed_by_joins_settles_then_measures_as_a_formed_one_does() {
    let swim = preset(&["cluster-small"]);
    let seed = 12;
    let config = |formation| SimulationConfig {
        nodes: 16,
        swim: Some(swim.clone()),
        network: Network::default(),
        duration: Duration::from_secs(60),
        seed,
        scenario: Scenario::Crash,
        formation,
    };
    let joined = simulate(&config(Formation::Joins), |_, _| {});
    let formed = simulate(&config(Formation::Formed), |_, _| {});
    for (name, report) in [("joins", &joined), ("formed", &formed)] {
        assert!(report.dissemination.len() >= 10, "{name}: {}", replay(seed));
        assert!(report.detection.len() >= 3, "{name}: {}", replay(seed));
        assert_eq!(report.false_downs, 0, "{name}: {}", replay(seed));
    }
    // Joins wait for the news of every join to spread before measuring; a
    // formed cluster has none to wait for.
    assert!(
        formed.simulated < joined.simulated,
        "formed warm-up {:?}, joins {:?}",
        formed.simulated,
        joined.simulated
    );
    assert_ne!(formed.trace_digest, joined.trace_digest);
}

#[test]
fn a_seed_replays_its_run_exactly() {
    let swim = preset(&["cluster-small"]);
    let first = run(16, &swim, Scenario::Churn, Duration::from_secs(20), 7, 0.05);
    let again = run(16, &swim, Scenario::Churn, Duration::from_secs(20), 7, 0.05);
    let other = run(16, &swim, Scenario::Churn, Duration::from_secs(20), 8, 0.05);
    assert_eq!(first.trace_digest, again.trace_digest);
    assert_eq!(first.dissemination.len(), again.dissemination.len());
    assert_ne!(first.trace_digest, other.trace_digest);
}
