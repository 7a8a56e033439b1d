//! The admin endpoint's senders: the threads that carry its sends into the
//! node and bring the answers back, many sends in flight on each.
//!
//! Each sender thread owns one node client (one client port: its own rings
//! to and from every data shard). A send handed to it goes out at once;
//! its answer (the node's acceptance notice of a durable send, then the
//! agent's reply) is matched to it by the token it quotes. One thread thus
//! serves up to [`SENDS_IN_FLIGHT_PER_PORT`] sends waiting at once, where a
//! client lent to one send for its whole wait served one: the endpoint's
//! sends in flight are bounded by that, not by `runtime.client_ports`.
//!
//! A thread waits for answers as any client does (it polls its rings for
//! `runtime.client_spin_before_park`, then parks); a new send raises the
//! thread's flag and unparks it, which ends the poll or the park alike, so
//! a send goes out as soon as its thread is scheduled.
//!
//! The threads are the admin path's, never a shard's: the queue a send
//! waits in before its thread takes it is a channel between the endpoint
//! and the thread, and a shard only ever sees the client's rings.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use caxton_messaging::{Durability, Envelope, Performative};
use caxton_shards::{acceptance, is_acceptance, Client, PersistError, SendError, SendOptions};
use tracing::warn;

/// Most sends one sender thread keeps waiting for their answers. Past it on
/// every thread, a send is refused as busy rather than queued without bound.
pub const SENDS_IN_FLIGHT_PER_PORT: usize = 4096;

/// Longest a sender thread waits for an answer before it looks again at its
/// sends' deadlines and at callers that hung up.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// What a send whose timeout is past the clock's range waits at most.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Longest a sender thread with no send waiting sleeps before it looks at
/// its queue again (a new job wakes it at once).
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// One send through the endpoint.
pub struct SendJob {
    /// The agent's name.
    pub agent: String,
    /// Performative.
    pub performative: Performative,
    /// Content.
    pub content: Vec<u8>,
    /// Priority, deadline and conversation.
    pub options: SendOptions,
    /// How long to wait for the acceptance and the reply.
    pub timeout: Duration,
    /// Whether the node must store it first (`messaging.enable_persistence`).
    pub persistent: bool,
    /// Whether to wait for the agent's reply.
    pub wait_for_reply: bool,
}

/// What came of a send.
#[derive(Debug)]
pub enum Sent {
    /// Sent (and, for a durable send, stored with this id); no reply awaited.
    Accepted {
        /// The durable message's id.
        message_id: Option<u64>,
    },
    /// The agent's reply.
    Replied {
        /// The reply.
        reply: Envelope,
        /// The durable message's id.
        message_id: Option<u64>,
        /// From the send leaving to the reply arriving.
        round_trip: Duration,
    },
}

/// Why a send got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendFailure {
    /// The send was not taken (unknown agent, no instance, a full ring).
    #[error(transparent)]
    Send(#[from] SendError),
    /// A durable send not accepted: refused, in doubt, or no acceptance
    /// within the timeout.
    #[error(transparent)]
    Persist(PersistError),
    /// No reply within the timeout (the message's durable id, if stored).
    #[error("no reply within {timeout:?}")]
    NoReply {
        /// The wait.
        timeout: Duration,
        /// The durable id, when the message was stored.
        message_id: Option<u64>,
    },
    /// Every sender thread has its most sends in flight, or none has started.
    #[error("every sender is full")]
    Busy,
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopping,
}

/// The senders, shared by the endpoint's connections. Empty until the node
/// has started and [`SendPool::start`] gave it the clients.
#[derive(Clone, Default)]
pub struct SendPool(Arc<OnceLock<Senders>>);

struct Senders {
    threads: Vec<SenderThread>,
}

struct SenderThread {
    jobs: mpsc::Sender<Work>,
    /// Raised with each job queued; see [`SenderThread::wake`].
    queued: Arc<AtomicBool>,
    thread: Thread,
    in_flight: Arc<AtomicUsize>,
    handle: Option<JoinHandle<()>>,
}

