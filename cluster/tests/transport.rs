//! The cluster transport on real loopback sockets: nodes form a cluster over
#![allow(clippy::field_reassign_with_default)] // each test starts from the defaults and changes the keys it observes
//! QUIC and over TLS on TCP, a node with a foreign certificate is refused,
//! message frames are taken only from peers the cluster's CA vouches for,
//! and the transport keys have their effect on quinn and on sockets.

use std::net::SocketAddr;
use std::time::Duration;

use caxton_cluster::settings::{ClusterSettings, TlsFiles};
use caxton_cluster::tls::{init_certs, NodeTls};
use caxton_cluster::transport::{quic_endpoint, ClusterHandle, ClusterNode, ClusterSnapshot};
use caxton_profiles::{HumanDuration, Profile, TransportKind};

fn profile(kind: TransportKind) -> Profile {
    let mut profile = Profile::default();
    let cluster = &mut profile.coordination.cluster;
    cluster.gossip_interval = HumanDuration::from_millis(50);
    cluster.probe_interval = HumanDuration::from_millis(200);
    cluster.probe_timeout = HumanDuration::from_millis(100);
    cluster.listen_address = Some("127.0.0.1:0".into());
    profile.transport.kind = kind;
    profile
}

struct Running {
    handle: ClusterHandle,
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
}

fn start(profile: &Profile, name: &str, seeds: &[SocketAddr], tls: Option<TlsFiles>) -> Running {
    start_with(profile, name, seeds, tls, None)
}

/// [`start`], handing messages from other nodes to `local`.
fn start_with(
    profile: &Profile,
    name: &str,
    seeds: &[SocketAddr],
    tls: Option<TlsFiles>,
    local: Option<CountingSide>,
) -> Running {
    let mut settings = ClusterSettings::from_profile(profile, &[])
        .expect("valid")
        .expect("a cluster");
    settings.node_name = name.into();
    settings.default_name = false;
    settings.seeds = seeds.to_vec();
    settings.tls = tls;
    let node = ClusterNode::bind(settings).expect("binds");
    let addr = node.local_addr();
    let (handle, queries) = ClusterHandle::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(node.run_with(queries, local, async move {
        let _ = stopped.await;
    }));
    Running { handle, addr, stop }
}

