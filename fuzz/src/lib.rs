//! Fuzz targets: each takes arbitrary bytes through one of the engine's
//! decoders of outside input and panics when an invariant breaks, not only
//! when the decoder does. `scripts/fuzz.sh TARGET DURATION` runs one under
//! AFL++ (cargo-afl, stable toolchain); `tests/corpus.rs` runs every seed
//! corpus (`fuzz/corpus/TARGET/`) as a regression test on every CI run.
//!
//! | target | decoder | invariant |
//! |---|---|---|
//! | `envelope` | the message envelope (MessagePack) | a decoded envelope encodes and decodes to itself |
//! | `cluster_frame` | a frame off the cluster port, into a membership core: as it came, and framed with a valid checksum as a SWIM, a directory and a ring-watch frame | no panic; a refused frame changes no member; a checked frame re-frames to the same bytes |
//! | `directory_message` | the cluster directory's messages | decode ∘ encode is the identity on what decodes |
//! | `remote_batch` | a frame of remote messages; the bytes as a packet through the hand-written reader | the same, and a damaged frame never decodes; what the hand reader reads, serde reads the same; a batch written by hand is serde's bytes |
//! | `profile` | a YAML profile through load and validation | a profile that loads shows as YAML that loads to the same profile |
//! | `module` | an uploaded `.wasm`/`.wat` through compilation and the ABI checks | an admitted module instantiates on a shard |
//! | `hdr_log` | an HDR interval log given to `engine hdr` | no panic through merging and the report; what reads, written again, reads the same |
//! | `admin_request` | an admin API request: method, path, query and body, through routing and every check that needs no node | a refusal is a 4xx; what is accepted holds its checks (a valid name, instances in range, a module, a timeout in range) |
//! | `storage_row` | a message row (an envelope, LZ4 or not) or an agent row's limits read back at recovery | what decodes, stored again, reads back the same; a damaged length prefix is refused before allocating |

use std::net::SocketAddr;
use std::time::Duration;

use caxton_cluster::directory::DirectoryMessage;
use caxton_cluster::remote::{read_batch, RemoteBatch};
use caxton_cluster::wire::{self, FrameKind};
use caxton_cluster::{Membership, Now, SwimSettings};
use caxton_messaging::Envelope;

/// A fuzz target: panics when its invariant breaks.
pub type Target = fn(&[u8]);

/// Every target, by name.
pub const TARGETS: [(&str, Target); 9] = [
    ("envelope", envelope),
    ("cluster_frame", cluster_frame),
    ("directory_message", directory_message),
    ("remote_batch", remote_batch),
    ("profile", profile),
    ("module", module),
    ("hdr_log", hdr_log),
    ("storage_row", storage_row),
    ("admin_request", admin_request),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS
        .iter()
        .find(|(target, _)| *target == name)
        .map(|(_, run)| *run)
}

/// The SWIM settings the cluster targets run: the default profile's.
pub fn swim_settings() -> SwimSettings {
    SwimSettings::from_profile(&caxton_profiles::Profile::default())
}

/// The envelope codec: what decodes, round-trips.
pub fn envelope(data: &[u8]) {
    if let Ok(envelope) = Envelope::decode(data) {
        let again = Envelope::decode(&envelope.encode()).expect("an encoded envelope decodes");
        assert_eq!(again, envelope, "decode ∘ encode changed the envelope");
    }
}

/// A frame off the cluster port, handed to a fresh membership core.
pub fn cluster_frame(data: &[u8]) {
    let swim = swim_settings();
    let now = Now {
        elapsed: Duration::from_secs(1),
        unix_us: 1_800_000_000_000_000,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], 7946));
    // The bytes as they came, then framed (a valid checksum) as each kind,
    // so the fuzzer also reaches foca's decoder, the directory's and the
    // ring watch's.
    let header = wire::FrameHeader { nonce: 5, seq: 1 };
    let inputs = [
        data.to_vec(),
        wire::frame(header, data),
        wire::frame_of(FrameKind::Directory, header, data),
        wire::frame_of(FrameKind::Watch, header, data),
    ];
    for input in &inputs {
        let mut core = Membership::new(swim.clone(), "fuzzed".into(), addr, 1, now);
        let before = core.members();
        if core.handle_frame(input, now).is_err() {
            assert_eq!(
                core.members(),
                before,
                "a refused frame changed the members"
            );
        }
    }
    if let Ok((kind, header, packet)) = wire::unframe_any(data, swim.max_packet) {
        let again = wire::frame_of(kind, header, packet);
        assert_eq!(again, data, "a checked frame does not re-frame to itself");
    }
}

