//! What a `no_std` WebAssembly module needs from its crate: an allocator and
//! a panic handler. Compiled for `wasm32` only.

/// dlmalloc over `memory.grow`: the allocator std itself uses on this
/// target. Growth past the agent's memory limit is refused by the engine,
/// which ends the handler with `caxton:memory-limit`.
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// A panic logs where and why at error level, then traps: the engine
/// answers the sender `failure` (`caxton:trap:…`), discards what the handler
/// sent, replaces the instance and serves on.
#[cfg(not(feature = "std"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::fmt::Write;
    let mut line = LineBuffer::default();
    let _ = match info.location() {
        Some(location) => write!(
            line,
            "panicked at {}:{}: {}",
            location.file(),
            location.line(),
            info.message()
        ),
        None => write!(line, "panicked: {}", info.message()),
    };
    crate::log(crate::Level::Error, line.text());
    core::arch::wasm32::unreachable()
}

/// A fixed buffer for the panic line: a panic may come from a failed
/// allocation, so the handler must not allocate.
#[cfg(not(feature = "std"))]
struct LineBuffer {
    bytes: [u8; 512],
    len: usize,
}

#[cfg(not(feature = "std"))]
impl Default for LineBuffer {
    fn default() -> Self {
        Self {
            bytes: [0; 512],
            len: 0,
        }
    }
}

#[cfg(not(feature = "std"))]
impl LineBuffer {
    fn text(&self) -> &str {
        // Only whole `str` pieces are copied in, cut at a char boundary.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("panicked")
    }
}

#[cfg(not(feature = "std"))]
impl core::fmt::Write for LineBuffer {
    fn write_str(&mut self, piece: &str) -> core::fmt::Result {
        let room = self.bytes.len() - self.len;
        let mut take = piece.len().min(room);
        while !piece.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&piece.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}
