//! Storage partitions on whole in-process nodes: durable sends are accepted
//! only once stored and are finished once handled, a restarted node
//! redeploys its agents, a second node cannot share a data directory, and a
//! node whose storage cannot keep a message refuses it and keeps serving.

use std::path::Path;
use std::time::Duration;

use caxton_messaging::Performative;
use caxton_shards::{Node, NodeError, NodeOptions, PersistError, SendOptions};
use caxton_storage::{partition_path, Partition, StorageSettings};
use caxton_tests::{deploy_example, example, plan_on_this_machine, Planned};

const TIMEOUT: Duration = Duration::from_secs(10);

fn persistent(directory: &Path, extra: &[&str]) -> Planned {
    let data = format!("storage.data_directory={}", directory.display());
    let mut overrides = vec![
        "messaging.enable_persistence=true",
        "runtime.worker_threads=2",
        data.as_str(),
    ];
    overrides.extend_from_slice(extra);
    plan_on_this_machine(&["low-latency"], &overrides)
}

/// A node of `planned` with example agent `name` deployed as `name`.
fn start_with_agent(
    planned: &Planned,
    name: &str,
    instances: u16,
) -> (Node, caxton_messaging::AgentId) {
    let mut node = Node::start(&planned.profile, &planned.plan).expect("node starts");
    let agent = node
        .deploy(
            name,
            &example(name),
            instances,
            &planned.profile.agent_limits(name),
        )
        .expect("deployed");
    (node, agent)
}

/// Whether message `id` is stored in `directory`'s partitions, and finished.
fn stored_state(planned: &Planned, directory: &Path, id: u64) -> Option<bool> {
    let shard = (id >> 48) as usize - 1;
    let settings = StorageSettings::from_profile(&planned.profile);
    Partition::open(&partition_path(directory, shard), &settings)
        .expect("partition opens")
        .message_state(id)
        .expect("state")
}

#[test]
fn a_durable_send_is_stored_before_acceptance_and_finished_once_handled() {
    let directory = tempfile::tempdir().expect("tempdir");
    let planned = persistent(directory.path(), &[]);
    let (node, echo) = start_with_agent(&planned, "echo", 2);
    let mut client = node.client().expect("client");
    let mut ids = Vec::new();
    for index in 0..20u8 {
        let (token, id) = client
            .send_persistent(
                echo,
                Performative::Request,
                vec![index],
                SendOptions::default(),
                TIMEOUT,
            )
            .expect("accepted");
        let reply = client.await_reply(token, TIMEOUT).expect("answered");
        assert_eq!(
            (reply.performative, reply.content.as_slice()),
            (Performative::Inform, &[index][..]),
            "message {index}"
        );
        ids.push(id);
    }
    let persisted: u64 = node
        .metrics(false)
        .expect("metrics")
        .iter()
        .map(|shard| shard.persisted)
        .sum();
    assert_eq!(persisted, 20);
    drop(client);
    node.shutdown().expect("clean stop");
    for id in ids {
        assert_eq!(
            stored_state(&planned, directory.path(), id),
            Some(true),
            "message {id}"
        );
    }
}

/// A node joining a cluster keeps stored messages from their handlers
/// until its directory has settled: they are stored and acknowledged at
/// once, and run (and are finished) only once the node is told.
#[test]
fn stored_messages_wait_for_the_cluster_directory_and_then_run() {
    let directory = tempfile::tempdir().expect("tempdir");
    let planned = persistent(directory.path(), &[]);
    let options = NodeOptions {
        await_directory: true,
        ..NodeOptions::default()
    };
    let mut node = Node::start_with(&planned.profile, &planned.plan, options).expect("starts");
    let echo = deploy_example(&mut node, &planned.profile, "echo");
    let mut client = node.client().expect("client");
    let (token, id) = client
        .send_persistent(
            echo,
            Performative::Request,
            b"kept".to_vec(),
            SendOptions::default(),
            TIMEOUT,
        )
        .expect("accepted before the directory settled");
    assert_eq!(
        node.agent_stats("echo").expect("stats").handled,
        0,
        "no handler ran before the directory settled"
    );
    assert_eq!(node.directory_settled().expect("told"), 1, "one waited");
    let reply = client.await_reply(token, TIMEOUT).expect("answered");
    assert_eq!(reply.content, b"kept");
    drop(client);
    node.shutdown().expect("clean stop");
    assert_eq!(stored_state(&planned, directory.path(), id), Some(true));
}