impl SenderThread {
    /// Tell the thread a job is queued: the flag ends its poll of the
    /// rings (an unpark alone would wait for the poll to run out), the
    /// unpark its park.
    fn wake(&self) {
        self.queued.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

type Answer = tokio::sync::oneshot::Sender<Result<Sent, SendFailure>>;

struct Queued {
    job: SendJob,
    answer: Answer,
}

/// What the endpoint hands a sender thread.
enum Work {
    Send(Queued),
    /// The node is stopping: from this time on, sends still waiting (for
    /// answers a stopped node will never give) hear `Stopping`.
    StopAt(Instant),
}

impl SendPool {
    /// Start a sender thread for each of `clients`. Only the first call
    /// starts any; the clients of a later one are dropped (their ports go
    /// back to the node).
    pub fn start(&self, clients: Vec<Client>) {
        let mut clients = Some(clients);
        self.0.get_or_init(|| Senders {
            threads: clients
                .take()
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .filter_map(|(index, client)| spawn_sender(index, client))
                .collect(),
        });
    }

    /// How many sender threads run (the client ports they own).
    pub fn threads(&self) -> usize {
        self.0.get().map_or(0, |senders| senders.threads.len())
    }

    /// Sends handed to the threads and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.0.get().map_or(0, |senders| {
            senders
                .threads
                .iter()
                .map(|sender| sender.in_flight.load(Ordering::Relaxed))
                .sum()
        })
    }

    /// Hand `job` to the sender with the fewest sends in flight and await
    /// what came of it.
    pub async fn send(&self, job: SendJob) -> Result<Sent, SendFailure> {
        let senders = self.0.get().ok_or(SendFailure::Busy)?;
        let sender = senders
            .threads
            .iter()
            .min_by_key(|sender| sender.in_flight.load(Ordering::Relaxed))
            .ok_or(SendFailure::Busy)?;
        // The count is the thread's to lower; raising it here first makes a
        // burst spread over the threads before any has taken its share.
        if sender.in_flight.fetch_add(1, Ordering::Relaxed) >= SENDS_IN_FLIGHT_PER_PORT {
            sender.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(SendFailure::Busy);
        }
        let (answer, answered) = tokio::sync::oneshot::channel();
        if sender
            .jobs
            .send(Work::Send(Queued { job, answer }))
            .is_err()
        {
            // The thread has ended (it only does when the pool is dropped,
            // or if it panicked): marked full, so no send picks it again.
            sender
                .in_flight
                .store(SENDS_IN_FLIGHT_PER_PORT, Ordering::Relaxed);
            return Err(SendFailure::Stopping);
        }
        sender.wake();
        answered.await.unwrap_or(Err(SendFailure::Stopping))
    }

    /// The node is stopping. Its shards answer what they still hold as they
    /// stop (`caxton:shutting-down`), so sends waiting for those answers
    /// get them for `grace`; past it, every send still waiting, for a reply
    /// that will never come, is answered `Stopping`, and so is any new one.
    pub fn stopping(&self, grace: Duration) {
        let Some(senders) = self.0.get() else {
            return;
        };
        let at = Instant::now() + grace;
        for sender in &senders.threads {
            if sender.jobs.send(Work::StopAt(at)).is_ok() {
                sender.wake();
            }
        }
    }
}

impl Drop for Senders {
    /// The endpoint is gone: each thread finds its queue closed, answers
    /// nothing more, and drops its client (the port goes back to the node).
    fn drop(&mut self) {
        for sender in &mut self.threads {
            let (closed, _) = mpsc::channel();
            drop(std::mem::replace(&mut sender.jobs, closed));
            sender.wake();
            if let Some(handle) = sender.handle.take() {
                let _ = handle.join();
            }
        }
    }
}

