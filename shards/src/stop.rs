//! The node's stop signal: set once by whoever shuts the node down (a signal
//! handler thread, a test), observed by the threads that block on it (the
//! node's owner in `run_until_stopped`, the gossip shard). Data shards are
//! stopped by a control command instead, which wakes them through their
//! doorbell.
//!
//! Control plane, touched once at shutdown, so a mutex is fine here: it is
//! never on a message's path.

use std::sync::{Condvar, Mutex, PoisonError};

/// A one-way latch from "running" to "stopping".
#[derive(Default)]
pub struct StopSignal {
    requested: Mutex<bool>,
    stopped: Condvar,
}

impl StopSignal {
    /// Ask every waiter to stop. Idempotent.
    pub fn request(&self) {
        *self
            .requested
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.stopped.notify_all();
    }

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        *self
            .requested
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Block the calling thread until a stop is requested.
    pub fn wait_blocking(&self) {
        let requested = self
            .requested
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _stopped = self
            .stopped
            .wait_while(requested, |requested| !*requested)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_blocked_thread_wakes_on_request() {
        let signal = Arc::new(StopSignal::default());
        let (started, has_started) = std::sync::mpsc::channel();
        let waiter = {
            let signal = Arc::clone(&signal);
            std::thread::spawn(move || {
                started.send(()).expect("the test listens");
                signal.wait_blocking();
            })
        };
        has_started.recv().expect("the waiter starts");
        // Time to reach the condition variable: the request must wake a
        // blocked waiter, not find one that has yet to look.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "a waiter blocks until a request");
        assert!(!signal.is_requested());
        signal.request();
        waiter.join().expect("waiter returns");
        assert!(signal.is_requested());
    }
}
