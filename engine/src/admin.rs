//! Starting the admin endpoint and the periodic HDR log: everything that can
//! be refused (an address in use, a public address without a token, a data
//! directory that cannot be written) is checked here, before any shard starts.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use caxton_admin::{AdminSettings, TOKEN_ENV};
use caxton_profiles::{LoadedProfile, ProfileErrorKind, Violation};
use caxton_telemetry::HdrLogWriter;
use tracing::{info, warn};

use crate::commands::CommandError;

/// A profile key's value refused at start, located like a load error.
pub(crate) fn refuse(
    loaded: &LoadedProfile,
    key: &str,
    message: String,
    hint: &str,
) -> CommandError {
    CommandError::BadInput(
        loaded
            .reject(
                ProfileErrorKind::InvalidValue,
                Violation {
                    key: key.into(),
                    message,
                    hint: (!hint.is_empty()).then(|| hint.to_owned()),
                },
            )
            .to_string(),
    )
}

/// The access token: `CAXTON_ADMIN_TOKEN` if set, else the profile's.
pub fn token(loaded: &LoadedProfile) -> Result<Option<String>, CommandError> {
    match std::env::var(TOKEN_ENV) {
        Ok(token) if !token.is_empty() => {
            if token.len() < 16 || token.chars().any(char::is_whitespace) {
                return Err(CommandError::BadInput(format!(
                    "{TOKEN_ENV} is too short or contains whitespace; use at least 16 characters without spaces"
                )));
            }
            Ok(Some(token))
        }
        _ => Ok(loaded.profile.observability.admin.access_token.clone()),
    }
}

/// The bound listener and settings of the admin endpoint, or `None` when
/// `observability.admin.enabled` is false.
pub fn prepare(
    loaded: &LoadedProfile,
) -> Result<Option<(TcpListener, AdminSettings)>, CommandError> {
    let admin = &loaded.profile.observability.admin;
    if !admin.enabled {
        info!("admin endpoint disabled (observability.admin.enabled: false)");
        return Ok(None);
    }
    let token = token(loaded)?;
    if !admin.listen.ip().is_loopback() && token.is_none() {
        return Err(refuse(
            loaded,
            "observability.admin.listen",
            format!(
                "{} is not a loopback address, and the endpoint has no access token",
                admin.listen
            ),
            "set observability.admin.access_token or CAXTON_ADMIN_TOKEN, or listen on 127.0.0.1",
        ));
    }
    let listener = TcpListener::bind(admin.listen).map_err(|error| {
        refuse(
            loaded,
            "observability.admin.listen",
            format!("cannot listen on {}: {error}", admin.listen),
            "pick a free port (0 picks one and logs it), or stop the engine already there",
        )
    })?;
    Ok(Some((
        listener,
        AdminSettings {
            token,
            max_upload_bytes: admin.max_upload_size.bytes(),
            max_connections: admin.max_connections as usize,
            hdr_directory: loaded
                .profile
                .observability
                .hdr_log
                .directory
                .as_ref()
                .map(PathBuf::from),
            allocator_stats: Some(allocator_stats),
            heap_profiler: crate::heap::profiler(),
            priority_classes: loaded
                .profile
                .messaging
                .priority_routing
                .by_urgency()
                .iter()
                .map(|class| class.name.clone())
                .collect(),
        },
    )))
}

/// The periodic HDR log, when `observability.hdr_log.directory` is set: the
/// directory is created, and the log is `caxton-<unix seconds>-<pid>.hlog` in it.
pub fn open_hdr_log(
    loaded: &LoadedProfile,
) -> Result<Option<(HdrLogWriter, Duration)>, CommandError> {
    let config = &loaded.profile.observability.hdr_log;
    let Some(directory) = &config.directory else {
        return Ok(None);
    };
    let key = "observability.hdr_log.directory";
    std::fs::create_dir_all(directory).map_err(|error| {
        refuse(
            loaded,
            key,
            format!("cannot create `{directory}`: {error}"),
            "",
        )
    })?;
    let start = SystemTime::now();
    let stamp = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let path = PathBuf::from(directory).join(format!("caxton-{stamp}-{}.hlog", std::process::id()));
    let writer = HdrLogWriter::create(
        &path,
        start,
        "Caxton node latency, one interval per observability.hdr_log.interval",
    )
    .map_err(|error| {
        refuse(
            loaded,
            key,
            format!("cannot write `{}`: {error}", path.display()),
            "",
        )
    })?;
    info!(path = %path.display(), interval = %config.interval, "HDR interval log");
    Ok(Some((writer, config.interval.get())))
}

/// jemalloc's own statistics, refreshed: what the application holds
/// (`allocated`), the pages backing it (`active`), what jemalloc maps and keeps
/// resident (`resident`, `mapped`), and what it returned to the kernel but kept
/// reserved (`retained`). Zeros when jemalloc cannot say.
fn allocator_stats() -> Vec<(&'static str, u64)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // The statistics are a snapshot taken when the epoch advances.
    let _ = epoch::advance();
    let read = |value: tikv_jemalloc_ctl::Result<usize>| value.map_or(0, |bytes| bytes as u64);
    vec![
        ("allocated_bytes", read(stats::allocated::read())),
        ("active_bytes", read(stats::active::read())),
        ("resident_bytes", read(stats::resident::read())),
        ("mapped_bytes", read(stats::mapped::read())),
        ("retained_bytes", read(stats::retained::read())),
        ("metadata_bytes", read(stats::metadata::read())),
    ]
}

/// Say where the endpoint listens: once everything that can refuse the
/// profile has passed (the cluster's addresses and certificates are checked
/// after the port is bound), so a refused start never claims to be serving.
pub fn announce(listener: &TcpListener, settings: &AdminSettings) {
    match listener.local_addr() {
        Ok(address) => info!(
            token = settings.token.is_some(),
            "admin endpoint listening on http://{address}"
        ),
        Err(error) => warn!("admin endpoint: no local address: {error}"),
    }
}
