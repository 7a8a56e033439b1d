//! Remote routing between two nodes' routers, with fake shards.

use std::collections::BTreeMap;

use caxton_messaging::InstanceId;

use super::*;
use crate::directory::ClusterDirectory;

/// A node's shards as remote routing sees them: a remote port (participant
/// 9), agents by name, a clock, and what was delivered.
struct FakeSide {
    local: BTreeMap<String, AgentId>,
    proxies: BTreeMap<u32, String>,
    delivered: Vec<Envelope>,
    room: usize,
    /// Receivers whose rings are full, whatever `room` says.
    full: Vec<Address>,
    now: u64,
}

impl FakeSide {
    fn new(local: &[(&str, u32)], proxies: &[(u32, &str)]) -> Self {
        Self {
            local: local
                .iter()
                .map(|(name, id)| ((*name).to_owned(), AgentId(*id)))
                .collect(),
            proxies: proxies
                .iter()
                .map(|(id, name)| (*id, (*name).to_owned()))
                .collect(),
            delivered: Vec::new(),
            room: usize::MAX,
            full: Vec::new(),
            now: 1_000_000,
        }
    }
}

impl LocalSide for FakeSide {
    fn take_outbound(&mut self, _max: usize, _out: &mut Vec<Envelope>) {}

    fn deliver(&mut self, envelope: Envelope, _route_key: u64) -> Result<(), Envelope> {
        if self.room == 0 || self.full.contains(&envelope.receiver) {
            return Err(envelope);
        }
        self.room -= 1;
        self.delivered.push(envelope);
        Ok(())
    }

    fn resolve_local(&self, name: &str) -> Option<AgentId> {
        self.local.get(name).copied()
    }

    fn remote_name(&self, id: AgentId) -> Option<String> {
        self.proxies.get(&id.0).cloned()
    }

    fn resolve_anywhere(&self, name: &str) -> Option<AgentId> {
        self.resolve_local(name).or_else(|| {
            self.proxies
                .iter()
                .find(|(_, proxy)| *proxy == name)
                .map(|(id, _)| AgentId(*id))
        })
    }

    fn agent_name(&self, address: Address) -> Option<String> {
        let id = match address {
            Address::Agent(id) | Address::Remote { agent: id, .. } => id,
            Address::Instance(instance) => instance.agent,
            Address::Client { .. } => return None,
        };
        self.local
            .iter()
            .find(|(_, local)| **local == id)
            .map(|(name, _)| name.clone())
            .or_else(|| self.remote_name(id))
    }

    fn participant(&self) -> u16 {
        9
    }

    fn now_ns(&self) -> u64 {
        self.now
    }

    fn unix_ns_at(&self, now_ns: u64) -> u64 {
        // Both fake nodes' wall clocks agree: a fixed offset from their node clocks.
        1_700_000_000_000_000_000 + now_ns
    }

    fn wait(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::pending()
    }

    fn remote_agents_changed(&mut self, _names: Vec<String>) {}
}

fn node(port: u16) -> NodeId {
    NodeId::new(
        format!("node-{port}"),
        SocketAddr::from(([127, 0, 0, 1], port)),
        1,
    )
}

/// A's view: C (port 3) hosts `echo`.
fn directory_with_echo_on_c() -> ClusterDirectory {
    let mut directory = ClusterDirectory::default();
    directory.apply(node(3), 1, vec![("echo".into(), 2)]);
    directory
}

const PROXY: u32 = caxton_messaging::AgentId(1 << 31).0;

fn request_from_instance() -> Envelope {
    let sender = Address::Instance(InstanceId {
        agent: AgentId(4),
        shard: 1,
        slot: 0,
    });
    Envelope {
        reply_with: 42,
        conversation_id: 7,
        priority: PriorityClass(1),
        deadline_ns: 1_000_000 + 5_000,
        ..Envelope::new(
            Performative::Request,
            sender,
            Address::Agent(AgentId(PROXY)),
            b"hi".to_vec(),
            1_000_000,
            1,
        )
    }
}

/// `answer` leaving C (port 3) through its remote port for A (port 1) and
/// handed to A's shards: the remote message it travelled as, and what A's
/// shards got.
fn carry_home(
    answer: Envelope,
    c: &mut RemoteRouter,
    c_side: &FakeSide,
    a: &mut RemoteRouter,
    a_side: &mut FakeSide,
) -> (RemoteMessage, Envelope) {
    let Outbound::Send(home, message) = c.outbound(answer, c_side, &ClusterDirectory::default())
    else {
        panic!("sent home");
    };
    assert_eq!(home, node(1).addr);
    assert_eq!(
        a.inbound(node(3).addr, message.clone(), a_side),
        Inbound::Delivered
    );
    (message, a_side.delivered.pop().expect("delivered"))
}

#[test]
fn a_request_crosses_to_its_host_and_the_answer_comes_home() {
    let directory = directory_with_echo_on_c();
    let mut a = RemoteRouter::default();
    let mut c = RemoteRouter::default();
    let mut a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    let mut c_side = FakeSide::new(&[("echo", 5)], &[]);
    c_side.now = 50_000_000;
    let request = request_from_instance();
    let Outbound::Send(to, message) = a.outbound(request.clone(), &a_side, &directory) else {
        panic!("sent");
    };
    assert_eq!(to, node(3).addr);
    assert_eq!(message.target, Target::Agent("echo".into()));
    assert_eq!(
        message.deadline_in_ns,
        Some(5_000),
        "time left, not a clock reading"
    );

    assert_eq!(
        c.inbound(node(1).addr, message, &mut c_side),
        Inbound::Delivered
    );
    let arrived = c_side.delivered.pop().expect("delivered");
    assert_eq!(arrived.receiver, Address::Agent(AgentId(5)));
    assert_eq!(arrived.deadline_ns, 50_000_000 + 5_000, "on C's clock");
    // The wall clocks agree, and 49 ms passed on them: sent 49 ms before C's now.
    assert_eq!(arrived.sent_at_ns, 50_000_000 - 49_000_000);
    assert_eq!(
        (
            arrived.reply_with,
            arrived.conversation_id,
            arrived.priority
        ),
        (42, 7, PriorityClass(1))
    );
    let Address::Client { port: 9, id: token } = arrived.sender else {
        panic!(
            "the sender is a token on C's remote port: {:?}",
            arrived.sender
        );
    };
    assert_eq!(c.origins(), 1);

    // C's echo answers; the answer leaves through C's remote port.
    let answer = arrived
        .reply_path()
        .answer(Performative::Inform, b"hi".to_vec(), 50_000_100, 0);
    assert_eq!(answer.receiver, Address::Client { port: 9, id: token });
    let (_, home) = carry_home(answer, &mut c, &c_side, &mut a, &mut a_side);
    assert_eq!(c.origins(), 0, "an origin is used once");
    assert_eq!(home.receiver, request.sender);
    assert_eq!(
        (home.in_reply_to, home.performative),
        (42, Performative::Inform)
    );
    assert_eq!(home.content, b"hi");
}