async fn wait_for(
    node: &Running,
    what: &str,
    done: impl Fn(&ClusterSnapshot) -> bool,
) -> ClusterSnapshot {
    for _ in 0..200 {
        let snapshot = node.handle.snapshot().await.expect("running");
        if done(&snapshot) {
            return snapshot;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: {:?}", node.handle.snapshot().await);
}

fn files(directory: &std::path::Path, ca: &std::path::Path, name: &str) -> TlsFiles {
    TlsFiles {
        ca: ca.display().to_string(),
        cert: directory.join(format!("{name}.pem")).display().to_string(),
        key: directory
            .join(format!("{name}-key.pem"))
            .display()
            .to_string(),
    }
}

async fn three_nodes_agree(kind: TransportKind) {
    let certs = tempfile::tempdir().expect("a directory");
    let (ca, _) = init_certs(certs.path(), &["a".into(), "b".into(), "c".into()], false)
        .expect("certificates");
    let profile = profile(kind);
    let a = start(&profile, "a", &[], Some(files(certs.path(), &ca, "a")));
    let b = start(
        &profile,
        "b",
        &[a.addr],
        Some(files(certs.path(), &ca, "b")),
    );
    let c = start(
        &profile,
        "c",
        &[a.addr],
        Some(files(certs.path(), &ca, "c")),
    );
    for node in [&a, &b, &c] {
        let snapshot = wait_for(node, "two others alive", |snapshot| {
            snapshot.counts.alive == 2
        })
        .await;
        assert!(snapshot.authenticated);
        let mut names: Vec<_> = snapshot
            .members
            .iter()
            .map(|member| member.name.clone())
            .collect();
        names.push(snapshot.node.name.to_string());
        names.sort();
        assert_eq!(names, ["a", "b", "c"]);
    }
    let counts = a.handle.snapshot().await.expect("running").transport_counts;
    match kind {
        TransportKind::Quic => assert!(counts.frames_as_datagrams > 0, "{counts:?}"),
        TransportKind::Tcp => assert!(
            counts.frames_on_streams > 0 && counts.frames_as_datagrams == 0,
            "{counts:?}"
        ),
    }
    // A graceful leave is announced: the others declare c down on its word,
    // never suspecting it first (a failure is found by a missed probe, and
    // suspected before it is declared down).
    let suspicions_of_c = |snapshot: &ClusterSnapshot| {
        snapshot
            .members
            .iter()
            .find(|member| member.name == "c")
            .map(|member| member.suspicions)
    };
    let mut before = Vec::new();
    for node in [&a, &b] {
        before.push(suspicions_of_c(
            &node.handle.snapshot().await.expect("running"),
        ));
    }
    let _ = c.stop.send(());
    for (node, before) in [&a, &b].into_iter().zip(before) {
        let left = wait_for(node, "c seen to leave", |snapshot| {
            snapshot.counts.alive == 1 && snapshot.counts.down == 1
        })
        .await;
        assert!(left.membership.declared_down >= 1);
        assert!(before.is_some(), "c was a member");
        assert_eq!(suspicions_of_c(&left), before, "the leave was suspected");
    }
    drop((a.stop, b.stop));
}

#[tokio::test]
async fn three_nodes_form_a_cluster_over_quic() {
    three_nodes_agree(TransportKind::Quic).await;
}

#[tokio::test]
async fn three_nodes_form_a_cluster_over_tls_on_tcp() {
    three_nodes_agree(TransportKind::Tcp).await;
}

/// The cluster's CA with certificates for `a` and `b`, and another CA with
/// one for `intruder`: (directory, CA file) of each.
fn cluster_and_foreign_cas() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let ours = tempfile::tempdir().expect("a directory");
    let theirs = tempfile::tempdir().expect("a directory");
    let (ca, _) = init_certs(ours.path(), &["a".into(), "b".into()], false).expect("certificates");
    let (other_ca, _) =
        init_certs(theirs.path(), &["intruder".into()], false).expect("certificates");
    (ours, ca, theirs, other_ca)
}

#[tokio::test]
async fn a_node_with_a_certificate_from_another_ca_is_refused() {
    let (ours, ca, theirs, other_ca) = cluster_and_foreign_cas();
    let profile = profile(TransportKind::Quic);
    let a = start(&profile, "a", &[], Some(files(ours.path(), &ca, "a")));
    let b = start(&profile, "b", &[a.addr], Some(files(ours.path(), &ca, "b")));
    let intruder = start(
        &profile,
        "intruder",
        &[a.addr],
        Some(files(theirs.path(), &other_ca, "intruder")),
    );
    wait_for(&a, "b joined", |snapshot| snapshot.counts.alive == 1).await;
    wait_for(&a, "the intruder refused", |snapshot| {
        snapshot.transport_counts.handshakes_refused >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let view = a.handle.snapshot().await.expect("running");
    assert!(
        view.members.iter().all(|member| member.name != "intruder"),
        "{view:?}"
    );
    let outside = intruder.handle.snapshot().await.expect("running");
    assert_eq!(outside.counts.alive, 0, "the intruder sees nobody");
    drop((a.stop, b.stop, intruder.stop));
}

#[tokio::test]
async fn without_datagrams_frames_travel_on_streams() {
    let mut profile = profile(TransportKind::Quic);
    profile.transport.quic.enable_datagram = false;
    let a = start(&profile, "a", &[], None);
    let b = start(&profile, "b", &[a.addr], None);
    let view = wait_for(&a, "b joined", |snapshot| snapshot.counts.alive == 1).await;
    assert!(!view.authenticated);
    assert_eq!(view.transport_counts.frames_as_datagrams, 0);
    assert!(view.transport_counts.frames_on_streams > 0);
    drop((a.stop, b.stop));
}

/// Two bare endpoints with the profile's transport settings.
fn endpoints(quic: &caxton_profiles::QuicConfig) -> (quinn::Endpoint, quinn::Endpoint) {
    let tls = NodeTls::unauthenticated(quic.enable_0rtt).expect("tls");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    (
        quic_endpoint(any, &tls, quic).expect("server"),
        quic_endpoint(any, &tls, quic).expect("client"),
    )
}

async fn connect(
    client: &quinn::Endpoint,
    server: &quinn::Endpoint,
) -> (quinn::Connection, quinn::Connection) {
    let address = server.local_addr().expect("bound");
    let accepting = async {
        server
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("accepted")
    };
    let connecting = client
        .connect(address, caxton_cluster::tls::SERVER_NAME)
        .expect("dial");
    let (served, outgoing) = tokio::join!(accepting, connecting);
    (outgoing.expect("connected"), served)
}

#[tokio::test]
async fn idle_timeout_closes_quiet_connections_and_keep_alives_hold_them() {
    let mut quic = caxton_profiles::QuicConfig::default();
    quic.idle_timeout = HumanDuration::from_millis(200);
    quic.keep_alive_interval = HumanDuration::from_millis(0);
    let (server, client) = endpoints(&quic);
    let (connection, _served) = connect(&client, &server).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        matches!(
            connection.close_reason(),
            Some(quinn::ConnectionError::TimedOut)
        ),
        "{:?}",
        connection.close_reason()
    );
    quic.keep_alive_interval = HumanDuration::from_millis(50);
    let (server, client) = endpoints(&quic);
    let (connection, _served) = connect(&client, &server).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(connection.close_reason().is_none());
}

#[tokio::test]
async fn max_concurrent_streams_bounds_the_streams_a_peer_opens() {
    let mut quic = caxton_profiles::QuicConfig::default();
    quic.max_concurrent_streams = 2;
    let (server, client) = endpoints(&quic);
    let (connection, _served) = connect(&client, &server).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = connection.open_uni().await.expect("within the bound");
        stream.write_all(b"x").await.expect("written");
        open.push(stream);
    }
    let third = tokio::time::timeout(Duration::from_millis(300), connection.open_uni()).await;
    assert!(third.is_err(), "a third stream waits for the peer");
}

#[tokio::test]
async fn stream_receive_window_bounds_what_an_unread_stream_takes() {
    let mut quic = caxton_profiles::QuicConfig::default();
    quic.stream_receive_window = caxton_profiles::ByteSize::kib(16);
    let (server, client) = endpoints(&quic);
    let (connection, _served) = connect(&client, &server).await;
    let mut stream = connection.open_uni().await.expect("a stream");
    let chunk = [0u8; 1024];
    let mut written = 0usize;
    while let Ok(Ok(count)) =
        tokio::time::timeout(Duration::from_millis(200), stream.write(&chunk)).await
    {
        written += count;
        assert!(written <= 64 * 1024, "far past the window");
    }
    assert!(
        (8 * 1024..=16 * 1024).contains(&written),
        "{written} bytes before the window closed"
    );
}

#[tokio::test]
async fn connection_receive_window_bounds_what_all_unread_streams_take() {
    let mut quic = caxton_profiles::QuicConfig::default();
    quic.stream_receive_window = caxton_profiles::ByteSize::kib(16);
    quic.connection_receive_window = caxton_profiles::ByteSize::kib(24);
    let (server, client) = endpoints(&quic);
    let (connection, _served) = connect(&client, &server).await;
    let chunk = [0u8; 1024];
    let mut total = 0usize;
    for _ in 0..3 {
        let mut stream = connection.open_uni().await.expect("a stream");
        while let Ok(Ok(count)) =
            tokio::time::timeout(Duration::from_millis(200), stream.write(&chunk)).await
        {
            total += count;
            assert!(total <= 64 * 1024, "far past the window");
        }
    }
    // Three streams could take 48KiB by their own windows; the connection's stops them at 24KiB.
    assert!(
        total <= 24 * 1024 && total > 16 * 1024,
        "{total} bytes before the connection's window closed"
    );
}

#[tokio::test]
async fn congestion_control_picks_the_controller() {
    for (choice, expect_bbr) in [
        (caxton_profiles::CongestionControl::Bbr, true),
        (caxton_profiles::CongestionControl::Cubic, false),
    ] {
        let mut quic = caxton_profiles::QuicConfig::default();
        quic.congestion_control = choice;
        let (server, client) = endpoints(&quic);
        let (connection, _served) = connect(&client, &server).await;
        let controller = connection.congestion_state().into_any();
        assert_eq!(
            controller.is::<quinn::congestion::Bbr>(),
            expect_bbr,
            "{choice:?}"
        );
        assert_eq!(
            controller.is::<quinn::congestion::Cubic>(),
            !expect_bbr,
            "{choice:?}"
        );
    }
}

#[tokio::test]
async fn enable_0rtt_lets_a_resumed_connection_send_at_once() {
    for enabled in [true, false] {
        let mut quic = caxton_profiles::QuicConfig::default();
        quic.enable_0rtt = enabled;
        let (server, client) = endpoints(&quic);
        let (first, served) = connect(&client, &server).await;
        // Let the session ticket arrive, then close.
        tokio::time::sleep(Duration::from_millis(100)).await;
        first.close(0u32.into(), b"");
        drop(served);
        let address = server.local_addr().expect("bound");
        let accepting = tokio::spawn({
            let server = server.clone();
            async move {
                if let Some(incoming) = server.accept().await {
                    let _ = incoming.await;
                }
            }
        });
        let connecting = client
            .connect(address, caxton_cluster::tls::SERVER_NAME)
            .expect("dial");
        let zero_rtt = connecting.into_0rtt().is_ok();
        assert_eq!(zero_rtt, enabled, "0-RTT with enable_0rtt {enabled}");
        accepting.abort();
    }
}

#[test]
fn tcp_keys_set_the_socket_options() {
    let mut tcp = caxton_profiles::TcpConfig::default();
    tcp.nodelay = true;
    tcp.keepalive_time = HumanDuration::from_secs(7);
    tcp.keepalive_interval = HumanDuration::from_secs(3);
    tcp.keepalive_probes = 4;
    tcp.send_buffer_size = caxton_profiles::ByteSize::kib(64);
    tcp.recv_buffer_size = caxton_profiles::ByteSize::kib(128);
    tcp.linger = 2;
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    caxton_cluster::transport::configure_tcp(&socket2::SockRef::from(&socket), &tcp)
        .expect("configured");
    assert!(socket.tcp_nodelay().expect("nodelay"));
    assert!(socket.keepalive().expect("keepalive"));
    assert_eq!(
        socket.tcp_keepalive_time().expect("time"),
        Duration::from_secs(7)
    );
    assert_eq!(
        socket.tcp_keepalive_interval().expect("interval"),
        Duration::from_secs(3)
    );
    assert_eq!(socket.tcp_keepalive_retries().expect("retries"), 4);
    // Linux doubles the buffer sizes it is given, for its own bookkeeping.
    assert_eq!(socket.send_buffer_size().expect("send buffer"), 128 * 1024);
    assert_eq!(
        socket.recv_buffer_size().expect("receive buffer"),
        256 * 1024
    );
    assert_eq!(
        socket.linger().expect("linger"),
        Some(Duration::from_secs(2))
    );
    tcp.nodelay = false;
    tcp.keepalive = false;
    caxton_cluster::transport::configure_tcp(&socket2::SockRef::from(&socket), &tcp)
        .expect("configured");
    assert!(!socket.tcp_nodelay().expect("nodelay"));
    assert!(!socket.keepalive().expect("keepalive"));
}

#[tokio::test]
async fn a_quic_dial_that_gets_no_answer_fails_within_its_limit() {
    // A UDP socket that takes every packet and answers none: the handshake
    // neither completes nor fails until the limit (quinn alone would wait
    // for the 2-minute idle timeout).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("a socket");
    let address = silent.local_addr().expect("an address");
    let tls = NodeTls::unauthenticated(false).expect("tls");
    let quic = caxton_profiles::QuicConfig::default();
    assert!(quic.idle_timeout.get() > Duration::from_secs(60));
    let endpoint =
        quic_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), &tls, &quic).expect("an endpoint");
    let limit = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let error = caxton_cluster::transport::dial_quic(&endpoint, address, limit)
        .await
        .expect_err("no connection");
    assert!(
        error.contains("no answer to the QUIC handshake within 300ms"),
        "{error}"
    );
    // A guard, not a timing: without the limit this is the idle timeout.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(caxton_cluster::transport::QUIC_HANDSHAKE_MAX < quic.idle_timeout.get());
}

