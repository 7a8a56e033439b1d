//! Fuzz targets: each takes arbitrary bytes through one of the engine's
//! decoders of outside input and panics when an invariant breaks, not only
//! when the decoder does. `scripts/fuzz.sh TARGET DURATION` runs one under
//! AFL++ (cargo-afl, stable toolchain); `tests/corpus.rs` runs every seed
//! corpus (`fuzz/corpus/TARGET/`) as a regression test on every CI run.
//!
//! | target | decoder | invariant |
//! |---|---|---|
//! | `envelope` | the message envelope (MessagePack) | a decoded envelope encodes and decodes to itself |
//! | `cluster_frame` | a frame off the cluster port, into a membership core: as it came, and framed with a valid checksum as a SWIM and as a directory frame | no panic; a refused frame changes no member; a checked frame re-frames to the same bytes |
//! | `directory_message` | the cluster directory's messages | decode ∘ encode is the identity on what decodes |
//! | `remote_batch` | a frame of remote messages | the same, and a damaged frame never decodes |
//! | `profile` | a YAML profile through load and validation | a profile that loads shows as YAML that loads to the same profile |

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
pub const TARGETS: [(&str, Target); 5] = [
    ("envelope", envelope),
    ("cluster_frame", cluster_frame),
    ("directory_message", directory_message),
    ("remote_batch", remote_batch),
    ("profile", profile),
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
    // so the fuzzer also reaches foca's decoder and the directory's.
    let header = wire::FrameHeader { nonce: 5, seq: 1 };
    let inputs = [
        data.to_vec(),
        wire::frame(header, data),
        wire::frame_of(FrameKind::Directory, header, data),
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