/// The cluster directory's messages.
pub fn directory_message(data: &[u8]) {
    if let Ok(message) = DirectoryMessage::decode(data) {
        assert_eq!(
            DirectoryMessage::decode(&message.encode()),
            Ok(message),
            "decode ∘ encode changed a directory message"
        );
    }
}

/// A frame of remote messages.
pub fn remote_batch(data: &[u8]) {
    let max = wire::MESSAGES_PACKET_MAX + wire::FRAME_OVERHEAD;
    if let Ok(batch) = read_batch(data, max) {
        assert_eq!(
            RemoteBatch::decode(&batch.encode()).as_ref(),
            Ok(&batch),
            "decode ∘ encode changed a batch"
        );
        let header = wire::FrameHeader { nonce: 0, seq: 0 };
        assert_eq!(
            batch.encode_frame(header),
            wire::frame_of(FrameKind::Messages, header, &batch.encode()),
            "the hand-written frame differs from serde's"
        );
        // Its last byte flipped, the frame no longer passes its checksum.
        let mut damaged = data.to_vec();
        if let Some(last) = damaged.last_mut() {
            *last ^= 0x01;
            assert!(
                read_batch(&damaged, max).is_err(),
                "a damaged frame decoded"
            );
        }
    }
    // The hand-written reader never answers other than serde would.
    if let Some(by_hand) = RemoteBatch::decode_by_hand(data) {
        assert_eq!(
            rmp_serde::from_slice::<RemoteBatch>(data).ok(),
            Some(by_hand),
            "the hand reader and serde read a packet differently"
        );
    }
    let header = wire::FrameHeader { nonce: 0, seq: 0 };
    let _ = read_batch(&wire::frame_of(FrameKind::Messages, header, data), max);
}

/// A YAML profile through parse, merge and validation.
pub fn profile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("fuzzed.yaml");
    std::fs::write(&path, text).expect("written");
    let Ok(loaded) = caxton_profiles::load(&[path.display().to_string()], &[]) else {
        return;
    };
    let shown = dir.path().join("shown.yaml");
    std::fs::write(&shown, loaded.to_yaml()).expect("written");
    let again = caxton_profiles::load(&[shown.display().to_string()], &[])
        .unwrap_or_else(|error| panic!("a loaded profile's YAML does not load: {error}"));
    assert_eq!(
        again.profile, loaded.profile,
        "show ∘ load changed the profile"
    );
}

/// What the `module` target admits with: a compiler and one shard's host,
/// made once per process (each holds a wasmtime engine and a ticker thread).
struct Admission {
    compiler: caxton_agents::ModuleCompiler,
    host: caxton_agents::AgentHost,
    limits: caxton_profiles::AgentLimits,
}

thread_local! {
    static ADMISSION: std::cell::RefCell<Option<Admission>> = const { std::cell::RefCell::new(None) };
}

fn admission() -> Admission {
    let mut profile = caxton_profiles::Profile::default();
    profile.runtime.max_agents = 4;
    profile.runtime.agent_pool_size = 1;
    profile.runtime.max_memory_per_agent = caxton_profiles::ByteSize::mib(4);
    let compiler = caxton_agents::ModuleCompiler::new(&profile).expect("a compiler");
    let host = caxton_agents::AgentHost::new(
        &profile,
        0,
        1,
        std::rc::Rc::new(|_: &str| None),
        std::rc::Rc::new(|_| String::new()),
        std::rc::Rc::new(|| 0),
    )
    .expect("a host");
    let mut limits = profile.agents.default_limits.clone();
    limits.memory = caxton_profiles::ByteSize::mib(4);
    Admission {
        compiler,
        host,
        limits,
    }
}

/// An upload through compilation and the ABI checks: what is admitted
/// instantiates (deploying starts its instance at once).
pub fn module(data: &[u8]) {
    ADMISSION.with(|cell| {
        let mut cell = cell.borrow_mut();
        let admission = cell.get_or_insert_with(admission);
        let Ok(compiled) = admission.compiler.compile(data) else {
            return;
        };
        let id = caxton_messaging::AgentId(1);
        admission
            .host
            .deploy(id, "fuzzed", &compiled, 1, &admission.limits)
            .unwrap_or_else(|error| panic!("an admitted module does not instantiate: {error}"));
        assert!(admission.host.undeploy(id), "the deployed agent undeploys");
    });
}

