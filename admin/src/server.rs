//! The HTTP side of the admin endpoint, on the gossip shard's current-thread
//! tokio runtime: hyper's HTTP/1.1, a bound on connections, the
//! access token, and the request body limit. What each route does is in
//! [`crate::api`].

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tracing::{debug, warn};

use caxton_cluster::transport::ClusterHandle;

use crate::api;
use crate::controller::ControllerHandle;
use crate::sender::SendPool;

/// How long a connection may take to send a request's headers, which is
/// also how long a kept-alive connection may sit idle between requests
/// holding one of `max_connections` permits.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request's body may go without a byte arriving. Each
/// connection holds one of `max_connections` permits while its request is
/// read: without this bound, a few dozen clients that send headers and
/// then stall mid-body would hold every permit and lock the endpoint out
/// until they closed.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a whole request body may take: a client that trickles a byte
/// every few seconds would otherwise pass the idle bound for ever.
const BODY_TIME_MAX: Duration = Duration::from_secs(60);

/// Reads the global allocator's statistics: (name, bytes) pairs.
pub type AllocatorStats = fn() -> Vec<(&'static str, u64)>;

/// A heap profile: a gzipped pprof protobuf and its flame graph (SVG).
pub type HeapDump = (Vec<u8>, Vec<u8>);

/// The global allocator's heap profiler, when the binary has one
/// (`engine profile memory`). Each hook may block; the endpoint calls them
/// off its runtime.
#[derive(Clone, Copy, Debug)]
pub struct HeapProfiler {
    /// Start (`true`) or stop (`false`) sampling allocations.
    pub set_active: fn(bool) -> Result<(), String>,
    /// The live heap now, as sampled since the start: a gzipped pprof
    /// protobuf and a flame graph SVG.
    pub dump: fn() -> Result<HeapDump, String>,
}

/// The endpoint's settings, from `observability.admin` and the environment.
#[derive(Clone, Debug)]
pub struct AdminSettings {
    /// The bearer token requests must carry, if any.
    pub token: Option<String>,
    /// Largest request body accepted.
    pub max_upload_bytes: u64,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Where on-demand HDR dumps go (`observability.hdr_log.directory`).
    pub hdr_directory: Option<PathBuf>,
    /// The global allocator's statistics (name, bytes), when the binary can
    /// read them: `/v1/node` shows them under `allocator`.
    pub allocator_stats: Option<AllocatorStats>,
    /// The allocator's heap profiler, if any: `/v1/profile/memory`.
    pub heap_profiler: Option<HeapProfiler>,
    /// The priority classes' names, most urgent first
    /// (`messaging.priority_routing.queues`): a send may name its class.
    pub priority_classes: Vec<String>,
}

/// What every request handler may use.
pub(crate) struct Context {
    pub(crate) settings: AdminSettings,
    pub(crate) controller: ControllerHandle,
    pub(crate) senders: SendPool,
    pub(crate) cluster: Option<ClusterHandle>,
    pub(crate) cpu_profiler: crate::cpu_profile::CpuProfiler,
    /// A heap profile and a trace are running (started and not stopped):
    /// a second start of either is refused, so one operator's request
    /// never takes over another's profile. (The endpoint's own state,
    /// never touched by a shard.)
    pub(crate) heap_running: std::sync::atomic::AtomicBool,
    pub(crate) trace_running: std::sync::atomic::AtomicBool,
}

/// A response body.
pub(crate) type Reply = Response<Full<Bytes>>;

/// Serve the endpoint on `listener` until `stop` resolves. Runs on the
/// runtime it is awaited on (the gossip shard's current-thread runtime).
pub async fn serve(
    listener: std::net::TcpListener,
    settings: AdminSettings,
    controller: ControllerHandle,
    senders: SendPool,
    cluster: Option<ClusterHandle>,
    stop: impl std::future::Future<Output = ()>,
) {
    let max_connections = settings.max_connections.max(1);
    let context = Arc::new(Context {
        settings,
        controller,
        senders,
        cluster,
        cpu_profiler: crate::cpu_profile::CpuProfiler::spawn(),
        heap_running: std::sync::atomic::AtomicBool::new(false),
        trace_running: std::sync::atomic::AtomicBool::new(false),
    });
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(listener) => listener,
        Err(error) => {
            warn!("admin endpoint not started: {error}");
            return;
        }
    };
    // The agents deployed at boot (by the profile, or recovered from
    // storage) are this node's first list in the cluster directory.
    {
        let context = Arc::clone(&context);
        tokio::spawn(async move { crate::api::publish_agents(&context).await });
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections));
    // Told to each connection when the node stops: idle ones close, and a
    // request in flight (a send waiting for its answer) is answered first.
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    tokio::pin!(stop);
    loop {
        // Past the bound, connections wait in the kernel's backlog.
        let permit = tokio::select! {
            () = &mut stop => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!("admin endpoint: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let context = Arc::clone(&context);
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let context = Arc::clone(&context);
                async move { Ok::<_, Infallible>(respond(request, &context).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = async {
                    let _ = stopped.wait_for(|stopped| *stopped).await;
                } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                debug!(%peer, "admin connection ended: {error}");
            }
            drop(permit);
        });
    }
    // The shards answer what they still hold (`caxton:shutting-down`) as
    // they stop: let the requests waiting for those answers write them,
    // rather than cutting their connections, for a bounded time.
    let _ = stopping.send(true);
    context.senders.stopping(SENDS_STOP_GRACE);
    // Callers that arrive meanwhile are told the node is stopping (503
    // `shutting-down`), rather than left in the listener's backlog to be
    // reset when it closes.
    let refusing = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, Infallible>(crate::api::shutting_down())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let drained = tokio::time::timeout(
        STOP_GRACE,
        permits.acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX)),
    )
    .await;
    refusing.abort();
    if drained.is_err() {
        warn!(
            "admin endpoint: requests still in flight {} s after the stop; closing them",
            STOP_GRACE.as_secs()
        );
    }
}

