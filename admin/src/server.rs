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
use crate::controller::{ClientPool, ControllerHandle};

/// How long a connection may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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
    pub(crate) clients: ClientPool,
    pub(crate) cluster: Option<ClusterHandle>,
    pub(crate) cpu_profiler: crate::cpu_profile::CpuProfiler,
}

/// A response body.
pub(crate) type Reply = Response<Full<Bytes>>;

/// Serve the endpoint on `listener` until `stop` resolves. Runs on the
/// runtime it is awaited on (the gossip shard's current-thread runtime).
pub async fn serve(
    listener: std::net::TcpListener,
    settings: AdminSettings,
    controller: ControllerHandle,
    clients: ClientPool,
    cluster: Option<ClusterHandle>,
    stop: impl std::future::Future<Output = ()>,
) {
    let max_connections = settings.max_connections.max(1);
    let context = Arc::new(Context {
        settings,
        controller,
        clients,
        cluster,
        cpu_profiler: crate::cpu_profile::CpuProfiler::spawn(),
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
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let context = Arc::clone(&context);
                async move { Ok::<_, Infallible>(respond(request, &context).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                debug!(%peer, "admin connection ended: {error}");
            }
            drop(permit);
        });
    }
}

/// Check the token and the body size, then hand the request to its route.
async fn respond(request: Request<Incoming>, context: &Context) -> Reply {
    if let Some(token) = &context.settings.token {
        let offered = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
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
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                return api::error(
                    StatusCode::BAD_REQUEST,
                    "bad-body",
                    format!("cannot read the request body: {error}"),
                )
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if body.len() + data.len() > limit_bytes {
            tokio::spawn(discard_rest(incoming));
            return too_large(limit);
        }
        body.extend_from_slice(&data);
    }
    let body = Bytes::from(body);
    api::route(&parts, body, context).await
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