#[test]
fn an_agent_sender_is_named_on_the_other_node_and_its_answer_still_comes_home() {
    let directory = directory_with_echo_on_c();
    let mut a = RemoteRouter::default();
    let mut c = RemoteRouter::default();
    // A hosts `driver` (id 4) and knows `echo` by a proxy; C hosts `echo`
    // and knows `driver` by a proxy of its own.
    let driver_on_c = PROXY + 7;
    let mut a_side = FakeSide::new(&[("driver", 4)], &[(PROXY, "echo")]);
    let mut c_side = FakeSide::new(&[("echo", 5)], &[(driver_on_c, "driver")]);
    let request = request_from_instance();
    let Outbound::Send(_, message) = a.outbound(request.clone(), &a_side, &directory) else {
        panic!("sent");
    };
    assert_eq!(message.sender_name.as_deref(), Some("driver"));
    assert_eq!(
        c.inbound(node(1).addr, message, &mut c_side),
        Inbound::Delivered
    );
    let arrived = c_side.delivered.pop().expect("delivered");
    let Address::Remote {
        port: 9,
        token,
        agent,
    } = arrived.sender
    else {
        panic!("an agent sender on C's remote port: {:?}", arrived.sender);
    };
    assert_eq!(
        agent,
        AgentId(driver_on_c),
        "named by C's proxy for `driver`"
    );
    assert_ne!(token, NOBODY_ID, "a request keeps its way home");
    assert_eq!(c.origins(), 1);
    assert_eq!(c_side.agent_name(arrived.sender).as_deref(), Some("driver"));

    // The answer to that address leaves through C's remote port and finds
    // the way home by the token, as a client address's would.
    let answer = arrived
        .reply_path()
        .answer(Performative::Inform, b"hi".to_vec(), 50_000_100, 0);
    assert_eq!(answer.receiver, arrived.sender);
    let (message, home) = carry_home(answer, &mut c, &c_side, &mut a, &mut a_side);
    assert_eq!(message.sender_name.as_deref(), Some("echo"));
    assert_eq!(home.receiver, request.sender);
    // On A the answer is from `echo` (A's proxy for it), with no way back.
    assert_eq!(
        home.sender,
        Address::Remote {
            port: 9,
            token: NOBODY_ID,
            agent: AgentId(PROXY),
        }
    );
    let reply_to_answer = home
        .reply_path()
        .answer(Performative::Inform, Vec::new(), 1_000_100, 0);
    assert_eq!(
        a.outbound(reply_to_answer, &a_side, &directory),
        Outbound::Dropped,
        "an answer to an answer goes nowhere"
    );
}

#[test]
fn one_sender_keeps_one_host() {
    let mut directory = ClusterDirectory::default();
    for port in 2..6 {
        directory.apply(node(port), 1, vec![("echo".into(), 1)]);
    }
    let mut router = RemoteRouter::default();
    let side = FakeSide::new(&[], &[(PROXY, "echo")]);
    let host = |router: &mut RemoteRouter| match router.outbound(
        request_from_instance(),
        &side,
        &directory,
    ) {
        Outbound::Send(to, _) => to,
        other => panic!("{other:?}"),
    };
    let first = host(&mut router);
    for _ in 0..20 {
        assert_eq!(host(&mut router), first);
    }
}

#[test]
fn a_send_to_an_agent_whose_only_host_is_down_is_answered_node_down() {
    let mut a = RemoteRouter::default();
    let a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    let mut directory = directory_with_echo_on_c();
    assert!(directory.declared_down(&node(3)));
    let Outbound::Answer(answer) = a.outbound(request_from_instance(), &a_side, &directory) else {
        panic!("answered here");
    };
    assert_eq!(answer.performative, Performative::Failure);
    assert_eq!(answer.content, b"caxton:node-down");
    assert_eq!(answer.in_reply_to, 42);
}