/// How long a stopping endpoint waits for requests in flight to be answered.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long, of that, sends wait for the stopping shards' answers before
/// those still waiting (for replies that will never come) are answered
/// `shutting-down` themselves: well within [`STOP_GRACE`].
const SENDS_STOP_GRACE: Duration = Duration::from_secs(1);

/// Check the token and the body size, then hand the request to its route.
async fn respond(request: Request<Incoming>, context: &Context) -> Reply {
    if let Some(token) = &context.settings.token {
        let offered = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            // The scheme's name is case-insensitive (RFC 7235).
            .and_then(|value| {
                value
                    .get(..7)
                    .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                    .map(|_| &value[7..])
            });
        match offered {
            Some(offered) if constant_time_eq(offered.as_bytes(), token.as_bytes()) => {}
            Some(_) => {
                return api::error(
                    StatusCode::UNAUTHORIZED,
                    "bad-token",
                    "the access token does not match".into(),
                )
            }
            None => {
                return api::error(
                    StatusCode::UNAUTHORIZED,
                    "missing-token",
                    "this endpoint needs `Authorization: Bearer <token>` \
                     (observability.admin.access_token or CAXTON_ADMIN_TOKEN)"
                        .into(),
                )
            }
        }
    }
    let limit = context.settings.max_upload_bytes;
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        tokio::spawn(discard_rest(request.into_body()));
        return too_large(limit);
    }
    let (parts, mut incoming) = request.into_parts();
    let limit_bytes = usize::try_from(limit).unwrap_or(usize::MAX);
    let body = match tokio::time::timeout(
        BODY_TIME_MAX,
        read_body(&mut incoming, limit_bytes, BODY_IDLE_TIMEOUT),
    )
    .await
    .unwrap_or(Err(BodyFault::Stalled))
    {
        Ok(body) => body,
        Err(BodyFault::TooLarge) => {
            tokio::spawn(discard_rest(incoming));
            return too_large(limit);
        }
        Err(BodyFault::Unreadable(error)) => {
            return api::error(
                StatusCode::BAD_REQUEST,
                "bad-body",
                format!("cannot read the request body: {error}"),
            )
        }
        // Answered, and the connection (its body unread) closed after.
        Err(BodyFault::Stalled) => {
            return api::error(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                format!(
                "the request body stalled ({} s without a byte, or not whole within {} s); closing",
                BODY_IDLE_TIMEOUT.as_secs(),
                BODY_TIME_MAX.as_secs()
            ),
            )
        }
    };
    api::route(&parts, body, context).await
}

