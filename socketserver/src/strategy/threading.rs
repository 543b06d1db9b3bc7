use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::{Job, Strategy};
use crate::ShutdownHandle;

/// A new thread per request. Python: `ThreadingMixIn`.
///
/// The heart of the project: simple blocking handler code, each client
/// served at once. Threads are named after their peer (`conn 127.0.0.1:5001`,
/// visible in `top -H` and debuggers). A finished thread leaves nothing
/// behind: the server keeps a count of running requests, not a list of
/// threads, so long-running servers do not grow.
///
/// On close, the server drains gracefully when `block_on_close` is on (the
/// default, as in Python 3.7+): idle connections are closed at once, busy
/// ones get the close deadline. With it off (Python's `daemon_threads =
/// True`) closing returns at once and the threads finish on their own (or
/// die with the process).
///
/// # Keeping threads alive
///
/// Starting a thread costs a `clone(2)` and its teardown, about 20-50 us
/// (more in a VM): nothing next to a long connection, but most of the work
/// when each request is one datagram or one short connection. So, like
/// Java's cached thread pool, a thread that finished its request waits
/// [`keep_alive`](Threading::keep_alive) (default
/// [`DEFAULT_KEEP_ALIVE`](Threading::DEFAULT_KEEP_ALIVE), 5 s) for another
/// one before it exits, and new requests go to such a waiting thread first.
/// Every request still runs on a thread of its own, at once, with no limit
/// (unlike [`Pool`](crate::Pool)); only the thread may be an old one.
/// `keep_alive(Duration::ZERO)` gives Python's behaviour: a new thread per
/// request, gone when it ends. A reused thread is renamed for its new peer
/// in the OS (`top -H`, /proc: the first 15 bytes), but
/// `std::thread::current().name()` keeps its first name.
///
/// ```no_run
/// use socketserver::{Server, StreamRequest, Threading};
///
/// let server = Server::builder()
///     .strategy(Threading::new().stack_size(256 * 1024))
///     .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Threading {
    stack_size: Option<usize>,
    daemon: bool,
    keep_alive: Option<Duration>,
    /// Threads waiting for a request (keep-alive only), the most recent
    /// last: an id and the sender of the channel it waits on.
    idle: Arc<IdleList>,
}

/// Kept-alive threads waiting for a request: an id and the sender of the
/// channel each waits on; and whether the server closed, after which a
/// thread whose request ends exits instead of waiting.
type IdleList = Mutex<Idle>;

#[derive(Debug, Default)]
struct Idle {
    waiting: Vec<(u64, Sender<Job>)>,
    closed: bool,
}

/// Ids of kept-alive threads.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl Default for Threading {
    fn default() -> Threading {
        Threading {
            stack_size: None,
            daemon: false,
            keep_alive: Some(Threading::DEFAULT_KEEP_ALIVE),
            idle: Arc::default(),
        }
    }
}