fn spawn_sender(index: usize, client: Client) -> Option<SenderThread> {
    let (jobs, queue) = mpsc::channel();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let queued = Arc::new(AtomicBool::new(false));
    let (counted, flag) = (Arc::clone(&in_flight), Arc::clone(&queued));
    let spawned = std::thread::Builder::new()
        // The kernel keeps 15 bytes of a thread's name: `caxton-send-N`
        // stays whole in profiles and `top` up to 999 senders.
        .name(format!("caxton-send-{index}"))
        .spawn(move || SenderLoop::new(client, queue, flag, counted).run());
    match spawned {
        Ok(handle) => Some(SenderThread {
            jobs,
            queued,
            thread: handle.thread().clone(),
            in_flight,
            handle: Some(handle),
        }),
        Err(error) => {
            warn!("admin endpoint: cannot start a sender thread: {error}");
            None
        }
    }
}

/// A send waiting for its answer, by the token it quotes.
struct Waiting {
    answer: Answer,
    deadline: Instant,
    timeout: Duration,
    sent_at: Instant,
    wait_for_reply: bool,
    /// A durable send before the node's acceptance notice.
    awaiting_notice: bool,
    message_id: Option<u64>,
    /// A reply that came before the acceptance notice (they travel on
    /// different rings when the storing shard is not the handling one).
    early_reply: Option<Envelope>,
}

struct SenderLoop {
    client: Client,
    queue: mpsc::Receiver<Work>,
    /// Raised by the endpoint with each job queued, lowered here before
    /// the queue is read: a job queued after that read raises it again.
    queued: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    waiting: HashMap<u64, Waiting>,
    arrivals: Vec<Envelope>,
    /// When next to look for sends past their deadlines: the earliest
    /// deadline, or a sweep period away (for callers that hung up).
    next_sweep: Instant,
    /// When the node's stop grace ends (see [`SendPool::stopping`]).
    stop_at: Option<Instant>,
}