#[test]
fn a_restarted_node_redeploys_its_agents_and_a_second_node_is_refused() {
    let directory = tempfile::tempdir().expect("tempdir");
    let planned = persistent(directory.path(), &[]);
    let mut node = Node::start(&planned.profile, &planned.plan).expect("node starts");
    node.deploy(
        "echo",
        &example("echo"),
        3,
        &planned.profile.agent_limits("echo"),
    )
    .expect("deployed");
    node.deploy(
        "counter",
        &example("counter"),
        1,
        &planned.profile.agent_limits("counter"),
    )
    .expect("deployed");
    node.undeploy("counter").expect("undeployed");
    // A second node on the same directory is refused while the first runs.
    match Node::start(&planned.profile, &planned.plan) {
        Err(NodeError::Storage(reason)) => assert!(reason.contains("another node"), "{reason}"),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(second) => {
            let _ = second.shutdown();
            panic!("two nodes shared a data directory");
        }
    }
    node.shutdown().expect("clean stop");

    let mut restarted = Node::start(&planned.profile, &planned.plan).expect("restarts");
    let (agents, redelivered) = restarted.recover().expect("recovers");
    assert_eq!((agents, redelivered), (1, 0));
    let directory_view = restarted.directory();
    let echo = directory_view.resolve("echo").expect("echo is back");
    assert!(
        directory_view.resolve("counter").is_none(),
        "undeployed stays undeployed"
    );
    let record = directory_view.get(echo).expect("record");
    assert_eq!(
        record
            .instances_per_shard
            .iter()
            .map(|&count| u32::from(count))
            .sum::<u32>(),
        3
    );
    let mut client = restarted.client().expect("client");
    let reply = client
        .request(echo, b"again".to_vec(), TIMEOUT)
        .expect("answered");
    assert_eq!(reply.content, b"again");
    drop(client);
    restarted.shutdown().expect("clean stop");
}

/// The instances of `name` on each shard, as the node routes to them.
fn instances_per_shard(node: &Node, name: &str) -> Vec<u16> {
    let directory = node.directory();
    let id = directory.resolve(name).expect("deployed");
    directory
        .get(id)
        .expect("a record")
        .instances_per_shard
        .clone()
}

#[test]
fn an_agent_scales_up_and_down_keeps_serving_and_a_restart_keeps_its_count() {
    let directory = tempfile::tempdir().expect("tempdir");
    let planned = persistent(directory.path(), &[]);
    let (mut node, echo) = start_with_agent(&planned, "echo", 2);
    assert_eq!(instances_per_shard(&node, "echo"), [1, 1]);
    assert_eq!(node.scale("echo", 5).expect("scaled up"), (2, 5));
    assert_eq!(
        instances_per_shard(&node, "echo"),
        [3, 2],
        "the fewest first"
    );
    assert_eq!(node.scale("echo", 3).expect("scaled down"), (5, 3));
    // 3 → 2 on shard 0, then a tie: the lower shard first.
    assert_eq!(instances_per_shard(&node, "echo"), [1, 2], "the most first");
    // Each shard that runs it keeps one: its queued messages are its own.
    assert!(matches!(
        node.scale("echo", 1),
        Err(NodeError::Refused(reason)) if reason.contains("scales down to 2")
    ));
    assert!(matches!(node.scale("echo", 0), Err(NodeError::Refused(_))));
    assert!(matches!(
        node.scale("ghost", 2),
        Err(NodeError::UnknownAgent(_))
    ));
    // One instance runs on one shard; a second goes where it does not run
    // yet (an agent's instances on one shard take turns).
    node.deploy(
        "counter",
        &example("counter"),
        1,
        &planned.profile.agent_limits("counter"),
    )
    .expect("deployed");
    assert_eq!(node.scale("counter", 2).expect("scaled up"), (1, 2));
    assert_eq!(instances_per_shard(&node, "counter"), [1, 1]);
    let mut client = node.client().expect("client");
    for round in 0..20u8 {
        let reply = client
            .request(echo, vec![round], TIMEOUT)
            .expect("answered");
        assert_eq!(reply.content, [round]);
    }
    drop(client);
    node.shutdown().expect("clean stop");

    let mut restarted = Node::start(&planned.profile, &planned.plan).expect("restarts");
    restarted.recover().expect("recovers");
    assert_eq!(
        instances_per_shard(&restarted, "echo"),
        [1, 2],
        "the scaled count, not the deployed one"
    );
    assert_eq!(instances_per_shard(&restarted, "counter"), [1, 1]);
    restarted.shutdown().expect("clean stop");
}

