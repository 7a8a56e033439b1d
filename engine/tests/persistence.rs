//! Durability across crashes: durable sends to a running engine, `kill -9`
//! at random moments, restarts, and a check that every message the engine
//! accepted was handled at least once.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use caxton_admin::AdminClient;
use common::{start_engine, RunningEngine};
use hyper::{Method, StatusCode};

fn engine_with_storage(data: &Path) -> RunningEngine {
    start_engine(&[
        "--set",
        "messaging.enable_persistence=true",
        "--set",
        &format!("storage.data_directory={}", data.display()),
        "--set",
        "runtime.worker_threads=2",
        // Finished rows stay for the check at the end.
        "--set",
        "messaging.cleanup_interval=1h",
    ])
}

/// Whether message `id` is finished in `data`'s partitions (read-only, while the engine runs).
fn finished(data: &Path, id: u64) -> Option<bool> {
    let shard = (id >> 48) as usize - 1;
    let connection = rusqlite::Connection::open_with_flags(
        caxton_storage::partition_path(data, shard),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    connection
        .query_row(
            "SELECT done FROM messages WHERE id = ?1",
            [id as i64],
            |row| row.get::<_, bool>(0),
        )
        .ok()
}

const STAGES: [&str; 3] = ["stage-0", "stage-1", "stage-2"];

/// The forwarder route stage-0 hands on: two more hops, then the payload.
fn pipeline_route() -> Vec<u8> {
    let mut route = vec![2u8];
    for next in &STAGES[1..] {
        route.push(next.len() as u8);
        route.extend_from_slice(next.as_bytes());
    }
    route.extend_from_slice(b"payload");
    route
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Whether a finished row for conversation `conversation` at the last stage
/// is in any of `data`'s partitions.
fn reached_last_stage(data: &Path, conversation: u64) -> bool {
    (0..2).any(|shard| {
        rusqlite::Connection::open_with_flags(
            caxton_storage::partition_path(data, shard),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()
        .and_then(|connection| {
            connection
                .query_row(
                    "SELECT COUNT(*) FROM messages WHERE receiver = 'stage-2' AND conversation_id = ?1 AND done = 1",
                    [conversation as i64],
                    |row| row.get::<_, i64>(0),
                )
                .ok()
        })
        .is_some_and(|count| count > 0)
    })
}

/// How many stored messages `data`'s partitions hold unfinished: what the
/// engine's next start must deliver again. Read from copies of the files
/// (with their write-ahead logs), so the next start meets them exactly as the
/// kill left them.
fn unfinished_rows(data: &Path) -> u64 {
    let copies = tempfile::tempdir().expect("tempdir");
    let mut unfinished = 0;
    for shard in 0..2 {
        let partition = caxton_storage::partition_path(data, shard);
        let copy = copies.path().join(format!("shard-{shard}.sqlite"));
        std::fs::copy(&partition, &copy)
            .unwrap_or_else(|error| panic!("{}: {error}", partition.display()));
        let wal = std::path::PathBuf::from(format!("{}-wal", partition.display()));
        if wal.exists() {
            std::fs::copy(&wal, format!("{}-wal", copy.display())).expect("copy the WAL");
        }
        let connection = rusqlite::Connection::open(&copy).expect("the copy opens");
        unfinished += connection
            .query_row("SELECT COUNT(*) FROM messages WHERE done = 0", [], |row| {
                row.get::<_, i64>(0)
            })
            .expect("count") as u64;
    }
    unfinished
}

/// The node's count of messages delivered again since it started.
fn redelivered(client: &AdminClient) -> u64 {
    let node = client.get("/v1/node").expect("node").json();
    node["counters"]["redelivered"]
        .as_u64()
        .unwrap_or_else(|| panic!("no redelivered counter in {node}"))
}

/// A cheap pseudo-random sequence (the seed is printed, so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[test]
fn every_accepted_message_is_handled_at_least_once_across_kill_9() {
    // Each message goes stage-0 -> stage-1 -> stage-2, every hop durable.
    let data = tempfile::tempdir().expect("tempdir");
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_nanos() as u64);
    eprintln!("kill -9 loop seed {seed}");
    let mut random = Lcg(seed);
    let mut accepted: Vec<(u64, u64)> = Vec::new();
    // Per kill: (stored messages it left unfinished, messages the next start delivered again).
    let mut kills: Vec<(u64, u64)> = Vec::new();
    for round in 0..4u64 {
        let running = engine_with_storage(data.path());
        let address = running.admin_address();
        let client = AdminClient::new(address, None).expect("client");
        if round == 0 {
            let forwarder = std::fs::read(format!(
                "{}/../examples/agents/forwarder.wat",
                env!("CARGO_MANIFEST_DIR")
            ))
            .expect("forwarder");
            for stage in STAGES {
                let deployed = client
                    .call(
                        Method::POST,
                        &format!("/v1/agents?name={stage}&instances=1"),
                        "application/wasm",
                        forwarder.clone(),
                    )
                    .expect("deploy");
                assert_eq!(deployed.status, StatusCode::CREATED, "{}", deployed.text());
            }
        } else {
            // The registry brought the agents back.
            let agents = client.get("/v1/agents").expect("list").json();
            assert_eq!(
                agents["agents"].as_array().map(Vec::len),
                Some(STAGES.len()),
                "{agents}"
            );
            kills.last_mut().expect("a kill before").1 = redelivered(&client);
        }
        // Durable, fire-and-forget sends from a thread until the engine dies.
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let client = AdminClient::new(address, None).expect("client");
                let mut ids = Vec::new();
                let mut index = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let conversation = round * 1_000_000 + index + 1;
                    let body = serde_json::json!({
                        "content_base64": base64_of(&pipeline_route()),
                        "conversation_id": conversation,
                        "persistent": true,
                        "wait_for_reply": false,
                    });
                    match client.call(
                        Method::POST,
                        "/v1/agents/stage-0/messages",
                        "application/json",
                        body.to_string().into_bytes(),
                    ) {
                        Ok(answer) if answer.status == StatusCode::ACCEPTED => {
                            ids.push((
                                answer.json()["message_id"].as_u64().expect("an id"),
                                conversation,
                            ));
                        }
                        // Refused (ring full, busy) or cut off by the kill: not accepted.
                        Ok(_) => {}
                        Err(_) => break,
                    }
                    index += 1;
                }
                ids
            })
        };
        std::thread::sleep(Duration::from_millis(100 + random.next(400)));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(running.child.id() as i32, libc::SIGKILL) };
        drop(running);
        stop.store(true, Ordering::Relaxed);
        let ids = sender.join().expect("sender");
        assert!(!ids.is_empty(), "round {round}: nothing was accepted");
        accepted.extend(ids);
        kills.push((unfinished_rows(data.path()), 0));
    }
    // A last start redelivers what the last kill interrupted; wait until all is handled.
    let running = engine_with_storage(data.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    // Every accepted message is finished, and its chain reached the last stage.
    let mut unfinished: Vec<(u64, u64)> = accepted.clone();
    while !unfinished.is_empty() && Instant::now() < deadline {
        unfinished.retain(|&(id, conversation)| {
            finished(data.path(), id) != Some(true)
                || !reached_last_stage(data.path(), conversation)
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    let client = AdminClient::new(running.admin_address(), None).expect("client");
    kills.last_mut().expect("a kill before").1 = redelivered(&client);
    assert!(
        unfinished.is_empty(),
        "{} of {} accepted messages were never handled (seed {seed}): {:?}",
        unfinished.len(),
        accepted.len(),
        &unfinished[..unfinished.len().min(10)]
    );
    eprintln!(
        "{} accepted messages handled through all three stages; per kill (left unfinished, redelivered): {kills:?}",
        accepted.len()
    );
    // Each start delivered again exactly what the kill before it left unfinished...
    for (round, &(left, delivered_again)) in kills.iter().enumerate() {
        assert_eq!(
            delivered_again, left,
            "kill {round} left {left} stored messages unfinished; the next start redelivered {delivered_again} (seed {seed})"
        );
    }
    // ...and at least one kill landed mid-stream, so redelivery was exercised.
    assert!(
        kills.iter().any(|&(left, _)| left > 0),
        "no kill left a stored message unfinished: redelivery was never exercised (seed {seed}): {kills:?}"
    );
    let (status, rest) = running.terminate();
    assert_eq!(status.code(), Some(0), "{rest}");
}

#[test]
fn engine_send_persistent_says_where_the_message_was_stored_or_why_not() {
    let echo = format!("{}/../examples/agents/echo.wat", env!("CARGO_MANIFEST_DIR"));
    // Without persistence: refused with the reason, and the engine keeps serving.
    let plain = start_engine(&[]);
    let admin = plain.admin_address().to_string();
    let deployed = common::engine(&["agents", "deploy", &echo, "--admin", &admin]);
    assert!(deployed.status.success(), "{}", common::stderr(&deployed));
    // A flag the node cannot honour, whatever the retries: refused input.
    let refused = common::engine(&["send", "echo", "x", "--persistent", "--admin", &admin]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        common::stderr(&refused)
    );
    assert!(
        common::stderr(&refused).contains("persistence-off"),
        "{}",
        common::stderr(&refused)
    );
    let served = common::engine(&["send", "echo", "x", "--admin", &admin]);
    assert!(served.status.success(), "{}", common::stderr(&served));
    assert_eq!(common::stdout(&served), "inform: x\n");
    drop(plain);
    // With it: accepted, stored, answered.
    let data = tempfile::tempdir().expect("tempdir");
    let durable = engine_with_storage(data.path());
    let admin = durable.admin_address().to_string();
    assert!(
        common::engine(&["agents", "deploy", &echo, "--admin", &admin])
            .status
            .success()
    );
    let sent = common::engine(&["send", "echo", "kept", "--persistent", "--admin", &admin]);
    assert!(sent.status.success(), "{}", common::stderr(&sent));
    assert_eq!(common::stdout(&sent), "inform: kept\n");
    assert!(
        common::stderr(&sent).contains("stored as message"),
        "{}",
        common::stderr(&sent)
    );
}

/// A node started with fewer data shards than the one that wrote its data
/// directory is refused, naming the partitions it would leave unread, and
/// a node with enough shards starts on the same directory.
/// Start a node on `data` with `shards` data shards that is expected to
/// be refused at boot; its exit status and log. A node that starts anyway
/// is killed and fails the test.
fn refused_at_boot(data: &Path, shards: u32) -> (std::process::ExitStatus, String) {
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_engine"))
        .args([
            "--set",
            "observability.admin.listen=127.0.0.1:0",
            "--set",
            "messaging.enable_persistence=true",
            "--set",
            &format!("storage.data_directory={}", data.display()),
            "--set",
            &format!("runtime.worker_threads={shards}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("engine starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = node.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = node.kill();
            panic!("a node on an unusable data directory started");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut node.stderr.take().expect("piped"), &mut log).expect("read");
    (status, log)
}

#[test]
fn a_data_directory_that_cannot_be_used_is_refused_before_anything_starts() {
    let data = tempfile::tempdir().expect("a directory");
    let (status, _) = engine_with_storage(data.path()).terminate();
    assert!(status.success(), "{status}");
    assert!(caxton_storage::partition_path(data.path(), 1).exists());
    // Fewer shards than wrote it: its partitions would be stranded. A
    // refusal of the profile: exit 2, naming the key.
    let (status, log) = refused_at_boot(data.path(), 1);
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("storage.data_directory")
            && log.contains("shard-1.sqlite")
            && log.contains("at least 2 data shards"),
        "{log}"
    );
    // The directory is untouched and still serves a node of its size;
    // while that node runs, no other may take it.
    let running = engine_with_storage(data.path());
    let (status, log) = refused_at_boot(data.path(), 2);
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("another node is using it"), "{log}");
    let (status, _) = running.terminate();
    assert!(status.success(), "{status}");
    // A file where the directory should be.
    let file = data.path().join("a-file");
    std::fs::write(&file, b"").expect("written");
    let (status, log) = refused_at_boot(&file, 1);
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("storage.data_directory") && log.contains("is not a directory"),
        "{log}"
    );
    // A partition that is no database, or a directory in its place: refused
    // as the profile's, before any shard made its own partition beside it.
    for (broken, says) in [
        (false, "not a usable database"),
        (true, "cannot be opened for writing"),
    ] {
        let fresh = tempfile::tempdir().expect("a directory");
        let partition = caxton_storage::partition_path(fresh.path(), 0);
        if broken {
            std::fs::create_dir(&partition).expect("a directory in its place");
        } else {
            std::fs::write(&partition, b"garbage").expect("written");
        }
        let (status, log) = refused_at_boot(fresh.path(), 2);
        assert_eq!(status.code(), Some(2), "{log}");
        assert!(
            log.contains("storage.data_directory") && log.contains(says) && log.contains("hint:"),
            "{log}"
        );
        assert!(
            !caxton_storage::partition_path(fresh.path(), 1).exists(),
            "shard 1 made its partition before the refusal"
        );
    }
}

/// An agent the profile deploys comes back from storage as it was
/// deployed; when the profile now asks otherwise (more instances, another
/// memory limit), the boot log says what differs and how to apply it.
#[test]
fn a_recovered_agent_that_differs_from_the_profile_is_named_at_boot() {
    let directory = tempfile::tempdir().expect("a directory");
    let echo = format!("{}/../examples/agents/echo.wat", env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(&echo, directory.path().join("echo.wat")).expect("copy");
    let profile = directory.path().join("agents.yaml");
    let data = directory.path().join("data");
    let write_profile = |instances: u16, memory: &str| {
        std::fs::write(
            &profile,
            format!(
                "messaging:\n  enable_persistence: true\nstorage:\n  data_directory: {}\nagents:\n  deploy:\n    - name: echo\n      module: echo.wat\n      instances: {instances}\n  overrides:\n    - agent_id: echo\n      memory: {memory}\n",
                data.display()
            ),
        )
        .expect("write");
    };
    let boot = || {
        let running = start_engine(&[
            "--profile",
            profile.to_str().expect("utf-8"),
            "--set",
            "runtime.worker_threads=1",
        ]);
        let seen = running.seen.clone();
        let (status, rest) = running.terminate();
        assert!(status.success(), "{rest}");
        seen + &rest
    };
    write_profile(1, "2MB");
    let first = boot();
    assert!(first.contains("agent deployed"), "{first}");
    // Unchanged: recovered, and nothing to say about it.
    let same = boot();
    assert!(
        same.contains("agent already recovered from storage")
            && !same.contains("came back from storage as it was deployed"),
        "{same}"
    );
    assert!(
        same.contains("agents recovered from storage (instances): echo (1)"),
        "{same}"
    );
    write_profile(2, "4MB");
    let changed = boot();
    let line = changed
        .lines()
        .find(|line| line.contains("came back from storage as it was deployed"))
        .unwrap_or_else(|| panic!("no warning in {changed}"));
    assert!(
        line.contains("1 instance(s) where the profile asks 2")
            && line.contains("memory 2MB where the profile asks 4MB")
            && line.contains("engine agents undeploy echo")
            && !line.contains("a module other than"),
        "{line}"
    );
    // The module file changed since: named too.
    let mut module = std::fs::read(directory.path().join("echo.wat")).expect("read");
    module.extend_from_slice(b"\n;; edited\n");
    std::fs::write(directory.path().join("echo.wat"), module).expect("write");
    let edited = boot();
    assert!(
        edited.contains("a module other than its agents.deploy file holds now"),
        "{edited}"
    );
}
