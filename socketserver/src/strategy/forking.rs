use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::{Job, Strategy};
use crate::shutdown::SIGNAL_HANDLERS_INSTALLED;
use crate::sys::{self, ChildExit, Fork};
use crate::ShutdownHandle;

/// A child process per request. Python: `ForkingMixIn`.
///
/// The parent forks, closes its copy of the connection and goes back to
/// accepting; the child runs the handler and leaves with `_exit` (no
/// destructors, no atexit handlers, no double-flushed stdio). A crash in one
/// request cannot touch the others or the server.
///
/// * At most `max_children` (default 40, as in Python) run at once; at the
///   limit the server stops accepting until one exits.
/// * Children are reaped with `waitpid(WNOHANG)` after every wake-up, and
///   while any child runs the loop wakes at least every 100 ms to reap, so
///   no zombie lingers; an idle server with no children sleeps without a
///   timer. Only this server's own children are waited for.
/// * Closing the server waits for all children (Python's `block_on_close`).
/// * A child killed by a signal is logged at warn level.
///
/// # Forking a multi-threaded process
///
/// `fork` copies only the calling thread. A lock held by any other thread at
/// that moment (the allocator's, a logger's, stdout's, a `Mutex` of yours)
/// stays locked forever in the child, which then hangs the first time it
/// takes that lock. Serve with `Forking` from a process whose other threads
/// are quiet, ideally a process with no other threads at all (no
/// `Threading`/`Pool` server in the same process, no background threads).
/// The strategy checks `/proc/self/task` before forking and logs a warning
/// once if other threads exist.
///
/// ```no_run
/// use socketserver::{ForkingTcpServer, StreamRequest};
///
/// let server = ForkingTcpServer::bind("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
/// server.serve_forever()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Forking {
    max_children: usize,
    children: Mutex<Vec<libc::pid_t>>,
    warned: AtomicBool,
}

impl Default for Forking {
    fn default() -> Forking {
        Forking::new()
    }
}

/// How long the loop may sleep while children run before reaping again.
const REAP_INTERVAL: Duration = Duration::from_millis(100);

impl Forking {
    /// `max_children` 40, as in Python.
    pub fn new() -> Forking {
        Forking {
            max_children: 40,
            children: Mutex::new(Vec::new()),
            warned: AtomicBool::new(false),
        }
    }

    /// Most children alive at once (at least 1).
    pub fn max_children(mut self, n: usize) -> Forking {
        self.max_children = n.max(1);
        self
    }

    /// Pids of the children running now.
    pub fn children(&self) -> Vec<libc::pid_t> {
        self.children.lock().clone()
    }

    /// Reaps finished children without blocking (or, with `block`, waits for
    /// all of them).
    fn reap(&self, block: bool) {
        self.children
            .lock()
            .retain(|&pid| match sys::waitpid(pid, block) {
                Ok(None) => true,
                Ok(Some(exit)) => {
                    match exit {
                        ChildExit::Code(0) => {}
                        ChildExit::Code(c) => log::debug!("child {pid} exited with status {c}"),
                        ChildExit::Signal(s) => log::warn!("child {pid} was killed by signal {s}"),
                    }
                    false
                }
                Err(e) => {
                    // ECHILD: someone else reaped it (e.g. SIGCHLD set to SIG_IGN).
                    log::debug!("waitpid({pid}): {e}");
                    false
                }
            });
    }

    fn warn_if_threaded(&self) {
        if self.warned.load(Ordering::Relaxed) {
            return;
        }
        if let Some(n) = sys::thread_count().filter(|&n| n > 1) {
            self.warned.store(true, Ordering::Relaxed);
            log::warn!(
                "forking a process with {n} threads: only the forking thread exists in the child, \
                 and a lock another thread holds stays locked there forever (see the Forking docs)"
            );
        }
    }
}

impl Strategy for Forking {
    fn execute(&self, job: Job, shutdown: &ShutdownHandle) -> io::Result<()> {
        self.reap(false);
        while self.children.lock().len() >= self.max_children {
            if shutdown.is_shutdown_requested() {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    format!(
                        "shutdown while waiting for a child to exit before serving {}",
                        job.peer()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
            self.reap(false);
        }
        self.warn_if_threaded();
        match sys::fork()? {
            Fork::Child => {
                if SIGNAL_HANDLERS_INSTALLED.load(Ordering::Relaxed) {
                    sys::reset_signal_dispositions();
                }
                let ok = job.run();
                sys::exit_immediately(if ok { 0 } else { 1 })
            }
            Fork::Parent(pid) => {
                // Closes the parent's copy of the connection.
                drop(job);
                self.children.lock().push(pid);
                Ok(())
            }
        }
    }

    fn service(&self) {
        self.reap(false)
    }

    fn next_wakeup(&self) -> Option<Duration> {
        (!self.children.lock().is_empty()).then_some(REAP_INTERVAL)
    }

    fn close(&self) {
        self.reap(true)
    }

    fn active(&self) -> usize {
        self.children.lock().len()
    }

    fn wait_idle(&self, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        loop {
            self.reap(false);
            if self.children.lock().is_empty() {
                return true;
            }
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn terminate(&self) {
        for &pid in self.children.lock().iter() {
            sys::kill(pid, libc::SIGTERM);
        }
    }

    fn name(&self) -> &'static str {
        "forking"
    }
}