#[test]
fn no_host_unknown_names_and_full_rings_are_answered_failure() {
    let failure = |content: &[u8]| String::from_utf8_lossy(content).into_owned();
    // No node hosts it (any more): failure here, to the sender.
    let mut a = RemoteRouter::default();
    let a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    let Outbound::Answer(answer) = a.outbound(
        request_from_instance(),
        &a_side,
        &ClusterDirectory::default(),
    ) else {
        panic!("answered");
    };
    assert_eq!(answer.performative, Performative::Failure);
    assert_eq!(failure(&answer.content), "caxton:unknown-agent");
    assert_eq!(answer.in_reply_to, 42);

    // The host no longer has it: failure back to the sending node.
    let directory = directory_with_echo_on_c();
    let Outbound::Send(_, message) = a.outbound(request_from_instance(), &a_side, &directory)
    else {
        panic!("sent");
    };
    let mut c = RemoteRouter::default();
    let mut empty = FakeSide::new(&[], &[]);
    let Inbound::Answer(back, refusal) = c.inbound(node(1).addr, message.clone(), &mut empty)
    else {
        panic!("refused");
    };
    assert_eq!(back, node(1).addr);
    assert_eq!(
        refusal.target,
        Target::Address(request_from_instance().sender)
    );
    assert_eq!(failure(&refusal.content), "caxton:unknown-agent");
    assert_eq!(refusal.in_reply_to, 42);

    // The host's ring is full: refused, and the origin is not kept.
    let mut full = FakeSide::new(&[("echo", 5)], &[]);
    full.room = 0;
    let Inbound::Answer(_, refusal) = c.inbound(node(1).addr, message, &mut full) else {
        panic!("refused");
    };
    assert_eq!(failure(&refusal.content), "caxton:refused:ring-full");
    assert_eq!(c.origins(), 0);
    // The refusal itself is an answer home, delivered to the sender there.
    let mut a_side = FakeSide::new(&[], &[]);
    assert_eq!(
        a.inbound(node(3).addr, (*refusal).clone(), &mut a_side),
        Inbound::Delivered
    );
    assert_eq!(a_side.delivered[0].receiver, request_from_instance().sender);
    // A failure that cannot be delivered is not answered with another failure.
    let stray_failure = RemoteMessage {
        target: Target::Agent("nobody".into()),
        sender: Some(request_from_instance().sender),
        ..*refusal
    };
    assert_eq!(
        c.inbound(node(1).addr, stray_failure, &mut empty),
        Inbound::Dropped
    );
}

#[test]
fn answers_nobody_waits_for_are_dropped_and_origins_are_bounded() {
    let mut c = RemoteRouter::default();
    let side = FakeSide::new(&[("echo", 5)], &[]);
    let stray = Envelope::new(
        Performative::Inform,
        Address::Agent(AgentId(5)),
        Address::Client { port: 9, id: 12345 },
        Vec::new(),
        0,
        0,
    );
    assert_eq!(
        c.outbound(stray, &side, &ClusterDirectory::default()),
        Outbound::Dropped
    );
    assert_eq!(c.counters().dropped, 1);
    let sender = Address::Client { port: 3, id: 1 };
    let first = c.remember(node(1).addr, sender, None, 0);
    for _ in 0..ORIGINS_MAX {
        c.remember(node(1).addr, sender, None, 0);
    }
    assert_eq!(c.origins(), ORIGINS_MAX);
    assert!(!c.origins.contains_key(&first), "the oldest was forgotten");
}

#[test]
fn batches_round_trip_and_bad_senders_are_refused() {
    let batch = RemoteBatch {
        from: node(1),
        messages: vec![to_remote(
            request_from_instance(),
            Target::Agent("echo".into()),
            Some(request_from_instance().sender),
            &FakeSide::new(&[], &[]),
        )],
    };
    assert_eq!(RemoteBatch::decode(&batch.encode()), Ok(batch.clone()));
    // Encoded in place behind the header: the same bytes as framing the
    // encoded batch, and read back by the frame reader.
    let header = crate::wire::FrameHeader { nonce: 7, seq: 9 };
    let frame = batch.encode_frame(header);
    assert_eq!(
        frame,
        crate::wire::frame_of(crate::wire::FrameKind::Messages, header, &batch.encode())
    );
    assert_eq!(read_batch(&frame, 1 << 20), Ok(batch.clone()));
    let mut bad = batch;
    bad.from = NodeId::new("not a name", bad.from.addr, bad.from.generation);
    assert_eq!(
        RemoteBatch::decode(&bad.encode()),
        Err(WireError::BadIdentity)
    );
    assert!(RemoteBatch::decode(b"\x92").is_err());
}

/// Content travels as MessagePack `bin` (a 200-byte content of 0xff costs
/// 202 bytes, not 400 as integers would), and the array of byte values
/// that nodes sent before still reads as the same message.
#[test]
fn content_travels_as_bytes_and_the_array_form_still_reads() {
    let mut message = to_remote(
        request_from_instance(),
        Target::Agent("echo".into()),
        None,
        &FakeSide::new(&[], &[]),
    );
    message.content = vec![0xff; 200];
    let batch = RemoteBatch {
        from: node(1),
        messages: vec![message],
    };
    let encoded = batch.encode();
    let mut as_bin = vec![0xc4, 200];
    as_bin.extend([0xff; 200]);
    let at = encoded
        .windows(as_bin.len())
        .position(|window| window == as_bin)
        .expect("the content is one bin8 of 200 bytes");
    // The same batch with its content as an array16 of uint8 values.
    let mut as_array = vec![0xdc, 0, 200];
    for _ in 0..200 {
        as_array.extend([0xcc, 0xff]);
    }
    let older = [&encoded[..at], &as_array, &encoded[at + as_bin.len()..]].concat();
    assert_eq!(RemoteBatch::decode(&older), Ok(batch.clone()));
    assert_eq!(RemoteBatch::decode(&encoded), Ok(batch));
}

