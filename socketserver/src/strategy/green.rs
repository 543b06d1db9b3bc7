use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use super::{Job, ServerLoop, Strategy};
use crate::green::inbox::{Inbox, Msg};
use crate::green::worker::{self, Config};
use crate::ShutdownHandle;

/// Green threads: every request is a stackful coroutine on one of a few
/// worker threads, each with its own epoll reactor. The same blocking
/// handler code as under [`Threading`](crate::Threading); the OS sees N
/// threads, not one per connection.
///
/// A read or write of the connection that would block suspends the request's
/// coroutine; the worker runs the others until the socket is ready or the
/// read/write timeout passes (`TimedOut`, as under `Threading`). Requests
/// are spread over the workers (to the least loaded) when they start, and a
/// coroutine stays on its worker until it ends, so thread-locals stay
/// sound. Graceful drain, `max_connections`, timeouts and stats work as
/// for the other strategies.
///
/// **What must not block**: anything that waits and is not the request's
/// own socket (a sleep, a file, a lock held for long, a child process, a
/// client of another server) stalls every request on that worker. Use
/// [`green::blocking`](crate::green::blocking) and
/// [`green::sleep`](crate::green::sleep); a coroutine that runs 100 ms
/// without yielding is logged. See [`green`](crate::green) and
/// `docs/green.md`.
///
/// **Stacks**: [`stack_size`](Self::stack_size) bytes each
/// ([`DEFAULT_STACK_SIZE`](Self::DEFAULT_STACK_SIZE), 2 MiB as a thread's;
/// address space: only the pages a request touches cost memory), with a
/// guard (four pages) below: a handler that overflows it hits the guard and
/// never writes past its stack into other memory.
///
/// ```no_run
/// use socketserver::{Green, Server, StreamRequest};
///
/// let server = Server::builder()
///     .strategy(Green::new().threads(2).stack_size(128 * 1024))
///     .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// A clone is a handle on the same workers: give each server a
/// `Green::new()` of its own, as closing a server stops its workers.
#[derive(Debug, Clone)]
pub struct Green {
    threads: Option<usize>,
    blocking_threads: Option<usize>,
    stack_size: usize,
    /// Microseconds its workers were blocked (see `blocked_ms`).
    blocked_us: Arc<AtomicU64>,
    workers: Arc<OnceLock<io::Result<Workers>>>,
}

/// The worker threads, started by the first request.
struct Workers {
    inboxes: Vec<Arc<Inbox>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.inboxes.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &self.inboxes {
            w.stop();
        }
    }
}

impl Default for Green {
    fn default() -> Green {
        Green {
            threads: None,
            blocking_threads: None,
            stack_size: Green::DEFAULT_STACK_SIZE,
            blocked_us: Arc::default(),
            workers: Arc::default(),
        }
    }
}

impl Green {
    /// Default usable stack of a coroutine: 2 MiB, what `Threading`'s
    /// threads get (plus its guard). Address space: only touched pages cost
    /// memory, and a stack that comes back gives back the pages below its
    /// top 32 KiB that a deep request touched.
    pub const DEFAULT_STACK_SIZE: usize = 2 * 1024 * 1024;

    /// Default settings: one worker per available core, 2 MiB stacks.
    pub fn new() -> Green {
        Green::default()
    }

    /// Number of worker threads (default: the available cores; at least 1).
    #[must_use]
    pub fn threads(mut self, n: usize) -> Green {
        self.threads = Some(n.max(1));
        self
    }

    /// Usable stack of each coroutine in bytes (default 2 MiB; at least
    /// 16 KiB). Deep recursion or large local arrays in a handler need more;
    /// a smaller one saves address space, not memory.
    #[must_use]
    pub fn stack_size(mut self, bytes: usize) -> Green {
        self.stack_size = bytes.max(16 * 1024);
        self
    }

    /// Most helper threads of [`green::blocking`](crate::green::blocking)
    /// at once (default [`green::MAX_HELPERS`](crate::green::MAX_HELPERS),
    /// 64; at least 1). The helpers are shared by every `Green` of the
    /// process, so this sets the cap for the process when the workers
    /// start. Past it calls wait in a queue (first in, first out,
    /// unbounded) for a free helper.
    #[must_use]
    pub fn blocking_threads(mut self, n: usize) -> Green {
        self.blocking_threads = Some(n.max(1));
        self
    }

