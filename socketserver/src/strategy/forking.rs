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
/// * The child closes the server's listening and wake-up sockets at once: a
///   killed server leaves no child holding its port.
/// * Closing the server drains: each child gets SIGTERM, which ends a
///   connection waiting for a new message at once (see
///   [`StreamRequest::read_message`](crate::StreamRequest::read_message))
///   and lets a busy one finish its message; children left at the close
///   deadline get SIGKILL. A second SIGTERM ends a child at once.
/// * A child killed by a signal is logged at warn level.
///
/// # State is per child
///
/// Each request runs in a copy of the server process: what the handler
/// changes in its shared state (`&self`, a counter, a map behind a `Mutex`)
/// changes the child's copy only and is gone when the child exits. A
/// key-value store served with `Forking` loses every write, with no error.
/// Keep shared state outside the process (a file, a database) or use
/// [`Threading`](crate::Threading)/[`Pool`](crate::Pool). Likewise
/// [`Server::stats`](crate::Server::stats) counts `completed`/`failed` in
/// the parent only, where no request runs.
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
    /// A graceful close began: a child forked from now on is told at once.
    draining: AtomicBool,
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
            draining: AtomicBool::new(false),
            warned: AtomicBool::new(false),
        }
    }

    /// Most children alive at once (at least 1).
    #[must_use]
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

    fn warn_if_threaded(&self, threads: usize) {
        if threads > 1 && !self.warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "forking a process with {threads} threads: only the forking thread exists in the \
                 child, and a lock another thread holds stays locked there forever; children of \
                 this server do not log (see the Forking docs)"
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
        let threads = sys::thread_count().unwrap_or(1);
        self.warn_if_threaded(threads);
        // SIGTERM waits, in the child, until its own handler is in place:
        // a drain that begins as it is forked reaches it all the same.
        let term_blocked = sys::block_term();
        match sys::fork()? {
            Fork::Child => {
                // Nothing here may take a lock another thread of the parent
                // could have held at fork time.
                for &fd in job.server_fds() {
                    sys::close_in_child(fd);
                }
                if SIGNAL_HANDLERS_INSTALLED.load(Ordering::Relaxed) {
                    sys::reset_signal_dispositions();
                }
                if threads > 1 {
                    // The logger may hold a lock (its output stream's) that
                    // another thread held at fork time: logging would hang
                    // this child forever. Its outcome still reaches the
                    // parent as the exit status.
                    log::set_max_level(log::LevelFilter::Off);
                }
                // Without a stop pipe the child would still serve; SIGTERM
                // then just ends it (the default) at the drain deadline.
                let _ = sys::install_child_stop();
                // A SIGTERM sent meanwhile (the parent's drain, or one to
                // the process group) runs the handler just installed.
                drop(term_blocked);
                let ok = job.run();
                sys::exit_immediately(if ok { 0 } else { 1 })
            }
            Fork::Parent(pid) => {
                drop(term_blocked);
                // Closes the parent's copy of the connection.
                drop(job);
                let mut children = self.children.lock();
                children.push(pid);
                // Under the lock `begin_drain` signals the children with:
                // either it saw this one, or the flag is set by now.
                if self.draining.load(Ordering::SeqCst) {
                    sys::kill(pid, libc::SIGTERM);
                }
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
        self.reap(false)
    }

    fn active(&self) -> usize {
        // Reaped here too: once the loop has returned (an upgrade's drain
        // waiting for the children to finish) nothing else reaps them.
        self.reap(false);
        self.children.lock().len()
    }

    fn wait_idle(&self, timeout: Duration) -> bool {
        let end = crate::timeouts::deadline_after(timeout);
        loop {
            self.reap(false);
            if self.children.lock().is_empty() {
                return true;
            }
            if end.is_some_and(|end| std::time::Instant::now() >= end) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for &pid in self.children.lock().iter() {
            sys::kill(pid, libc::SIGTERM);
        }
    }

    fn terminate(&self) {
        for &pid in self.children.lock().iter() {
            sys::kill(pid, libc::SIGKILL);
        }
    }

    fn name(&self) -> &'static str {
        super::FORKING
    }
}