/// Why a request body was not read whole.
#[derive(Debug, PartialEq, Eq)]
enum BodyFault {
    /// Over the upload limit.
    TooLarge,
    /// The connection failed while it was read.
    Unreadable(String),
    /// No byte came for the idle bound.
    Stalled,
}

/// Read a request body up to `limit_bytes`, giving up when no frame comes
/// for `idle`.
async fn read_body<B>(body: &mut B, limit_bytes: usize, idle: Duration) -> Result<Bytes, BodyFault>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut read = Vec::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(BodyFault::Stalled),
            Ok(None) => return Ok(Bytes::from(read)),
            Ok(Some(Err(error))) => return Err(BodyFault::Unreadable(error.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if read.len() + data.len() > limit_bytes {
            return Err(BodyFault::TooLarge);
        }
        read.extend_from_slice(&data);
    }
}

/// The most of an oversized body read and thrown away, and for how long.
const DISCARD_BYTES_MAX: u64 = 1 << 30;
const DISCARD_TIME_MAX: Duration = Duration::from_secs(10);

/// Read and drop what is left of an oversized body while the 413 goes out.
/// A client still writing its upload when the connection closed would see
/// only a broken write, not the answer saying why; reading on lets it
/// finish and read the answer. Bounded in bytes and time, so an endless
/// upload costs the endpoint little.
async fn discard_rest(mut body: Incoming) {
    let mut read = 0u64;
    let _ = tokio::time::timeout(DISCARD_TIME_MAX, async {
        while read < DISCARD_BYTES_MAX {
            match body.frame().await {
                Some(Ok(frame)) => {
                    read += frame.data_ref().map_or(0, |data| data.len() as u64);
                }
                _ => break,
            }
        }
    })
    .await;
}

fn too_large(limit: u64) -> Reply {
    api::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        format!("the request body is over observability.admin.max_upload_size ({limit} bytes)"),
    )
}

/// Compare without leaking, through timing, how much of a guess was right.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use hyper::body::{Body, Frame};

    use super::*;

    /// A body that sends its chunks, then either ends or stalls for good.
    struct Chunks {
        chunks: Vec<&'static [u8]>,
        stall: bool,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.chunks.is_empty() {
                return if self.stall {
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                };
            }
            let chunk = self.chunks.remove(0);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(chunk)))))
        }
    }

    #[tokio::test]
    async fn a_body_is_read_whole_refused_past_the_limit_and_given_up_when_it_stalls() {
        let idle = Duration::from_millis(50);
        let mut whole = Chunks {
            chunks: vec![b"ab", b"cd"],
            stall: false,
        };
        assert_eq!(
            read_body(&mut whole, 4, idle).await,
            Ok(Bytes::from_static(b"abcd"))
        );
        let mut large = Chunks {
            chunks: vec![b"ab", b"cde"],
            stall: false,
        };
        assert_eq!(
            read_body(&mut large, 4, idle).await,
            Err(BodyFault::TooLarge)
        );
        // Headers sent, one byte of the body, then nothing: given up, so
        // the connection's permit comes back.
        let mut stalled = Chunks {
            chunks: vec![b"a"],
            stall: true,
        };
        assert_eq!(
            read_body(&mut stalled, 100, idle).await,
            Err(BodyFault::Stalled)
        );
    }
}