#[test]
fn a_durable_send_is_answered_with_a_notice_refused_before_it_left_in_doubt_after() {
    // Its sender waits for a notice (stored or refused), not for an answer:
    // a plain failure would leave it waiting out its timeout.
    let durable = || Envelope {
        durability: Durability::Requested,
        ..request_from_instance()
    };
    let refused = |answer: &Envelope| {
        assert_eq!(
            (answer.performative, answer.durability, answer.in_reply_to),
            (Performative::Refuse, Durability::Notice(0), 42)
        );
        assert_eq!(answer.content, b"caxton:node-down");
    };
    // Its only host is down.
    let mut a = RemoteRouter::default();
    let a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    let mut down = directory_with_echo_on_c();
    assert!(down.declared_down(&node(3)));
    let Outbound::Answer(answer) = a.outbound(durable(), &a_side, &down) else {
        panic!("answered here");
    };
    refused(&answer);
    // Its host is lost after it left and before its notice came: it may
    // have been stored there, so it is not refused but failed in doubt.
    let directory = directory_with_echo_on_c();
    let Outbound::Send(c, _) = a.outbound(durable(), &a_side, &directory) else {
        panic!("sent");
    };
    let answers = a.node_lost(c, "node-down", &a_side);
    assert_eq!(answers.len(), 1);
    assert_eq!(
        (
            answers[0].performative,
            answers[0].durability,
            answers[0].in_reply_to
        ),
        (Performative::Failure, Durability::Notice(0), 42)
    );
    assert_eq!(answers[0].content, b"caxton:node-down");
    // Once its notice came it is stored there, C's to handle when it is
    // back: a later loss of C makes up no answer for it.
    let Outbound::Send(c, message) = a.outbound(durable(), &a_side, &directory) else {
        panic!("sent");
    };
    let (mut c_router, c_side, arrived) = stored_on_c(message);
    let Outbound::Send(_, home) = c_router.outbound(
        stored_notice(&arrived, 9),
        &c_side,
        &ClusterDirectory::default(),
    ) else {
        panic!("home");
    };
    let mut a_side = a_side;
    assert_eq!(a.inbound(c, home, &mut a_side), Inbound::Delivered);
    assert!(a.node_lost(c, "node-down", &a_side).is_empty());
}

#[test]
fn a_lost_host_answers_its_waiting_senders_at_once() {
    let directory = directory_with_echo_on_c();
    let mut a = RemoteRouter::default();
    let a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    let Outbound::Send(c, message) = a.outbound(request_from_instance(), &a_side, &directory)
    else {
        panic!("sent");
    };
    // A one-way message (no token) is not waited for.
    let one_way = Envelope {
        reply_with: 0,
        ..request_from_instance()
    };
    assert!(matches!(
        a.outbound(one_way, &a_side, &directory),
        Outbound::Send(..)
    ));
    assert_eq!(a.in_flight(), 1);
    // Another node's loss changes nothing.
    assert!(a.node_lost(node(4).addr, "node-down", &a_side).is_empty());
    let answers = a.node_lost(c, "node-down", &a_side);
    assert_eq!(answers.len(), 1);
    let answer = &answers[0];
    assert_eq!(answer.receiver, request_from_instance().sender);
    assert_eq!(
        (answer.performative, answer.in_reply_to),
        (Performative::Failure, 42)
    );
    assert_eq!(answer.content, b"caxton:node-down");
    assert_eq!(a.in_flight(), 0);
    assert_eq!(a.counters().lost, 1);

    // The host had only stalled: its answer, coming home after all, is
    // dropped, since the sender was told it is lost.
    let mut c_router = RemoteRouter::default();
    let mut c_side = FakeSide::new(&[("echo", 5)], &[]);
    c_router.inbound(node(1).addr, message.clone(), &mut c_side);
    let late = c_side
        .delivered
        .pop()
        .expect("delivered")
        .reply_path()
        .answer(Performative::Inform, b"late".to_vec(), 0, 0);
    let Outbound::Send(_, late) = c_router.outbound(late, &c_side, &ClusterDirectory::default())
    else {
        panic!("home");
    };
    let mut a_side = a_side;
    assert_eq!(a.inbound(c, late, &mut a_side), Inbound::Dropped);
    assert!(a_side.delivered.is_empty(), "the sender hears once");
    assert_eq!(a.counters().answers_after_loss, 1);
    // Nor is it answered again should its frame, which waited for a
    // connection, turn out never to have left.
    assert!(a
        .unsent(c, message.clone(), "connection-lost", &a_side)
        .is_none());

    // An answer that comes home clears its request: a later loss answers
    // nothing. (The sender uses its token again: it asks afresh.)
    let Outbound::Send(_, _) = a.outbound(request_from_instance(), &a_side, &directory) else {
        panic!("sent");
    };
    assert_eq!(
        c_router.inbound(node(1).addr, message, &mut c_side),
        Inbound::Delivered
    );
    let arrived = c_side.delivered.pop().expect("delivered");
    let reply = arrived
        .reply_path()
        .answer(Performative::Inform, Vec::new(), 0, 0);
    let Outbound::Send(_, home) = c_router.outbound(reply, &c_side, &ClusterDirectory::default())
    else {
        panic!("home");
    };
    assert_eq!(a.inbound(c, home, &mut a_side), Inbound::Delivered);
    assert_eq!(a.in_flight(), 0);
    assert!(a.node_lost(c, "connection-lost", &a_side).is_empty());
}

/// `message` delivered on C (hosting echo), where it is to be stored:
/// C's router, its side, and the envelope its shard got.
fn stored_on_c(message: RemoteMessage) -> (RemoteRouter, FakeSide, Envelope) {
    let mut c = RemoteRouter::default();
    let mut c_side = FakeSide::new(&[("echo", 5)], &[]);
    assert_eq!(
        c.inbound(node(1).addr, message, &mut c_side),
        Inbound::Delivered
    );
    let arrived = c_side.delivered.pop().expect("delivered");
    assert_eq!(
        arrived.durability,
        Durability::Requested,
        "stored on the host"
    );
    (c, c_side, arrived)
}

/// The host shard's notice that `arrived` was stored under `id`.
fn stored_notice(arrived: &Envelope, id: u64) -> Envelope {
    Envelope {
        durability: Durability::Notice(id),
        ..arrived
            .reply_path()
            .answer(Performative::Agree, Vec::new(), 0, 0)
    }
}