    /// The number of worker threads this strategy runs (or will).
    pub fn thread_count(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    fn workers(&self) -> io::Result<&Workers> {
        let workers = self.workers.get_or_init(|| {
            if let Some(n) = self.blocking_threads {
                crate::green::set_blocking_threads(n);
            }
            let config = Config {
                stack_size: self.stack_size,
                blocked_us: Arc::clone(&self.blocked_us),
            };
            let mut inboxes = Vec::new();
            let mut handles = Vec::new();
            for i in 0..self.thread_count() {
                let (inbox, handle) = worker::spawn(format!("green {i}"), config.clone())?;
                inboxes.push(inbox);
                handles.push(handle);
            }
            Ok(Workers {
                inboxes,
                handles: Mutex::new(handles),
                next: AtomicUsize::new(0),
            })
        });
        workers
            .as_ref()
            .map_err(|e| io::Error::new(e.kind(), e.to_string()))
    }
}

impl Workers {
    /// Waits, at most `timeout`, until no coroutine runs on any worker;
    /// returns whether none does. In a coroutine it waits with
    /// [`green::sleep`](crate::green::sleep).
    fn wait_unloaded(&self, timeout: Duration) -> bool {
        let end = crate::timeouts::deadline_after(timeout);
        loop {
            if self
                .inboxes
                .iter()
                .all(|w| w.load.load(Ordering::SeqCst) == 0)
            {
                return true;
            }
            if end.is_some_and(|e| std::time::Instant::now() >= e) {
                return false;
            }
            if crate::green::is_green() {
                crate::green::sleep(Duration::from_millis(1));
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// The least loaded worker; on a tie the calling thread's own worker
    /// (the server loop runs on one: a request it accepts starts right
    /// there, without waking another thread), else round-robin.
    fn pick(&self) -> &Arc<Inbox> {
        let n = self.inboxes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.inboxes[(start + i) % n])
            .min_by_key(|w| (w.load.load(Ordering::Relaxed), !w.is_current()))
            .expect("at least one worker")
    }
}

impl Strategy for Green {
    fn execute(&self, job: Job, _shutdown: &ShutdownHandle) -> io::Result<()> {
        let worker = self.workers()?.pick();
        worker.load.fetch_add(1, Ordering::SeqCst);
        let Job { peer, run, .. } = job;
        worker.send(Msg::Request { peer, run });
        Ok(())
    }

    /// The server loop runs as a coroutine on one of the workers, so that
    /// accepting a connection and starting its request take no thread
    /// hand-off (about one wake-up of another thread less per connection);
    /// this thread waits until the loop returns.
    fn run(&self, server: &dyn ServerLoop) -> io::Result<()> {
        if crate::green::is_green() {
            // Already a coroutine (a handler serving another server): run
            // the loop right here, rather than block this worker waiting
            // for a loop that may have been placed on it.
            return server.serve();
        }
        let Some(owned) = server.detach() else {
            return server.serve();
        };
        let worker = self.workers()?.pick();
        let (done, result) = std::sync::mpsc::sync_channel(1);
        worker.load.fetch_add(1, Ordering::SeqCst);
        worker.send(Msg::Loop {
            url: owned.url(),
            run: Box::new(move || {
                let r = catch_unwind(AssertUnwindSafe(|| owned.serve()));
                drop(owned);
                let _ = done.send(r);
            }),
        });
        match result.recv() {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => resume_unwind(panic),
            // Dropped unrun: no stack for it, or the worker is gone (its
            // server closed, or it died); the log says which.
            Err(_) => Err(io::Error::other(
                "the server loop could not run on a green worker (see the log)",
            )),
        }
    }

    fn close(&self) {
        let Some(Ok(workers)) = self.workers.get() else {
            return;
        };
        for w in &workers.inboxes {
            w.stop();
        }
        // Workers exit once their last coroutine ended; wait for them only
        // when none runs (a close after requests were given up on returns).
        if workers.wait_unloaded(Duration::from_millis(100)) {
            for handle in workers.handles.lock().drain(..) {
                let _ = handle.join();
            }
        }
    }

    fn begin_drain(&self) {
        if let Some(Ok(workers)) = self.workers.get() {
            for w in &workers.inboxes {
                w.closing();
            }
        }
    }

    fn name(&self) -> &'static str {
        crate::strategy::GREEN
    }

    fn blocked_ms(&self) -> u64 {
        self.blocked_us.load(Ordering::Relaxed) / 1000
    }
}