/// An HDR interval log as `engine hdr report|plot` read it.
pub fn hdr_log(data: &[u8]) {
    use caxton_telemetry::hdr_log::{merge_tag, read_log, single_interval_text, tags};
    let Ok(intervals) = read_log(data) else {
        return;
    };
    for tag in tags(&intervals) {
        if let Some((merged, _)) = merge_tag(&intervals, tag.as_deref()) {
            let _ = caxton_telemetry::percentile_distribution(&merged, 1e3);
        }
    }
    for interval in &intervals {
        let histogram = &interval.histogram;
        let tag = interval.tag.as_deref().unwrap_or("untagged");
        // Tags the writer refuses (spaces, commas) are the reader's to accept only.
        let Ok(text) = single_interval_text("fuzz", interval.length, &[(tag, histogram)]) else {
            continue;
        };
        let back = read_log(&text).expect("a log the engine writes reads back");
        assert_eq!(back.len(), 1, "one interval written, one read");
        let again = &back[0].histogram;
        assert_eq!(again.len(), histogram.len(), "counts survive a rewrite");
        if !histogram.is_empty() {
            assert_eq!(again.max(), histogram.max());
            assert_eq!(
                again.value_at_quantile(0.5),
                histogram.value_at_quantile(0.5)
            );
        }
    }
}

/// A row read back at recovery: the first byte says which (`0`: a message
/// row, `1`: a compressed message row, `2`: an agent row's limits), the rest
/// is the column.
pub fn storage_row(data: &[u8]) {
    let Some((&kind, column)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        row @ (0 | 1) => {
            let compressed = row == 1;
            let Ok(bytes) = caxton_storage::read_stored_form(column.to_vec(), compressed) else {
                return;
            };
            let Ok(envelope) = Envelope::decode(&bytes) else {
                return;
            };
            let encoded = envelope.encode();
            let stored = caxton_storage::stored_form(&encoded, compressed).into_owned();
            let back = caxton_storage::read_stored_form(stored, compressed)
                .expect("a stored envelope reads back");
            assert_eq!(
                Envelope::decode(&back).expect("decodes"),
                envelope,
                "store ∘ read changed the envelope"
            );
        }
        _ => {
            let Ok(text) = std::str::from_utf8(column) else {
                return;
            };
            let Ok(limits) = serde_json::from_str::<caxton_profiles::AgentLimits>(text) else {
                return;
            };
            let written = serde_json::to_string(&limits).expect("limits encode");
            let again: caxton_profiles::AgentLimits =
                serde_json::from_str(&written).expect("written limits read back");
            assert_eq!(again, limits, "write ∘ read changed the limits");
        }
    }
}

/// The methods an `admin_request` input picks from with its first byte.
pub const ADMIN_METHODS: [&str; 6] = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD"];

/// An admin API request, `[method][path]\n[query]\n[body]` (the method is
/// [`ADMIN_METHODS`]`[first byte % 6]`), through the endpoint's parsing.
pub fn admin_request(data: &[u8]) {
    use caxton_admin::request::{parse, Request};
    let Some((&method, rest)) = data.split_first() else {
        return;
    };
    let method: hyper::Method = ADMIN_METHODS[usize::from(method) % ADMIN_METHODS.len()]
        .parse()
        .expect("a method");
    let mut parts = rest.splitn(3, |&byte| byte == b'\n');
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = hyper::body::Bytes::copy_from_slice(parts.next().unwrap_or_default());
    match parse(&method, &path, &query, body) {
        Err(refusal) => assert!(
            refusal.status().is_client_error(),
            "a request is refused with a 4xx, not {}",
            refusal.status()
        ),
        Ok(Request::Deploy(deploy)) => {
            assert!(
                caxton_profiles::check_agent_name(&deploy.name).is_ok(),
                "{:?}",
                deploy.name
            );
            assert!((1..=caxton_admin::DEPLOY_INSTANCES_MAX).contains(&deploy.instances));
            assert!(!deploy.module.is_empty());
            assert!(deploy
                .cpu_shares
                .is_none_or(|shares| shares.millicores() > 0));
            assert!(deploy
                .max_execution_time
                .is_none_or(|time| !time.get().is_zero()));
        }
        Ok(Request::Send(message)) => {
            assert!(
                !message.timeout.is_zero() && message.timeout <= caxton_admin::SEND_TIMEOUT_MAX
            );
        }
        Ok(Request::Trace(Some(messages))) => assert!(messages <= caxton_admin::TRACE_MESSAGES_MAX),
        Ok(Request::CpuStart(hertz)) => {
            assert!((1..=caxton_admin::CPU_PROFILE_FREQUENCY_MAX).contains(&hertz));
        }
        Ok(_) => {}
    }
}