#[test]
fn a_durable_sends_notice_comes_home_first_and_its_answer_after() {
    let directory = directory_with_echo_on_c();
    let mut a = RemoteRouter::default();
    let mut a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    let durable = Envelope {
        durability: Durability::Requested,
        ..request_from_instance()
    };
    let Outbound::Send(c_addr, message) = a.outbound(durable, &a_side, &directory) else {
        panic!("sent");
    };
    assert!(message.durable);
    let (mut c, c_side, arrived) = stored_on_c(message);
    // The host's shard stored it: its notice goes home, and the origin stays.
    let notice = stored_notice(&arrived, 77);
    let Outbound::Send(_, home) = c.outbound(notice, &c_side, &ClusterDirectory::default()) else {
        panic!("home");
    };
    assert_eq!(home.notice, Some(77));
    assert_eq!(c.origins(), 1, "kept for the answer");
    assert_eq!(a.inbound(c_addr, home, &mut a_side), Inbound::Delivered);
    assert_eq!(a_side.delivered[0].durability, Durability::Notice(77));
    // Then the answer, which uses the origin up.
    let answer = arrived
        .reply_path()
        .answer(Performative::Inform, b"kept".to_vec(), 0, 0);
    assert!(matches!(
        c.outbound(answer, &c_side, &ClusterDirectory::default()),
        Outbound::Send(..)
    ));
    assert_eq!(c.origins(), 0);
}

#[test]
fn a_chain_hop_is_stored_on_its_host_and_acknowledged_to_its_parent() {
    let directory = directory_with_echo_on_c();
    let mut a = RemoteRouter::default();
    let mut a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    let parent = PARENT;
    let Outbound::Send(c_addr, message) = a.outbound(chain_hop(), &a_side, &directory) else {
        panic!("sent");
    };
    assert_eq!(message.chained, Some(parent));
    let (mut c, c_side, arrived) = stored_on_c(message);
    let stored = stored_notice(&arrived, 9);
    let Outbound::Send(_, ack) = c.outbound(stored, &c_side, &ClusterDirectory::default()) else {
        panic!("acknowledged");
    };
    assert_eq!((ack.chain_ack, ack.notice), (Some(parent), None));
    assert_eq!(a.inbound(c_addr, ack, &mut a_side), Inbound::Delivered);
    assert_eq!(a_side.delivered[0].durability, Durability::ChainAck(parent));
    assert_eq!(c.origins(), 1, "the hop's answer may still come");
}

/// A hop of stored message `PARENT` from an instance on A to `echo`.
const PARENT: u64 = 0x0002_0000_0000_0007;

fn chain_hop() -> Envelope {
    Envelope {
        durability: Durability::Chained(PARENT),
        ..request_from_instance()
    }
}

/// The acknowledgement C sends home once its shard stored `message`.
fn acknowledged_by_c(message: RemoteMessage) -> RemoteMessage {
    let (mut c, c_side, arrived) = stored_on_c(message);
    let Outbound::Send(_, ack) = c.outbound(
        stored_notice(&arrived, 9),
        &c_side,
        &ClusterDirectory::default(),
    ) else {
        panic!("acknowledged");
    };
    ack
}

#[test]
fn a_hop_lost_with_its_host_waits_for_a_host_goes_again_and_settles_its_parent_once() {
    let mut directory = directory_with_echo_on_c();
    let mut a = RemoteRouter::default();
    let mut a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    let Outbound::Send(c_addr, first) = a.outbound(chain_hop(), &a_side, &directory) else {
        panic!("sent");
    };
    assert_ne!(first.hop, 0, "kept, under an id");
    assert_eq!((a.chain_hops(), a.in_flight()), (1, 0));

    // C is declared down before storing it: no failure for the sender (the
    // hop is not lost), and with no other host the hop waits.
    assert!(directory.declared_down(&node(3)));
    assert!(a.node_lost(c_addr, "node-down", &a_side).is_empty());
    let waiting = a.resend_hops(&directory, &a_side);
    assert_eq!(waiting, Resends::default());
    assert_eq!(a.chain_hops_waiting(), 1);

    // C comes back (a newer generation) and lists echo again: the hop goes
    // there, the same hop under the same id.
    directory.apply(
        NodeId::new(node(3).name.clone(), node(3).addr, 2),
        1,
        vec![("echo".into(), 1)],
    );
    a.directory_changed(&a_side);
    let resent = a.resend_hops(&directory, &a_side);
    assert_eq!(resent.sends.len(), 1);
    let (to, again) = &resent.sends[0];
    assert_eq!(
        (*to, again.hop, &again.content),
        (c_addr, first.hop, &first.content)
    );
    assert_eq!(a.counters().hops_resent, 1);

    // Stored there: the acknowledgement settles the parent and ends custody.
    let ack = acknowledged_by_c(again.clone());
    assert_eq!(ack.hop, first.hop, "the acknowledgement quotes the hop");
    assert_eq!(a.inbound(c_addr, ack, &mut a_side), Inbound::Delivered);
    assert_eq!(a_side.delivered[0].durability, Durability::ChainAck(PARENT));
    assert_eq!(a.chain_hops(), 0);
    // Had the first copy been stored too, its acknowledgement changes nothing.
    let late = acknowledged_by_c(first);
    assert_eq!(a.inbound(c_addr, late, &mut a_side), Inbound::Dropped);
    assert_eq!(a_side.delivered.len(), 1, "the parent is settled once");
    assert_eq!(a.counters().hop_acks_duplicate, 1);
}

#[test]
fn an_unacknowledged_hop_goes_again_only_once_due() {
    let directory = directory_with_echo_on_c();
    let mut a = RemoteRouter::default();
    let mut a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    let hop = Envelope {
        deadline_ns: Envelope::NO_DEADLINE,
        ..chain_hop()
    };
    let Outbound::Send(c_addr, first) = a.outbound(hop, &a_side, &directory) else {
        panic!("sent");
    };
    // A busy peer's refusal does not fail it: it stays kept.
    assert_eq!(
        a.unsent(c_addr, first.clone(), "refused:peer-busy", &a_side),
        None
    );
    a_side.now += CHAIN_HOP_RESEND_AFTER.as_nanos() as u64 - 1;
    assert!(
        a.resend_hops(&directory, &a_side).sends.is_empty(),
        "not yet due"
    );
    a_side.now += 1;
    let resent = a.resend_hops(&directory, &a_side);
    assert_eq!(resent.sends.len(), 1);
    assert_eq!(resent.sends[0].1.hop, first.hop);
    assert!(
        a.resend_hops(&directory, &a_side).sends.is_empty(),
        "due again later"
    );
    assert_eq!(a.chain_hops(), 1);
}

