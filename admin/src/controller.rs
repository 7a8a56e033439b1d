//! The controller: the one thread that owns the [`Node`] (its control plane
//! takes `&mut self`) and the metrics [`Collector`]. The admin endpoint never
//! touches either; it sends the controller jobs and awaits their answers, so
//! deploys, scrapes and dumps are serialized without a lock.

use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use caxton_shards::{Node, NodeError, StopSignal};
use tracing::warn;

use crate::collector::Collector;

/// A unit of work for the controller thread.
pub type Job = Box<dyn FnOnce(&mut Controller) + Send>;

/// What the controller owns.
pub struct Controller {
    /// The node.
    pub node: Node,
    /// Its metrics, as read so far.
    pub collector: Collector,
    /// The profile it runs (limits for agents deployed through the API).
    pub profile: caxton_profiles::Profile,
}

/// How the admin endpoint reaches the controller.
#[derive(Clone)]
pub struct ControllerHandle {
    jobs: mpsc::Sender<Job>,
}

/// The controller has stopped (the node is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the node is shutting down")]
pub struct ControllerGone;

impl ControllerHandle {
    /// A handle and the receiving end the controller runs on.
    pub fn channel() -> (Self, mpsc::Receiver<Job>) {
        let (jobs, receiver) = mpsc::channel();
        (Self { jobs }, receiver)
    }

    /// Run `work` on the controller thread and await its result.
    pub async fn call<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Controller) -> R + Send + 'static,
    ) -> Result<R, ControllerGone> {
        let (answer, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |controller| {
                let _ = answer.send(work(controller));
            }))
            .map_err(|_| ControllerGone)?;
        result.await.map_err(|_| ControllerGone)
    }
}

/// Longest the controller sleeps between checks of the stop signal.
const STOP_POLL: Duration = Duration::from_millis(100);

impl Controller {
    /// Serve `jobs` and close HDR log intervals until `stop` is requested; then
    /// close the last interval and shut the node down.
    pub fn run(
        mut self,
        jobs: mpsc::Receiver<Job>,
        stop: Arc<StopSignal>,
    ) -> Result<(), NodeError> {
        let mut jobs = Some(jobs);
        while !stop.is_requested() {
            let now = SystemTime::now();
            let due = self.collector.next_log_due();
            let wait = due
                .map_or(STOP_POLL, |due| due.duration_since(now).unwrap_or_default())
                .min(STOP_POLL);
            match jobs.as_ref().map(|jobs| jobs.recv_timeout(wait)) {
                Some(Ok(job)) => job(&mut self),
                Some(Err(mpsc::RecvTimeoutError::Timeout)) => {}
                Some(Err(mpsc::RecvTimeoutError::Disconnected)) => jobs = None,
                None => std::thread::sleep(wait),
            }
            if due.is_some_and(|due| due <= SystemTime::now()) {
                if let Err(error) = self.collector.close_interval(&self.node) {
                    warn!("cannot read the shards' metrics: {error}");
                }
            }
        }
        if self.collector.next_log_due().is_some() {
            let _ = self.collector.close_interval(&self.node);
        }
        self.node.shutdown()
    }
}
