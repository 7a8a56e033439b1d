//! Why a module cannot be deployed.

/// A module refused at deploy. Nothing was started for it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DeployError {
    /// Not a WebAssembly module (binary or text), or it fails validation.
    #[error("not a valid WebAssembly module: {0}")]
    NotWasm(String),
    /// Larger than the host accepts.
    #[error("module is {bytes} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// An export the ABI requires is missing.
    #[error("module does not export `{0}` (see docs/agent-abi.md)")]
    MissingExport(&'static str),
    /// An export the ABI requires has the wrong kind or signature.
    #[error("export `{name}` must be {expected}")]
    WrongExport {
        /// The export.
        name: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// An import the host does not provide.
    #[error("module imports `{module}.{name}`, which the host does not provide")]
    UnknownImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// An import of a host function with another signature than the host's.
    #[error("module does not link: {0} (the signatures are in docs/agent-abi.md)")]
    WrongImport(String),
    /// The agent's memory limit is below the memory the module starts with.
    #[error("memory limit {limit} bytes is below the {initial_bytes} bytes the module starts with: give it at least that (--memory, memory= in the API, or agents.overrides[].memory)")]
    MemoryBelowInitial {
        /// The limit asked for.
        limit: u64,
        /// What the module declares.
        initial_bytes: u64,
    },
    /// `caxton_abi_version` returned another version.
    #[error("module speaks agent ABI version {found}; this host speaks version {expected}")]
    WrongAbiVersion {
        /// What the module returned.
        found: i32,
        /// What the host implements.
        expected: i32,
    },
    /// The module's initial memory is above `runtime.agent_heap_size`.
    #[error("module starts with {initial_bytes} bytes of memory, above runtime.agent_heap_size ({limit} bytes) (a Rust agent's stack counts: link with `-zstack-size=65536` in .cargo/config.toml, see docs/agent-sdk.md)")]
    HeapTooLarge {
        /// What the module declares.
        initial_bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The module trapped while starting or reporting its ABI version.
    #[error("module failed while starting: {0}")]
    StartFailed(String),
    /// The engine could not be configured or could not load the module.
    #[error("engine error: {0}")]
    Engine(String),
    /// The agent cannot have more instances on this node.
    #[error("agent capacity reached: {0}")]
    Capacity(String),
}