#[test]
fn a_kept_hop_past_its_deadline_settles_its_parent_and_answers_timeout() {
    let mut directory = directory_with_echo_on_c();
    let mut a = RemoteRouter::default();
    let mut a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    let Outbound::Send(c_addr, _) = a.outbound(chain_hop(), &a_side, &directory) else {
        panic!("sent");
    };
    assert!(directory.declared_down(&node(3)));
    let _ = a.node_lost(c_addr, "node-down", &a_side);
    assert_eq!(a.resend_hops(&directory, &a_side), Resends::default());
    // request_from_instance's deadline is 5 µs away; the next look is past it.
    a_side.now += CHAIN_HOP_RESEND_AFTER.as_nanos() as u64;
    let given_up = a.resend_hops(&directory, &a_side);
    assert!(given_up.sends.is_empty());
    assert_eq!(given_up.local.len(), 2);
    assert_eq!(given_up.local[0].durability, Durability::ChainAck(PARENT));
    let answer = &given_up.local[1];
    assert_eq!(answer.receiver, request_from_instance().sender);
    assert_eq!(
        (
            answer.performative,
            answer.in_reply_to,
            answer.content.as_slice()
        ),
        (Performative::Failure, 42, b"caxton:timeout".as_slice())
    );
    assert_eq!((a.chain_hops(), a.counters().hops_expired), (0, 1));
}

#[test]
fn a_hop_its_host_refuses_to_store_is_no_longer_kept() {
    let directory = directory_with_echo_on_c();
    let mut a = RemoteRouter::default();
    let mut a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    // One-way: nobody on A waits for an answer, yet A must hear of it.
    let one_way = Envelope {
        reply_with: 0,
        sender: NOBODY,
        ..chain_hop()
    };
    let Outbound::Send(c_addr, message) = a.outbound(one_way, &a_side, &directory) else {
        panic!("sent");
    };
    let (mut c, c_side, arrived) = stored_on_c(message);
    // C runs without persistence: its shard refuses to store the hop.
    let refusal = arrived.reply_path().notice(
        Performative::Refuse,
        0,
        b"caxton:persistence-off".to_vec(),
        0,
        0,
    );
    let Outbound::Send(_, home) = c.outbound(refusal, &c_side, &ClusterDirectory::default()) else {
        panic!("the refusal goes home");
    };
    assert_eq!(c.origins(), 0, "no answer follows a refusal");
    assert_eq!(a.inbound(c_addr, home, &mut a_side), Inbound::Dropped);
    assert!(a_side.delivered.is_empty(), "the parent is not settled");
    assert_eq!((a.chain_hops(), a.counters().hops_refused), (0, 1));
    a_side.now += CHAIN_HOP_RESEND_AFTER.as_nanos() as u64;
    assert!(
        a.resend_hops(&directory, &a_side).sends.is_empty(),
        "not sent again"
    );
}

#[test]
fn a_hop_with_no_host_at_all_is_kept_not_failed() {
    let mut a = RemoteRouter::default();
    let a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    assert_eq!(
        a.outbound(chain_hop(), &a_side, &ClusterDirectory::default()),
        Outbound::Held
    );
    assert_eq!((a.chain_hops(), a.chain_hops_waiting()), (1, 1));
    assert_eq!(a.counters().failed, 0);
}

#[test]
fn custody_is_bounded_and_a_hop_past_the_bound_goes_untracked() {
    let directory = directory_with_echo_on_c();
    let mut a = RemoteRouter::default();
    let a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    for _ in 0..crate::remote::CHAIN_HOPS_MAX {
        assert!(matches!(
            a.outbound(chain_hop(), &a_side, &directory),
            Outbound::Send(..)
        ));
    }
    assert_eq!(a.chain_hops(), crate::remote::CHAIN_HOPS_MAX);
    assert_eq!(a.counters().hops_untracked, 0);
    // One more still goes, at least once as sent, but is not kept.
    let Outbound::Send(_, message) = a.outbound(chain_hop(), &a_side, &directory) else {
        panic!("a hop past the bound is still sent");
    };
    assert_eq!(a.chain_hops(), crate::remote::CHAIN_HOPS_MAX);
    assert_eq!(a.counters().hops_untracked, 1);
    assert_eq!(message.hop, 0, "no hop id: nothing will settle against it");
}

#[test]
fn a_message_a_busy_peer_would_not_take_is_refused_to_its_sender() {
    let directory = directory_with_echo_on_c();
    let mut a = RemoteRouter::default();
    let a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    let Outbound::Send(c, message) = a.outbound(request_from_instance(), &a_side, &directory)
    else {
        panic!("sent");
    };
    assert_eq!(a.in_flight(), 1);
    let answer = a
        .unsent(c, message, "refused:peer-busy", &a_side)
        .expect("the sender is answered");
    assert_eq!(answer.receiver, request_from_instance().sender);
    assert_eq!(
        (answer.performative, answer.in_reply_to),
        (Performative::Failure, 42)
    );
    assert_eq!(answer.content, b"caxton:refused:peer-busy");
    assert_eq!(a.in_flight(), 0, "not waited for any more");
    assert_eq!(a.counters().failed, 1);
}

