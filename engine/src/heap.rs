//! jemalloc's heap profiler, for `engine profile memory`. The binary's
//! jemalloc is built with profiling and starts with it enabled but
//! inactive (`prof:true,prof_active:false`): until a profile starts, no
//! allocation is sampled and no backtrace taken. While active, jemalloc
//! samples about one allocation per `2^lg_prof_sample` bytes (512 KiB) and
//! records its backtrace; a dump is the sampled live heap, scaled up.

use std::ffi::c_char;

use caxton_admin::HeapProfiler;

/// A pointer jemalloc reads at start; shareable because it points at a
/// constant.
#[repr(transparent)]
pub struct MallocConf(*const c_char);

// SAFETY: the pointer is to a `'static` constant string, never written.
unsafe impl Sync for MallocConf {}

/// jemalloc's start-up options (its `malloc_conf`, under this build's
/// `_rjem_` prefix): the profiler compiled in, off until asked.
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: MallocConf =
    MallocConf(c"prof:true,prof_active:false,lg_prof_sample:19".as_ptr());

/// The hooks the admin endpoint calls; `None` when jemalloc's profiler is
/// not enabled (a `_RJEM_MALLOC_CONF` in the environment can turn it off).
pub fn profiler() -> Option<HeapProfiler> {
    jemalloc_pprof::PROF_CTL.as_ref()?;
    Some(HeapProfiler { set_active, dump })
}

fn control() -> Result<tokio::sync::MutexGuard<'static, jemalloc_pprof::JemallocProfCtl>, String> {
    let control = jemalloc_pprof::PROF_CTL
        .as_ref()
        .ok_or_else(|| "jemalloc's heap profiler is not enabled in this process".to_owned())?;
    // Called off the async runtime (the endpoint uses a blocking thread).
    Ok(control.blocking_lock())
}

fn set_active(active: bool) -> Result<(), String> {
    let mut control = control()?;
    let result = if active {
        control.activate()
    } else {
        control.deactivate()
    };
    result.map_err(|error| format!("jemalloc refused: {error}"))
}

/// The flame graph of a heap with no sampled allocation yet.
const EMPTY_FLAMEGRAPH: &str = "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\"><text x=\"10\" y=\"25\">no allocation sampled yet (about one per 512 KiB allocated)</text></svg>\n";

fn dump() -> Result<caxton_admin::HeapDump, String> {
    let mut control = control()?;
    if !control.activated() {
        return Err("no heap profile is running".to_owned());
    }
    // One dump of jemalloc's profile serves both forms, so the picture and the
    // pprof file describe the same heap.
    let profile = control
        .dump_profile()
        .map_err(|error| format!("cannot dump the heap profile: {error}"))?;
    let pprof = profile.to_pprof(("inuse_space", "bytes"), ("space", "bytes"), None);
    // Until an allocation is sampled (about one per 512 KiB allocated) there
    // is no stack to draw; say so in the picture rather than fail the dump.
    let mut options = jemalloc_pprof::FlamegraphOptions::default();
    options.title = "inuse_space".to_owned();
    options.count_name = "bytes".to_owned();
    // Asked to draw nothing, the flame graph library logs an error of its
    // own; an empty heap is no error.
    let flamegraph = if profile.stacks.is_empty() {
        EMPTY_FLAMEGRAPH.as_bytes().to_vec()
    } else {
        profile
            .to_flamegraph(&mut options)
            .unwrap_or_else(|_| EMPTY_FLAMEGRAPH.as_bytes().to_vec())
    };
    Ok((pprof, flamegraph))
}