#[test]
fn without_persistence_a_durable_send_is_refused_with_the_reason() {
    let planned = plan_on_this_machine(&["low-latency"], &[]);
    let (node, echo) = start_with_agent(&planned, "echo", 1);
    let mut client = node.client().expect("client");
    match client.send_persistent(
        echo,
        Performative::Request,
        vec![1],
        SendOptions::default(),
        TIMEOUT,
    ) {
        Err(PersistError::Refused(reason)) => {
            assert!(reason.contains("persistence-off"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The node keeps serving ordinary sends.
    let served = client.request(echo, vec![2], TIMEOUT).expect("answered");
    assert_eq!(
        (served.performative, served.content.as_slice()),
        (Performative::Inform, &[2u8][..])
    );
    drop(client);
    node.shutdown().expect("clean stop");
}

fn mount_tmpfs(target: &Path, options: &str) {
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(target)
        .status()
        .expect("mount runs");
    assert!(
        status.success(),
        "mounting a tmpfs needs root (the test machines run as root)"
    );
}

fn unmount(target: &Path) {
    let _ = std::process::Command::new("umount").arg(target).status();
}

#[test]
fn a_full_disk_refuses_durable_sends_and_the_node_keeps_serving() {
    let mount = tempfile::tempdir().expect("tempdir");
    mount_tmpfs(mount.path(), "size=1m");
    let result = std::panic::catch_unwind(|| {
        let planned = persistent(mount.path(), &["storage.page_cache_size=64KB"]);
        let (node, echo) = start_with_agent(&planned, "echo", 1);
        let mut client = node.client().expect("client");
        let payload = vec![7u8; 16 * 1024];
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..200 {
            match client.send_persistent(
                echo,
                Performative::Request,
                payload.clone(),
                SendOptions::default(),
                TIMEOUT,
            ) {
                Ok((token, _)) => {
                    accepted += 1;
                    let reply = client
                        .await_reply(token, TIMEOUT)
                        .expect("accepted messages are answered");
                    assert_eq!(
                        reply.performative,
                        Performative::Inform,
                        "an accepted message is handled: {}",
                        String::from_utf8_lossy(&reply.content[..reply.content.len().min(80)])
                    );
                    assert!(reply.content == payload, "echoed whole");
                }
                Err(PersistError::Refused(reason)) => {
                    assert!(reason.contains("storage"), "{reason}");
                    refused += 1;
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert!(
            accepted > 0 && refused > 0,
            "accepted {accepted}, refused {refused}"
        );
        let failures: u64 = node
            .metrics(false)
            .expect("metrics")
            .iter()
            .map(|shard| shard.storage_failures)
            .sum();
        assert_eq!(failures, refused);
        // Ordinary sends still work on a node whose disk is full.
        assert_eq!(
            client
                .request(echo, b"ok".to_vec(), TIMEOUT)
                .expect("served")
                .content,
            b"ok"
        );
        drop(client);
        node.shutdown().expect("clean stop");
    });
    unmount(mount.path());
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn a_read_only_data_directory_stops_the_node_from_starting_with_a_clear_error() {
    let mount = tempfile::tempdir().expect("tempdir");
    mount_tmpfs(mount.path(), "ro,size=1m");
    let planned = persistent(mount.path(), &[]);
    let result = Node::start(&planned.profile, &planned.plan);
    unmount(mount.path());
    match result {
        Err(error) => assert!(
            error.to_string().contains("Read-only file system")
                || error.to_string().contains("readonly"),
            "{error}"
        ),
        Ok(node) => {
            let _ = node.shutdown();
            panic!("a node started on a read-only data directory");
        }
    }
}

#[test]
fn a_corrupt_partition_stops_the_node_from_starting_and_names_the_file() {
    let directory = tempfile::tempdir().expect("tempdir");
    std::fs::write(partition_path(directory.path(), 0), vec![0x5a; 16 * 1024]).expect("write");
    let planned = persistent(directory.path(), &[]);
    match Node::start(&planned.profile, &planned.plan) {
        Err(error) => {
            let text = error.to_string();
            assert!(
                text.contains("shard-0.sqlite") && text.contains("not a usable database"),
                "{text}"
            );
        }
        Ok(node) => {
            let _ = node.shutdown();
            panic!("a node started on a corrupt partition");
        }
    }
}

/// How many messages `directory`'s partitions hold, and how many of them are finished.
fn stored_and_finished(directory: &Path, shards: usize) -> (u64, u64) {
    let mut totals = (0, 0);
    for shard in 0..shards {
        let connection = rusqlite::Connection::open_with_flags(
            partition_path(directory, shard),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("opens");
        let (stored, finished): (i64, i64) = connection
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(done), 0) FROM messages",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("counts");
        totals.0 += stored as u64;
        totals.1 += finished as u64;
    }
    totals
}

/// Send `count` durable messages with all of them outstanding at once, wait
/// for every answer and until every message is stored and finished in the
/// partition; returns the node's (transactions, writes) once they settle.
fn burst(planned: &Planned, directory: &Path, count: usize) -> (u64, u64) {
    let (node, echo) = start_with_agent(planned, "echo", 1);
    let mut client = node.client().expect("client");
    let mut tokens = Vec::new();
    for index in 0..count {
        let (token, envelope) = client.request_envelope(
            echo,
            Performative::Request,
            vec![index as u8],
            SendOptions::default(),
            caxton_messaging::Durability::Requested,
        );
        client.send_envelope(envelope).expect("sent");
        tokens.push((token, index as u8));
    }
    for (token, index) in tokens {
        let reply = client.await_reply(token, TIMEOUT).expect("answered");
        assert_eq!(
            (reply.performative, reply.content.as_slice()),
            (Performative::Inform, &[index][..])
        );
    }
    drop(client);
    // Finished-marks are written after the replies: wait until the partition
    // holds every message finished.
    let shards = planned.plan.data_shards.len();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut rows = stored_and_finished(directory, shards);
    while rows != (count as u64, count as u64) {
        assert!(
            std::time::Instant::now() < deadline,
            "(stored, finished) {rows:?} of {count}"
        );
        std::thread::sleep(Duration::from_millis(20));
        rows = stored_and_finished(directory, shards);
    }
    // The writer counts a transaction just after committing it: read until
    // the counts hold still.
    let read = || {
        let metrics = node.metrics(false).expect("metrics");
        (
            metrics.iter().map(|shard| shard.storage_transactions).sum(),
            metrics.iter().map(|shard| shard.storage_writes).sum(),
        )
    };
    let mut counts: (u64, u64) = read();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let again = read();
        if again == counts {
            break;
        }
        counts = again;
    }
    node.shutdown().expect("clean stop");
    counts
}

#[test]
fn batch_size_and_flush_interval_decide_how_writes_share_transactions() {
    let count = 100;
    // All 100 are outstanding at once and, with a batch of one, each waits
    // for the commits before it: on a slow disk the last ones wait longer
    // than `low-latency`'s critical class allows (10ms). This test is about
    // transactions, not deadlines, so no deadline may fail it.
    let no_deadlines = [
        "messaging.priority_routing=false",
        "messaging.delivery_timeout=60s",
    ];
    let one_by_one = tempfile::tempdir().expect("tempdir");
    let planned = persistent(
        one_by_one.path(),
        &[
            &["storage.batch_size=1", "runtime.worker_threads=1"][..],
            &no_deadlines[..],
        ]
        .concat(),
    );
    let (transactions, writes) = burst(&planned, one_by_one.path(), count);
    // Every message was stored and finished (checked in `burst`); with a
    // batch of one, each write had a transaction of its own.
    assert!(
        writes >= count as u64,
        "{writes} writes for {count} messages"
    );
    assert_eq!(transactions, writes);

    let batched = tempfile::tempdir().expect("tempdir");
    let planned = persistent(
        batched.path(),
        &[
            &[
                "storage.batch_size=1000",
                "storage.flush_interval=50ms",
                "runtime.worker_threads=1",
            ][..],
            &no_deadlines[..],
        ]
        .concat(),
    );
    let (transactions, writes) = burst(&planned, batched.path(), count);
    assert!(
        writes >= count as u64,
        "{writes} writes for {count} messages"
    );
    assert!(
        transactions * 5 <= writes,
        "{transactions} transactions for {writes} writes"
    );
}

/// Ask the tally agent to count `key` once more; its new count.
fn count_once(
    client: &mut caxton_shards::Client,
    agent: caxton_messaging::AgentId,
    key: &[u8],
) -> u32 {
    let reply = client
        .request(agent, key.to_vec(), TIMEOUT)
        .expect("answered");
    u32::from_le_bytes(reply.content[..4].try_into().expect("4 bytes"))
}

#[test]
fn agent_state_lives_in_the_partition_and_survives_a_restart() {
    let directory = tempfile::tempdir().expect("tempdir");
    let planned = persistent(directory.path(), &["runtime.worker_threads=1"]);
    let (node, tally) = start_with_agent(&planned, "tally", 2);
    let mut client = node.client().expect("client");
    // Both instances on the shard share the agent's state.
    for expected in 1..=3 {
        assert_eq!(count_once(&mut client, tally, b"apples"), expected);
    }
    assert_eq!(count_once(&mut client, tally, b"pears"), 1);
    drop(client);
    node.shutdown().expect("clean stop");

    let mut restarted = Node::start(&planned.profile, &planned.plan).expect("restarts");
    restarted.recover().expect("recovers");
    let tally = restarted
        .directory()
        .resolve("tally")
        .expect("tally is back");
    let mut client = restarted.client().expect("client");
    assert_eq!(count_once(&mut client, tally, b"apples"), 4);
    assert_eq!(count_once(&mut client, tally, b"pears"), 2);
    drop(client);
    // Undeploying drops the state with the agent.
    restarted.undeploy("tally").expect("undeployed");
    restarted.shutdown().expect("clean stop");
    let settings = StorageSettings::from_profile(&planned.profile);
    let partition =
        Partition::open(&partition_path(directory.path(), 0), &settings).expect("opens");
    assert!(partition.states().expect("states").is_empty());
}

#[test]
fn without_persistence_agent_state_is_kept_in_memory() {
    let planned = plan_on_this_machine(&["low-latency"], &["runtime.worker_threads=1"]);
    let (node, tally) = start_with_agent(&planned, "tally", 1);
    let mut client = node.client().expect("client");
    assert_eq!(count_once(&mut client, tally, b"k"), 1);
    assert_eq!(count_once(&mut client, tally, b"k"), 2);
    // A key over 256 bytes is refused by the host; the agent fails the message.
    let long = client
        .request(tally, vec![b'x'; 300], TIMEOUT)
        .expect("answered");
    assert_eq!(long.performative, Performative::Failure);
    drop(client);
    node.shutdown().expect("clean stop");
}

/// Every stored row of `directory`'s partitions: (receiver, conversation, done).
fn stored_rows(directory: &Path, shards: usize) -> Vec<(String, u64, bool)> {
    let mut rows = Vec::new();
    for shard in 0..shards {
        let connection =
            rusqlite::Connection::open(partition_path(directory, shard)).expect("opens");
        let mut statement = connection
            .prepare("SELECT receiver, conversation_id, done FROM messages")
            .expect("query");
        let found = statement
            .query_map([], |row| {
                Ok((row.get(0)?, row.get::<_, i64>(1)? as u64, row.get(2)?))
            })
            .expect("rows");
        rows.extend(found.map(|row| row.expect("row")));
    }
    rows
}

#[test]
fn every_hop_of_a_durable_chain_is_stored_and_finished() {
    let directory = tempfile::tempdir().expect("tempdir");
    let planned = persistent(directory.path(), &[]);
    let mut node = Node::start(&planned.profile, &planned.plan).expect("node starts");
    for stage in ["stage-0", "stage-1", "stage-2"] {
        node.deploy(
            stage,
            &example("forwarder"),
            1,
            &planned.profile.agent_limits(stage),
        )
        .expect("deployed");
    }
    let entry = node.directory().resolve("stage-0").expect("entry");
    // stage-0 forwards to stage-1, which forwards to stage-2, which answers.
    let mut route = vec![2u8];
    for next in ["stage-1", "stage-2"] {
        route.push(next.len() as u8);
        route.extend_from_slice(next.as_bytes());
    }
    let mut client = node.client().expect("client");
    for conversation in 1..=10u64 {
        let mut content = route.clone();
        content.push(conversation as u8);
        let options = SendOptions {
            conversation_id: conversation,
            ..SendOptions::default()
        };
        let (token, _) = client
            .send_persistent(entry, Performative::Request, content, options, TIMEOUT)
            .expect("accepted");
        let reply = client
            .await_reply(token, TIMEOUT)
            .expect("answered by the last stage");
        assert_eq!(
            (reply.performative, reply.content.as_slice()),
            (Performative::Inform, &[conversation as u8][..])
        );
    }
    drop(client);
    node.shutdown().expect("clean stop");
    let rows = stored_rows(directory.path(), planned.plan.data_shards.len());
    // Each message was stored at every hop, and every hop is finished.
    assert_eq!(rows.len(), 30, "{rows:?}");
    for conversation in 1..=10u64 {
        for stage in ["stage-0", "stage-1", "stage-2"] {
            assert!(
                rows.iter()
                    .any(|(receiver, id, done)| receiver == stage && *id == conversation && *done),
                "conversation {conversation} at {stage}: {rows:?}"
            );
        }
    }
}