#[test]
fn an_answer_coming_home_to_a_full_ring_waits_for_room_in_order() {
    let busy = request_from_instance().sender;
    let other = Address::Client { port: 3, id: 8 };
    let answer_to = |receiver: Address, token: u64, content: &[u8]| RemoteMessage {
        in_reply_to: token,
        ..RemoteMessage::new(
            Target::Address(receiver),
            Performative::Inform,
            content.to_vec(),
        )
    };
    let mut a = RemoteRouter::default();
    let mut a_side = FakeSide::new(&[("asker", 4)], &[]);
    a_side.full.push(busy);
    for (token, content) in [(42, b"first"), (43, b"secon")] {
        assert_eq!(
            a.inbound(node(3).addr, answer_to(busy, token, content), &mut a_side),
            Inbound::Delivered,
            "taken, not refused back to the answering agent"
        );
    }
    // Another receiver's answer is not held up by the full ring.
    a.inbound(node(3).addr, answer_to(other, 9, b"other"), &mut a_side);
    assert_eq!(a_side.delivered.len(), 1);
    assert_eq!(a_side.delivered[0].receiver, other);
    assert_eq!((a.answers_waiting(), a.counters().answers_waited), (2, 2));
    // A message for the same agent does not overtake its answers: refused,
    // as a full ring refuses, even should its ring have room meanwhile.
    let request = RemoteMessage {
        sender: Some(Address::Agent(AgentId(6))),
        reply_with: 3,
        ..RemoteMessage::new(
            Target::Agent("asker".into()),
            Performative::Request,
            Vec::new(),
        )
    };
    let Inbound::Answer(_, refusal) = a.inbound(node(3).addr, request, &mut a_side) else {
        panic!("refused");
    };
    assert_eq!(refusal.content, b"caxton:refused:ring-full");
    // Still full: nothing moves.
    assert_eq!(a.deliver_waiting_answers(&mut a_side), 0);
    // Room for one: the first goes, and a third answer arriving now waits
    // behind the second rather than overtaking it.
    a_side.full.clear();
    a_side.room = 1;
    assert_eq!(a.deliver_waiting_answers(&mut a_side), 1);
    a_side.room = usize::MAX;
    a.deliver_answer(
        Envelope {
            in_reply_to: 44,
            ..Envelope::new(Performative::Failure, NOBODY, busy, b"third".to_vec(), 0, 9)
        },
        0,
        &mut a_side,
    );
    assert_eq!(a.answers_waiting(), 2);
    assert_eq!(a.deliver_waiting_answers(&mut a_side), 2);
    let to_busy: Vec<u64> = a_side
        .delivered
        .iter()
        .filter(|answer| answer.receiver == busy)
        .map(|answer| answer.in_reply_to)
        .collect();
    assert_eq!(to_busy, [42, 43, 44], "in arrival order");
    assert_eq!(a.answers_waiting(), 0);
    assert_eq!(a.counters().answers_given_up, 0);

    // Past the bound one is dropped, counted.
    a_side.full.push(busy);
    for token in 0..=ANSWERS_WAITING_MAX as u64 {
        a.deliver_answer(
            Envelope {
                in_reply_to: token + 1,
                ..Envelope::new(Performative::Inform, NOBODY, busy, Vec::new(), 0, 9)
            },
            0,
            &mut a_side,
        );
    }
    assert_eq!(a.answers_waiting(), ANSWERS_WAITING_MAX);
    assert_eq!(a.counters().answers_given_up, 1);

    // A receiver whose ring takes nothing (a client that left) has its
    // answers given up once it has taken none for the patience.
    let patience = ANSWERS_PATIENCE.as_nanos() as u64;
    a_side.now += patience - 1;
    assert_eq!(a.deliver_waiting_answers(&mut a_side), 0);
    assert_eq!(a.answers_waiting(), ANSWERS_WAITING_MAX, "still patient");
    a_side.now += 1;
    a.deliver_waiting_answers(&mut a_side);
    assert_eq!(a.answers_waiting(), 0);
    assert_eq!(
        a.counters().answers_given_up,
        1 + ANSWERS_WAITING_MAX as u64
    );
}

#[test]
fn a_message_too_large_to_cross_is_refused_to_its_sender_or_replaced_by_a_failure() {
    let directory = directory_with_echo_on_c();
    let mut a = RemoteRouter::default();
    let a_side = FakeSide::new(&[], &[(PROXY, "echo")]);
    let Outbound::Send(c, request) = a.outbound(request_from_instance(), &a_side, &directory)
    else {
        panic!("sent");
    };
    let TooLarge::Local(answers) = a.too_large(c, request.clone(), &a_side) else {
        panic!("its sender is answered");
    };
    let [answer] = answers.as_slice() else {
        panic!("one answer: {answers:?}");
    };
    assert_eq!(answer.receiver, request_from_instance().sender);
    assert_eq!(
        (answer.performative, answer.in_reply_to),
        (Performative::Failure, 42)
    );
    assert_eq!(answer.content, b"caxton:refused:too-large");
    assert_eq!(a.in_flight(), 0, "not waited for any more");

    // On c, an answer too large for a's sender: a failure goes instead.
    let mut c_router = RemoteRouter::default();
    let mut c_side = FakeSide::new(&[("echo", 5)], &[]);
    c_router.inbound(node(1).addr, request, &mut c_side);
    let reply = c_side
        .delivered
        .pop()
        .expect("delivered")
        .reply_path()
        .answer(Performative::Inform, vec![0; 64], 0, 0);
    let Outbound::Send(home, reply) =
        c_router.outbound(reply, &c_side, &ClusterDirectory::default())
    else {
        panic!("home");
    };
    let TooLarge::SendInstead(failure) = c_router.too_large(home, reply.clone(), &c_side) else {
        panic!("a failure in its place");
    };
    assert_eq!(failure.target, reply.target);
    assert_eq!(
        (failure.performative, failure.in_reply_to),
        (Performative::Failure, 42)
    );
    assert_eq!(failure.content, b"caxton:refused:too-large");
    // A failure itself has nothing to stand in for it.
    assert_eq!(
        c_router.too_large(home, failure, &c_side),
        TooLarge::Dropped
    );
}

