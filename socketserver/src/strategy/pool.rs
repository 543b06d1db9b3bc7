use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};
use parking_lot::Mutex;

use super::{Job, Strategy};
use crate::ShutdownHandle;

/// A fixed set of worker threads fed through a bounded queue
/// (crossbeam-channel). No thread is created per request.
///
/// Workers start with the first request. When every worker is busy, new
/// requests wait in the queue; **when the queue is full, the server stops
/// accepting** until a worker frees a slot, so further clients wait in the
/// kernel's listen backlog (nothing is refused, nothing grows without bound).
/// If shutdown is asked while the loop waits for a slot, the waiting request
/// is dropped (its connection closed).
///
/// A pool suits many short requests (no thread spawn per connection). With
/// long-lived connections, at most `workers` clients are served at once: the
/// others wait until one leaves.
///
/// On close, the drain runs queued requests too: one whose client has
/// already sent its message is served; one whose client has said nothing
/// yet is idle and closed at once. Then the workers exit and are joined.
///
/// ```no_run
/// use socketserver::{Pool, Server, StreamRequest};
///
/// let server = Server::builder()
///     .strategy(Pool::new(8).queue(64))
///     .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Pool {
    workers: usize,
    queue: usize,
    stack_size: Option<usize>,
    state: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    sender: Sender<Job>,
    threads: Vec<JoinHandle<()>>,
}

impl Default for Pool {
    /// 16 workers (at least 2 per core), a queue of 1,024.
    fn default() -> Pool {
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        Pool::new((2 * cores).max(16))
    }
}

impl Pool {
    /// A pool of `workers` threads (at least 1) with a queue of 1,024.
    pub fn new(workers: usize) -> Pool {
        Pool {
            workers: workers.max(1),
            queue: 1024,
            stack_size: None,
            state: Mutex::new(None),
        }
    }

    /// Capacity of the queue of waiting requests (at least 1).
    #[must_use]
    pub fn queue(mut self, capacity: usize) -> Pool {
        self.queue = capacity.max(1);
        self
    }

    /// Stack size of the worker threads.
    #[must_use]
    pub fn stack_size(mut self, bytes: usize) -> Pool {
        self.stack_size = Some(bytes);
        self
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Requests waiting in the queue.
    pub fn queued(&self) -> usize {
        self.state.lock().as_ref().map_or(0, |r| r.sender.len())
    }

    fn start(&self) -> io::Result<Sender<Job>> {
        let mut state = self.state.lock();
        if let Some(running) = state.as_ref() {
            return Ok(running.sender.clone());
        }
        let (sender, receiver) = crossbeam_channel::bounded(self.queue);
        let mut threads = Vec::with_capacity(self.workers);
        for i in 0..self.workers {
            let mut builder = thread::Builder::new().name(format!("pool worker {i}"));
            if let Some(size) = self.stack_size {
                builder = builder.stack_size(size);
            }
            let receiver = receiver.clone();
            threads.push(builder.spawn(move || worker(&receiver))?);
        }
        *state = Some(Running {
            sender: sender.clone(),
            threads,
        });
        Ok(sender)
    }
}

fn worker(jobs: &Receiver<Job>) {
    for job in jobs {
        // Handler panics are caught inside `run`; this only keeps the worker
        // alive if a custom job panics outside a handler.
        let _ = catch_unwind(AssertUnwindSafe(|| job.run()));
    }
}

impl Strategy for Pool {
    fn execute(&self, job: Job, shutdown: &ShutdownHandle) -> io::Result<()> {
        let sender = self.start()?;
        let mut job = job;
        loop {
            match sender.send_timeout(job, Duration::from_millis(20)) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(j)) => {
                    if shutdown.is_shutdown_requested() {
                        return Err(io::Error::new(
                            io::ErrorKind::Interrupted,
                            format!("shutdown while waiting for a free worker for {}", j.peer()),
                        ));
                    }
                    job = j;
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the pool is closed",
                    ))
                }
            }
        }
    }

    fn close(&self) {
        if let Some(running) = self.state.lock().take() {
            drop(running.sender);
            for t in running.threads {
                let _ = t.join();
            }
        }
    }

    fn name(&self) -> &'static str {
        "pool"
    }
}