#[tokio::test]
async fn connect_timeout_bounds_a_dial_that_gets_no_answer() {
    // A listener whose accept queue is full: the kernel drops further SYNs,
    // so a dial neither connects nor fails until the timeout.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bound");
    listener.listen(0).expect("listening");
    let address = listener
        .local_addr()
        .expect("an address")
        .as_socket()
        .expect("inet");
    let mut parked = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(address),
        )
        .await
        {
            parked.push(stream);
        }
    }
    let mut tcp = caxton_profiles::TcpConfig::default();
    tcp.connect_timeout = HumanDuration::from_millis(300);
    let tls = NodeTls::unauthenticated(false).expect("tls");
    let connector = tokio_rustls::TlsConnector::from(tls.client);
    let started = std::time::Instant::now();
    let error = caxton_cluster::transport::dial_tcp(address, &tcp, connector)
        .await
        .expect_err("no connection");
    assert!(error.contains("connect_timeout"), "{error}");
    // A guard, not a timing: the kernel's own connect timeout is minutes.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up after {:?}",
        started.elapsed()
    );
}

/// A node's shards, as far as remote routing sees them: one agent, `echo`,
/// whose deliveries are counted, and how many of them wait to be rung.
struct CountingSide {
    delivered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    unrung: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl caxton_cluster::remote::LocalSide for CountingSide {
    fn take_outbound(&mut self, _max: usize, _out: &mut Vec<caxton_messaging::Envelope>) {}

    fn deliver(
        &mut self,
        _envelope: caxton_messaging::Envelope,
        _route_key: u64,
    ) -> Result<(), caxton_messaging::Envelope> {
        self.delivered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.unrung
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn ring_deliveries(&mut self) {
        self.unrung.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    fn resolve_local(&self, name: &str) -> Option<caxton_messaging::AgentId> {
        (name == "echo").then_some(caxton_messaging::AgentId(0))
    }

    fn remote_name(&self, _id: caxton_messaging::AgentId) -> Option<String> {
        None
    }

    fn resolve_anywhere(&self, name: &str) -> Option<caxton_messaging::AgentId> {
        self.resolve_local(name)
    }

    fn agent_name(&self, _address: caxton_messaging::Address) -> Option<String> {
        None
    }

    fn participant(&self) -> u16 {
        1
    }

    fn now_ns(&self) -> u64 {
        0
    }

    fn unix_ns_at(&self, _now_ns: u64) -> u64 {
        0
    }

    fn wait(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::pending()
    }

    fn remote_agents_changed(&mut self, _names: Vec<String>) {}
}

/// A frame of one message for `echo`, claiming to come from `from`.
fn message_frame(from: SocketAddr) -> Vec<u8> {
    use caxton_cluster::remote::{RemoteBatch, RemoteMessage, Target};
    use caxton_cluster::wire::{frame_of, FrameHeader, FrameKind, NodeId};
    let batch = RemoteBatch {
        from: NodeId::new("b", from, 1),
        messages: vec![RemoteMessage::new(
            Target::Agent("echo".into()),
            caxton_messaging::Performative::Inform,
            b"hello".to_vec(),
        )],
    };
    frame_of(
        FrameKind::Messages,
        FrameHeader { nonce: 0, seq: 0 },
        &batch.encode(),
    )
}

/// Dial `to` with `tls` and send `frame` on a stream; whether the frame
/// left (a refused handshake may only show once the server has read the
/// client's certificate, so a dial that seems to succeed still tries).
async fn dial_and_send(tls: &NodeTls, to: SocketAddr, frame: &[u8]) -> bool {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let quic = caxton_profiles::QuicConfig::default();
    let endpoint = quic_endpoint(any, tls, &quic).expect("endpoint");
    let Ok(connecting) = endpoint.connect(to, caxton_cluster::tls::SERVER_NAME) else {
        return false;
    };
    let Ok(connection) = connecting.await else {
        return false;
    };
    let Ok(mut stream) = connection.open_uni().await else {
        return false;
    };
    let sent = stream.write_all(frame).await.is_ok() && stream.finish().is_ok();
    // Until the server has everything (or has closed the connection).
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.stopped()).await;
    connection.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    sent
}

#[tokio::test]
async fn message_frames_are_taken_only_from_authenticated_peers() {
    let (ours, ca, theirs, other_ca) = cluster_and_foreign_cas();
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let unrung = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let side = CountingSide {
        delivered: std::sync::Arc::clone(&delivered),
        unrung: std::sync::Arc::clone(&unrung),
    };
    let a = start_with(
        &profile(TransportKind::Quic),
        "a",
        &[],
        Some(files(ours.path(), &ca, "a")),
        Some(side),
    );
    let addr = a.addr;
    let count = || delivered.load(std::sync::atomic::Ordering::SeqCst);

    // A peer with a certificate from the cluster's CA: its frame is read
    // and its message handed to the shards.
    let trusted = NodeTls::from_files(&files(ours.path(), &ca, "b"), false).expect("tls");
    assert!(dial_and_send(&trusted, addr, &message_frame(addr)).await);
    wait_for(&a, "the trusted peer's message taken", |snapshot| {
        snapshot.remote.received == 1
    })
    .await;
    assert_eq!(count(), 1, "the authenticated peer's message arrives");
    // And its receiver is rung before the loop waits again.
    let rung_by = std::time::Instant::now() + Duration::from_secs(10);
    while unrung.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        assert!(
            std::time::Instant::now() < rung_by,
            "the delivery was never rung"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A peer with another CA's certificate, and one with none at all: the
    // handshake is refused and counted, and nothing either sent arrives.
    let foreign =
        NodeTls::from_files(&files(theirs.path(), &other_ca, "intruder"), false).expect("tls");
    let anonymous = NodeTls::unauthenticated(false).expect("tls");
    for intruder in [&foreign, &anonymous] {
        let _ = dial_and_send(intruder, addr, &message_frame(addr)).await;
    }
    let refused = wait_for(&a, "both intruders refused", |snapshot| {
        snapshot.transport_counts.handshakes_refused >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(),
        1,
        "nothing from an unauthenticated peer arrives: {refused:?}"
    );
    let view = a.handle.snapshot().await.expect("running");
    assert_eq!(view.remote.received, 1, "{:?}", view.remote);
    drop(a.stop);
}