#[test]
fn damaged_frames_of_messages_are_refused_before_anything_is_delivered() {
    let batch = RemoteBatch {
        from: node(1),
        messages: vec![to_remote(
            request_from_instance(),
            Target::Agent("echo".into()),
            Some(request_from_instance().sender),
            &FakeSide::new(&[], &[]),
        )],
    };
    let header = crate::wire::FrameHeader { nonce: 0, seq: 0 };
    let frame = crate::wire::frame_of(crate::wire::FrameKind::Messages, header, &batch.encode());
    let max = crate::wire::MESSAGES_PACKET_MAX + crate::wire::FRAME_OVERHEAD;
    assert_eq!(read_batch(&frame, max), Ok(batch.clone()));
    let mut corrupt = frame.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x10;
    assert_eq!(read_batch(&corrupt, max), Err(WireError::Corrupt));
    assert_eq!(
        read_batch(&frame[..frame.len() - 3], max),
        Err(WireError::Truncated)
    );
    assert_eq!(read_batch(&frame[..10], max), Err(WireError::Truncated));
    // A SWIM frame is not a batch, and garbage inside a good frame does not decode.
    let swim = crate::wire::frame(header, &batch.encode());
    assert_eq!(read_batch(&swim, max), Err(WireError::UnknownVersion));
    let garbage = crate::wire::frame_of(crate::wire::FrameKind::Messages, header, b"\xc1\xc1");
    assert!(matches!(
        read_batch(&garbage, max),
        Err(WireError::Decode(_))
    ));
}

/// Every shape a message takes (each address kind as target and sender,
/// every performative, options set and unset, integers, content and names
/// of each length class) is written by hand as serde writes it and read by
/// hand as serde reads it. A damaged packet is left to serde.
#[test]
fn the_hand_reader_reads_what_serde_reads() {
    let addresses = [
        Address::Agent(AgentId(7)),
        Address::Instance(caxton_messaging::InstanceId {
            agent: AgentId(70_000),
            shard: 300,
            slot: 2,
        }),
        Address::Client {
            port: 65_535,
            id: u32::MAX,
        },
        Address::Remote {
            port: 3,
            token: 1 << 20,
            agent: AgentId(1),
        },
    ];
    let mut messages = Vec::new();
    for (index, performative) in Performative::ALL.into_iter().enumerate() {
        let address = addresses[index % addresses.len()];
        let mut message = RemoteMessage::new(
            if index % 2 == 0 {
                Target::Agent("e".repeat([1, 31, 32, 255, 256][index % 5]))
            } else {
                Target::Address(address)
            },
            performative,
            vec![index as u8; [0, 1, 255, 256, 65_536][index % 5]],
        );
        message.sender = (index % 3 != 0).then_some(address);
        message.conversation_id = [0, 127, 128, 65_535, u64::MAX][index % 5];
        message.reply_with = 1 << (index * 5);
        message.in_reply_to = u64::from(u32::MAX) + index as u64;
        message.priority = index as u8 * 25;
        message.deadline_in_ns = (index % 2 == 1).then_some(5_000_000);
        message.durable = index % 4 == 0;
        message.notice = (index % 3 == 1).then_some(1 << 48);
        message.chained = (index % 3 == 2).then_some(9);
        message.chain_ack = (index % 5 == 3).then_some(11);
        message.sent_unix_ns = 1_800_000_000_000_000_000 + index as u64;
        message.sender_name = (index % 2 == 0).then(|| format!("agent-{index}"));
        message.hop = index as u64 * 1_000;
        messages.push(message);
    }
    let batch = RemoteBatch {
        from: node(1),
        messages,
    };
    let packet = batch.encode();
    // Written by hand, the batch is the bytes serde writes.
    let header = crate::wire::FrameHeader { nonce: 0, seq: 0 };
    assert_eq!(
        batch.encode_frame(header),
        crate::wire::frame_of(crate::wire::FrameKind::Messages, header, &packet)
    );
    assert_eq!(RemoteBatch::decode_by_hand(&packet), Some(batch.clone()));
    assert_eq!(RemoteBatch::decode(&packet), Ok(batch.clone()));
    let empty = RemoteBatch {
        from: node(2),
        messages: Vec::new(),
    };
    assert_eq!(RemoteBatch::decode_by_hand(&empty.encode()), Some(empty));
    // Cut anywhere, or with a byte changed, a packet the hand reader still
    // reads is one serde reads the same.
    for cut in 0..packet.len().min(600) {
        if let Some(read) = RemoteBatch::decode_by_hand(&packet[..cut]) {
            assert_eq!(
                rmp_serde::from_slice::<RemoteBatch>(&packet[..cut]).ok(),
                Some(read)
            );
        }
    }
    for at in 0..packet.len().min(600) {
        let mut damaged = packet.clone();
        damaged[at] ^= 0x5a;
        if let Some(read) = RemoteBatch::decode_by_hand(&damaged) {
            assert_eq!(
                rmp_serde::from_slice::<RemoteBatch>(&damaged).ok(),
                Some(read),
                "byte {at}"
            );
        }
    }
}

/// An age queue loses its settled keys from the front at each push, so
/// with answers in order it stays as long as what waits; a key that waits
/// long keeps the keys behind it only up to twice the bound, then they are
/// swept and the waiting key stays.
#[test]
fn an_age_queue_drops_settled_keys_and_stays_bounded() {
    let mut live: FxHashMap<u32, ()> = FxHashMap::default();
    let mut order = VecDeque::new();
    for key in 0..1_000u32 {
        live.insert(key, ());
        order.push_back(key);
        drop_settled_front(&mut order, &live, 64);
        // Answered in order, four behind.
        if key >= 4 {
            live.remove(&(key - 4));
        }
    }
    assert!(
        order.len() <= 5,
        "in-order answers keep it short: {}",
        order.len()
    );
    // Key 2_000 waits; everything after it is answered at once.
    live.clear();
    order.clear();
    live.insert(2_000, ());
    order.push_back(2_000);
    for key in 2_001..2_400u32 {
        live.insert(key, ());
        order.push_back(key);
        drop_settled_front(&mut order, &live, 64);
        live.remove(&key);
        assert!(order.len() <= 2 * 64 + 1, "bounded: {}", order.len());
    }
    assert_eq!(order.front(), Some(&2_000), "the waiting key is kept");
    drop_settled_front(&mut order, &live, 64);
    assert!(order.iter().filter(|key| live.contains_key(key)).count() == 1);
}