impl SenderLoop {
    fn new(
        client: Client,
        queue: mpsc::Receiver<Work>,
        queued: Arc<AtomicBool>,
        in_flight: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            client,
            queue,
            queued,
            in_flight,
            waiting: HashMap::new(),
            arrivals: Vec::new(),
            next_sweep: Instant::now() + SWEEP_EVERY,
            stop_at: None,
        }
    }

    fn run(mut self) {
        loop {
            self.queued.store(false, Ordering::Release);
            loop {
                match self.queue.try_recv() {
                    Ok(Work::Send(queued)) => self.start(queued),
                    Ok(Work::StopAt(at)) => {
                        self.stop_at = Some(at);
                        self.next_sweep = self.next_sweep.min(at);
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    // The endpoint is gone; what still waits hears `Stopping`.
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            if now >= self.next_sweep {
                self.next_sweep = self.sweep(now);
            }
            self.arrivals.clear();
            let wait = if self.waiting.is_empty() {
                IDLE_WAIT
            } else {
                self.next_sweep.saturating_duration_since(now)
            };
            self.client
                .recv_or_woken(wait, &mut self.arrivals, &self.queued);
            for arrival in std::mem::take(&mut self.arrivals) {
                self.arrived(arrival);
            }
        }
    }

    /// Send `queued`'s message, and answer it now or note it waiting.
    fn start(&mut self, Queued { job, answer }: Queued) {
        if self.stop_at.is_some_and(|at| Instant::now() >= at) {
            return self.answer(answer, Err(SendFailure::Stopping));
        }
        let durability = if job.persistent {
            Durability::Requested
        } else {
            Durability::Transient
        };
        // Read before the push: a shard woken by it may answer before this
        // thread runs again, and a clock read after would time less than
        // the round trip.
        let sent_at = Instant::now();
        let sent = self.client.resolve(&job.agent).and_then(|agent| {
            self.client.send_as(
                agent,
                job.performative,
                job.content,
                job.options,
                durability,
            )
        });
        let token = match sent {
            Ok(token) => token,
            Err(failure) => return self.answer(answer, Err(failure.into())),
        };
        if !job.persistent && !job.wait_for_reply {
            return self.answer(answer, Ok(Sent::Accepted { message_id: None }));
        }
        // A timeout past the clock's range waits as long as it can.
        let deadline = sent_at
            .checked_add(job.timeout)
            .unwrap_or_else(|| sent_at + FOREVER);
        // Timed to its own deadline, not the next periodic sweep.
        self.next_sweep = self.next_sweep.min(deadline);
        self.waiting.insert(
            token,
            Waiting {
                answer,
                deadline,
                timeout: job.timeout,
                sent_at,
                wait_for_reply: job.wait_for_reply,
                awaiting_notice: job.persistent,
                message_id: None,
                early_reply: None,
            },
        );
    }

    /// Match `arrival` to the send it answers; an answer nobody waits for
    /// (to a send that did not ask for one, or whose caller left) is dropped.
    fn arrived(&mut self, arrival: Envelope) {
        let token = arrival.in_reply_to;
        let Some(waiting) = self.waiting.get_mut(&token) else {
            return;
        };
        match (waiting.awaiting_notice, is_acceptance(&arrival)) {
            (false, false) => self.replied(token, arrival),
            // A notice no send waits for.
            (false, true) => {}
            // The first answer is the reply (as a plain send's would be).
            (true, false) => {
                waiting.early_reply.get_or_insert(arrival);
            }
            (true, true) => match acceptance(&arrival) {
                Err(refused) => self.finish(token, Err(SendFailure::Persist(refused))),
                Ok(id) => {
                    waiting.awaiting_notice = false;
                    waiting.message_id = Some(id);
                    if !waiting.wait_for_reply {
                        let accepted = Sent::Accepted {
                            message_id: Some(id),
                        };
                        self.finish(token, Ok(accepted));
                    } else if let Some(reply) = waiting.early_reply.take() {
                        self.replied(token, reply);
                    }
                }
            },
        }
    }

    fn replied(&mut self, token: u64, reply: Envelope) {
        let Some(waiting) = self.waiting.get(&token) else {
            return;
        };
        // Past its deadline a send has timed out, whatever comes after:
        // the node's own `caxton:timeout` for the message then too.
        if Instant::now() >= waiting.deadline {
            let failure = SendFailure::NoReply {
                timeout: waiting.timeout,
                message_id: waiting.message_id,
            };
            return self.finish(token, Err(failure));
        }
        let outcome = Sent::Replied {
            reply,
            message_id: waiting.message_id,
            round_trip: waiting.sent_at.elapsed(),
        };
        self.finish(token, Ok(outcome));
    }

    /// Answer the send waiting on `token` and forget it.
    fn finish(&mut self, token: u64, outcome: Result<Sent, SendFailure>) {
        if let Some(waiting) = self.waiting.remove(&token) {
            self.answer(waiting.answer, outcome);
        }
    }

    fn answer(&self, answer: Answer, outcome: Result<Sent, SendFailure>) {
        // Lowered first: a caller that has its answer (and then reads
        // `/v1/node`) no longer finds its send counted.
        self.in_flight.fetch_sub(1, Ordering::Release);
        // A caller that hung up meanwhile no longer listens: nothing to do.
        let _ = answer.send(outcome);
    }

    /// Time out the sends past their deadlines, forget those whose callers
    /// hung up; when to sweep next.
    fn sweep(&mut self, now: Instant) -> Instant {
        let mut next = now + SWEEP_EVERY;
        let stopped = self.stop_at.is_some_and(|at| now >= at);
        if let Some(at) = self.stop_at.filter(|_| !stopped) {
            next = next.min(at);
        }
        let mut done = Vec::new();
        for (&token, waiting) in &self.waiting {
            if stopped || waiting.answer.is_closed() || now >= waiting.deadline {
                done.push(token);
            } else {
                next = next.min(waiting.deadline);
            }
        }
        for token in done {
            let Some(waiting) = self.waiting.remove(&token) else {
                continue;
            };
            let failure = if stopped && now < waiting.deadline {
                SendFailure::Stopping
            } else if waiting.awaiting_notice {
                SendFailure::Persist(PersistError::Timeout(waiting.timeout))
            } else {
                SendFailure::NoReply {
                    timeout: waiting.timeout,
                    message_id: waiting.message_id,
                }
            };
            self.answer(waiting.answer, Err(failure));
        }
        next
    }
}