impl Threading {
    /// How long a finished thread waits for another request by default.
    pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);

    /// Default settings: the standard library's stack size (2 MiB of address
    /// space, of which only touched pages cost memory), `block_on_close` on,
    /// threads kept alive [`DEFAULT_KEEP_ALIVE`](Self::DEFAULT_KEEP_ALIVE).
    pub fn new() -> Threading {
        Threading::default()
    }

    /// Stack size of request threads in bytes. Smaller stacks let more
    /// threads fit in the address space (e.g. 10,000 idle connections).
    #[must_use]
    pub fn stack_size(mut self, bytes: usize) -> Threading {
        self.stack_size = Some(bytes);
        self
    }

    /// Whether closing the server waits for running requests (default
    /// `true`). Python: `block_on_close`.
    #[must_use]
    pub fn block_on_close(mut self, block: bool) -> Threading {
        self.daemon = !block;
        self
    }

    /// Python's `daemon_threads`: the opposite of `block_on_close`.
    #[must_use]
    pub fn daemon_threads(self, daemon: bool) -> Threading {
        self.block_on_close(!daemon)
    }

    /// How long a thread whose request finished waits for another request
    /// before it exits (default 5 s; `Duration::ZERO`: it exits at once, one
    /// new thread per request, as in Python). See
    /// [Keeping threads alive](Threading#keeping-threads-alive).
    ///
    /// ```no_run
    /// use socketserver::{DatagramRequest, Server, Threading};
    /// use std::time::Duration;
    ///
    /// let server = Server::builder()
    ///     .strategy(Threading::new().keep_alive(Duration::from_secs(1)))
    ///     .udp("127.0.0.1:0", |r: &mut DatagramRequest| {
    ///         let data = r.take_data();
    ///         r.reply(&data)
    ///     })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn keep_alive(mut self, keep_alive: Duration) -> Threading {
        self.keep_alive = Some(keep_alive).filter(|d| !d.is_zero());
        self
    }

    /// Threads kept alive and waiting for a request now.
    pub fn idle_threads(&self) -> usize {
        self.idle.lock().waiting.len()
    }

    /// Gives `job` to a waiting thread; hands it back if none takes it.
    fn hand_to_idle(&self, mut job: Job) -> Result<(), Job> {
        loop {
            let next = {
                let mut idle = self.idle.lock();
                // In use again (a strategy may serve a new server after
                // closing): finished threads may wait again.
                idle.closed = false;
                idle.waiting.pop()
            };
            let Some((_, sender)) = next else {
                return Err(job);
            };
            match sender.send(job) {
                Ok(()) => return Ok(()),
                // That thread is gone (it cannot be while listed, but a job
                // must never be lost): try the next one.
                Err(e) => job = e.into_inner(),
            }
        }
    }
}

/// What a kept-alive thread does after its first request: park in the idle
/// list, run what it is handed, exit after `wait` without a request.
///
/// Never inlined: its frame (channel operations) inlined into every request
/// thread's first frame made that frame larger than a page, and the stack
/// probe then touched one more page per thread, keep-alive or not (idle
/// connections under `Threading`: 9.9 -> 13.9 KiB each).
#[inline(never)]
fn keep_serving(wait: Duration, idle: &IdleList) {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    loop {
        let (sender, receiver): (Sender<Job>, Receiver<Job>) = crossbeam_channel::bounded(1);
        {
            let mut idle = idle.lock();
            if idle.closed {
                // Closed while this request ran: nothing more will come.
                return;
            }
            idle.waiting.push((id, sender));
        }
        let job = match receiver.recv_timeout(wait) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                let mut list = idle.lock();
                if let Some(i) = list.waiting.iter().position(|(k, _)| *k == id) {
                    list.waiting.remove(i);
                    return;
                }
                drop(list);
                // Taken off the list just now: its job is on the way (or
                // the list was cleared on close, and the sender dropped).
                match receiver.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
            Err(RecvTimeoutError::Disconnected) => return, // closed
        };
        crate::sys::set_thread_name(&format!("conn {}", job.peer()));
        job.run();
    }
}

impl Strategy for Threading {
    fn execute(&self, job: Job, _shutdown: &ShutdownHandle) -> io::Result<()> {
        let job = match self.keep_alive {
            Some(_) => match self.hand_to_idle(job) {
                Ok(()) => return Ok(()),
                Err(job) => job,
            },
            None => job,
        };
        // Only a new thread needs a name and a stack size.
        let mut builder = thread::Builder::new().name(format!("conn {}", job.peer()));
        if let Some(size) = self.stack_size {
            builder = builder.stack_size(size);
        }
        let keep = self.keep_alive.map(|wait| (wait, Arc::clone(&self.idle)));
        let spawned = builder.spawn(move || {
            job.run();
            if let Some((wait, idle)) = keep {
                keep_serving(wait, &idle);
            }
        });
        // On an error the closure (and the job, and its connection) was
        // dropped.
        spawned.map(drop)
    }

