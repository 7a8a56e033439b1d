//! The node's stop signal: set once by whoever shuts the node down (a signal
//! handler thread, a test), observed by every shard.
//!
//! This is control plane, touched once at shutdown, so a mutex is fine here:
//! it is never on a message's path. A glommio executor parked in `io_uring`
//! wakes when another thread fires one of its task wakers (glommio routes the
//! wake through the executor's eventfd), so waiting costs nothing while idle.

use std::future::poll_fn;
use std::sync::{Condvar, Mutex, PoisonError};
use std::task::{Poll, Waker};

#[derive(Default)]
struct StopState {
    requested: bool,
    wakers: Vec<Waker>,
}

/// A one-way latch from "running" to "stopping".
#[derive(Default)]
pub struct StopSignal {
    state: Mutex<StopState>,
    stopped: Condvar,
}

impl StopSignal {
    /// Ask every waiter to stop. Idempotent.
    pub fn request(&self) {
        let wakers = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.requested = true;
            std::mem::take(&mut state.wakers)
        };
        self.stopped.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .requested
    }

    /// Resolve once a stop is requested (for async shards).
    pub async fn requested(&self) {
        poll_fn(|context| {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.requested {
                return Poll::Ready(());
            }
            if !state
                .wakers
                .iter()
                .any(|waker| waker.will_wake(context.waker()))
            {
                state.wakers.push(context.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }

    /// Block the calling thread until a stop is requested (for plain threads).
    pub fn wait_blocking(&self) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let _stopped = self
            .stopped
            .wait_while(state, |state| !state.requested)
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
        let waiter = {
            let signal = Arc::clone(&signal);
            std::thread::spawn(move || signal.wait_blocking())
        };
        assert!(!signal.is_requested());
        signal.request();
        waiter.join().expect("waiter returns");
        assert!(signal.is_requested());
    }
}