    fn close(&self) {
        // Kept-alive threads waiting for a request exit now, and those
        // whose request is still running exit when it ends (they would
        // otherwise wait out the keep-alive for a request that never comes).
        let mut idle = self.idle.lock();
        idle.closed = true;
        idle.waiting.clear();
    }

    fn blocks_on_close(&self) -> bool {
        !self.daemon
    }

    fn name(&self) -> &'static str {
        "threading"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Address, ShutdownHandle};
    use std::sync::atomic::AtomicUsize;

    fn job(ran: &Arc<AtomicUsize>, threads: &Arc<Mutex<Vec<thread::ThreadId>>>) -> Job {
        let (ran, threads) = (Arc::clone(ran), Arc::clone(threads));
        Job::new(Address::Inet("127.0.0.1:9".parse().unwrap()), move || {
            threads.lock().push(thread::current().id());
            ran.fetch_add(1, Ordering::SeqCst);
            true
        })
    }

    fn handle() -> ShutdownHandle {
        crate::shutdown::wake_pair().unwrap().0
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < end, "{what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn kept_alive_threads_take_the_next_requests_then_exit() {
        let t = Threading::new().keep_alive(Duration::from_millis(300));
        let (ran, threads) = (Arc::default(), Arc::default());
        let shutdown = handle();
        for i in 1..=20 {
            t.execute(job(&ran, &threads), &shutdown).unwrap();
            wait_for("the job ran", || ran.load(Ordering::SeqCst) == i);
            wait_for("the thread parked", || t.idle_threads() == 1);
        }
        let mut ids = threads.lock().clone();
        ids.dedup();
        assert_eq!(ids.len(), 1, "one thread served all 20, one after another");
        wait_for("the idle thread exited", || t.idle_threads() == 0);
        // After it exited, a new thread serves.
        t.execute(job(&ran, &threads), &shutdown).unwrap();
        wait_for("the job ran", || ran.load(Ordering::SeqCst) == 21);
        let ids = threads.lock().clone();
        assert_ne!(ids[20], ids[0]);
        t.close();
        assert_eq!(t.idle_threads(), 0, "close lets waiting threads go");
    }

    /// Threads of this process whose (kernel, 15-byte) name starts with
    /// `prefix`.
    fn threads_named(prefix: &str) -> usize {
        std::fs::read_dir("/proc/self/task").map_or(0, |dir| {
            dir.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|name| name.starts_with(prefix))
                })
                .count()
        })
    }

    #[test]
    fn a_thread_whose_request_ends_after_close_exits_instead_of_waiting() {
        let t = Threading::new().keep_alive(Duration::from_secs(60));
        let (release, released) = crossbeam_channel::bounded::<()>(0);
        let (running_tx, running) = crossbeam_channel::bounded::<()>(1);
        // A peer no other test uses: the thread is `conn 127.0.0.7:7`.
        let job = Job::new(Address::Inet("127.0.0.7:7".parse().unwrap()), move || {
            let _ = running_tx.send(());
            let _ = released.recv_timeout(Duration::from_secs(10));
            true
        });
        t.execute(job, &handle()).unwrap();
        running.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(threads_named("conn 127.0.0.7"), 1);
        t.close();
        release.send(()).unwrap();
        // It exits, instead of waiting 60 s for a request.
        wait_for("the thread exited", || threads_named("conn 127.0.0.7") == 0);
        assert_eq!(t.idle_threads(), 0);
    }

    #[test]
    fn without_keep_alive_every_request_gets_a_new_thread() {
        let t = Threading::new().keep_alive(Duration::ZERO);
        let (ran, threads) = (Arc::default(), Arc::default());
        let shutdown = handle();
        for i in 1..=3 {
            t.execute(job(&ran, &threads), &shutdown).unwrap();
            wait_for("the job ran", || ran.load(Ordering::SeqCst) == i);
        }
        t.close();
        let ids = threads.lock().clone();
        assert!(ids[0] != ids[1] && ids[1] != ids[2]);
        assert_eq!(t.idle_threads(), 0);
    }
}
