//! Strategies: how one request runs. Swap one for another in one line; the
//! handler does not change.
//!
//! | strategy | a request runs | Python |
//! |---|---|---|
//! | [`Synchronous`] | inline, in the server loop, one at a time | `TCPServer` |
//! | [`Threading`] | on a new thread | `ThreadingMixIn` |
//! | [`Pool`] | on one of N long-lived worker threads | (none) |
//! | [`Forking`] | in a child process (changes to the handler's shared state stay in the child) | `ForkingMixIn` |
//! | `Green` | as a coroutine on one of N reactor threads (feature `green`) | (none; gevent) |
//! | [`PreFork`] | in one of N long-lived child processes, which accept themselves | (none; Perl's `Net::Server::PreFork`) |
//!
//! A strategy gets a [`Job`] (the request, bound to its handler) and must run
//! it exactly once, or drop it (which closes the connection).

mod forking;

/// `Forking`'s name ([`Strategy::name`]).
pub(crate) const FORKING: &str = "forking";

/// `Green`'s name ([`Strategy::name`]).
pub(crate) const GREEN: &str = "green";
#[cfg(feature = "green")]
mod green;
mod pool;
mod prefork;
mod synchronous;
mod threading;

pub use forking::Forking;
#[cfg(feature = "green")]
pub use green::Green;
pub use pool::Pool;
pub use prefork::PreFork;
pub use synchronous::Synchronous;
pub use threading::Threading;

use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::{Address, ShutdownHandle};

/// One request bound to its handler, ready to run anywhere.
pub struct Job {
    peer: Address,
    run: Box<dyn FnOnce() -> bool + Send>,
    server_fds: ServerFds,
}

/// The server's own descriptors noted on a job (the wake-up socket, and
/// the listening sockets of a stream server): listed once per server and
/// shared, so that noting them costs no allocation per request.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerFds {
    fds: Option<Arc<[RawFd]>>,
}

impl ServerFds {
    /// Notes `fds`.
    pub(crate) fn new(fds: Vec<RawFd>) -> ServerFds {
        ServerFds {
            fds: Some(fds.into()),
        }
    }
}

impl Job {
    /// A job for a request from `peer`; `run` returns whether the request
    /// succeeded.
    pub fn new(peer: Address, run: impl FnOnce() -> bool + Send + 'static) -> Job {
        Job {
            peer,
            run: Box::new(run),
            server_fds: ServerFds::default(),
        }
    }

    /// The same job, noting the server's own descriptors (see
    /// [`server_fds`](Self::server_fds)).
    pub(crate) fn with_server_fds(mut self, fds: ServerFds) -> Job {
        self.server_fds = fds;
        self
    }

    /// The descriptors noted on this job, to note them on another.
    pub(crate) fn noted_server_fds(&self) -> ServerFds {
        self.server_fds.clone()
    }

    /// The server's own descriptors (its listening sockets, all of a
    /// `Listeners` set, and its wake-up socket): a process forked to run
    /// this job must close them at once, or it keeps the port open after
    /// the server is gone. [`Forking`] does.
    pub fn server_fds(&self) -> &[RawFd] {
        self.server_fds.fds.as_deref().unwrap_or_default()
    }

    /// Who the request is from.
    pub fn peer(&self) -> &Address {
        &self.peer
    }

    /// Runs the request (handler panics are already caught inside); returns
    /// whether it succeeded.
    pub fn run(self) -> bool {
        (self.run)()
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// How requests run. Implemented by [`Synchronous`], [`Threading`],
/// [`Pool`], [`Forking`] and `Green`; implement it for a strategy of your own.
pub trait Strategy: Send + Sync + 'static {
    /// Runs `job` (now, on a thread, in a child...). An error means the job
    /// could not be started; it has been dropped and its connection closed.
    /// `shutdown` lets a strategy that has to wait (a full queue, too many
    /// children) give up when the server is asked to stop.
    fn execute(&self, job: Job, shutdown: &ShutdownHandle) -> io::Result<()>;

    /// Housekeeping after each wake-up of the server loop (e.g. reaping
    /// children).
    fn service(&self) {}

    /// The longest the server loop may sleep before `service` must run
    /// again (`None`: until the next event).
    fn next_wakeup(&self) -> Option<Duration> {
        None
    }

    /// Called when the server closes, after its graceful drain: release
    /// what the strategy holds (worker threads, kept-alive threads, reap
    /// children). Requests still running then were given up on.
    fn close(&self) {}

    /// Whether closing the server waits for running requests (default
    /// `true`; `Threading` with `daemon_threads` does not).
    fn blocks_on_close(&self) -> bool {
        true
    }

    /// Whether `execute` runs the job on the server loop's own thread
    /// (`Synchronous`). A request waiting for a new message then also
    /// watches for a shutdown request, since the loop cannot act on one
    /// until the request returns. Default `false`.
    fn runs_inline(&self) -> bool {
        false
    }

    /// A graceful close begins: ask running requests that the server cannot
    /// reach through their sockets to finish at their next message boundary
    /// (Forking: SIGTERM to the children). Default: nothing.
    fn begin_drain(&self) {}

    /// Requests running now where the server cannot count them: in
    /// processes of the strategy's own (`Forking`, `PreFork`: its
    /// children). The server counts every job it made itself, from
    /// `execute` until the job ran or was dropped, so a strategy that runs
    /// jobs in this process has nothing to count. Default: 0.
    fn active(&self) -> usize {
        0
    }

    /// Waits until the requests counted by [`active`](Self::active) ended,
    /// at most `timeout`; returns whether they did. A graceful close calls
    /// it after the server's own jobs ended. Default: `active() == 0`.
    fn wait_idle(&self, timeout: Duration) -> bool {
        let _ = timeout;
        self.active() == 0
    }

    /// Milliseconds the strategy's threads were held by requests that did
    /// not let the others run (`Green`: coroutines that ran 1 ms or more
    /// without yielding); reported as
    /// [`Stats::green_blocked_ms`](crate::Stats::green_blocked_ms).
    /// Default: 0.
    fn blocked_ms(&self) -> u64 {
        0
    }

    /// The drain deadline passed: stop running requests that the server
    /// cannot reach through their sockets (Forking: SIGKILL to the
    /// children). Default: nothing.
    fn terminate(&self) {}

    /// A short name: `synchronous`, `threading`, `pool`, `forking`, `green`,
    /// `prefork`.
    fn name(&self) -> &'static str;

    /// Runs the server: by default `server.serve()`, the accept loop in the
    /// calling thread, which hands each request to [`execute`](Self::execute).
    /// A strategy may take the loop over instead: [`PreFork`] forks children
    /// that each run the loop on the shared listening socket, and supervises
    /// them here. Called by `Server::serve_forever`.
    fn run(&self, server: &dyn ServerLoop) -> io::Result<()> {
        server.serve()
    }
}

/// The server as a strategy that takes over its loop sees it (see
/// [`Strategy::run`]).
pub trait ServerLoop {
    /// The accept loop, in the calling thread, until shutdown is asked.
    fn serve(&self) -> io::Result<()>;

    /// In a process forked by the strategy (after it called nothing but
    /// async-signal-safe setup): the loop, with the child's SIGTERM as its
    /// stop, then a graceful close of this process's own connections within
    /// the server's close timeout. The listening socket stays open (it is
    /// shared). Returns when the child should leave.
    ///
    /// A loop that ended otherwise than by SIGTERM (the strategy asked the
    /// child to leave: recycled, retired, or the server handed over to a
    /// successor) first lets the connections it accepted end on their own
    /// terms, for at most `linger()` (`None`: until they end or SIGTERM
    /// comes), without closing idle ones; SIGTERM meanwhile switches to the
    /// graceful close at once.
    fn serve_in_child(&self, linger: &dyn Fn() -> Option<Duration>) -> io::Result<()>;

    /// Whether the loop ended because the server handed its socket over to
    /// a successor process (a zero-downtime upgrade): its connections are
    /// to end on their own terms, not be closed. Default `false`.
    fn handed_over(&self) -> bool {
        false
    }

    /// Whether the loop ended for an upgrade to start (the signal of an
    /// upgrade watched without a thread; see `reload::Upgrade::serve`):
    /// `serve_forever` is called again afterwards, so a strategy that took
    /// the loop over keeps what it runs (`PreFork`: its children). Default
    /// `false`.
    fn upgrade_requested(&self) -> bool {
        false
    }

    /// Closes the listening sockets to new clients (refused from now on,
    /// those queued reset), as a graceful close does first: for a strategy
    /// whose loop ends in a drain of its own (`PreFork` drains its
    /// children before `serve_forever` returns). Nothing after a hand-over
    /// (the socket serves the successor). Default: nothing.
    fn stop_listening(&self) {}

    /// Waits until a shutdown is asked (returns `true`), `also` is readable
    /// or `timeout` passes (`false`).
    fn wait(&self, also: Option<BorrowedFd<'_>>, timeout: Option<Duration>) -> io::Result<bool>;

    /// A handle on the server's shutdown flag (in a forked child: that
    /// child's copy, which stops that child's loop only).
    fn shutdown_handle(&self) -> ShutdownHandle;

    /// How long a graceful close waits for busy requests.
    fn close_timeout(&self) -> Duration;

    /// `SCHEME://ADDR`, for logs.
    fn url(&self) -> String;

    /// The same loop as an owned handle, for a strategy that runs it on a
    /// thread of its own (`Green` runs it as a coroutine on a worker, so
    /// that connections start where they are accepted) while the thread
    /// that called `serve_forever` waits for it. Default `None`: a loop
    /// that cannot be detached runs on the calling thread.
    fn detach(&self) -> Option<std::sync::Arc<dyn ServerLoop + Send + Sync>> {
        None
    }
}

impl Strategy for Box<dyn Strategy> {
    fn execute(&self, job: Job, shutdown: &ShutdownHandle) -> io::Result<()> {
        (**self).execute(job, shutdown)
    }
    fn service(&self) {
        (**self).service()
    }
    fn next_wakeup(&self) -> Option<Duration> {
        (**self).next_wakeup()
    }
    fn close(&self) {
        (**self).close()
    }
    fn blocks_on_close(&self) -> bool {
        (**self).blocks_on_close()
    }
    fn runs_inline(&self) -> bool {
        (**self).runs_inline()
    }
    fn begin_drain(&self) {
        (**self).begin_drain()
    }
    fn active(&self) -> usize {
        (**self).active()
    }
    fn wait_idle(&self, timeout: Duration) -> bool {
        (**self).wait_idle(timeout)
    }
    fn blocked_ms(&self) -> u64 {
        (**self).blocked_ms()
    }
    fn terminate(&self) {
        (**self).terminate()
    }
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn run(&self, server: &dyn ServerLoop) -> io::Result<()> {
        (**self).run(server)
    }
}

/// The names [`from_name`] accepts.
#[cfg(feature = "green")]
pub const NAMES: [&str; 6] = [
    "synchronous",
    "threading",
    "pool",
    "forking",
    "prefork",
    "green",
];
/// The names [`from_name`] accepts.
#[cfg(not(feature = "green"))]
pub const NAMES: [&str; 5] = ["synchronous", "threading", "pool", "forking", "prefork"];

/// A strategy with default settings chosen by name at run time (for
/// command lines): one of [`NAMES`].
///
/// ```
/// let s = socketserver::strategy::from_name("threading").unwrap();
/// assert_eq!(s.name(), "threading");
/// assert!(socketserver::strategy::from_name("greenlets").is_err());
/// ```
pub fn from_name(name: &str) -> io::Result<Box<dyn Strategy>> {
    Ok(match name {
        "synchronous" | "sync" => Box::new(Synchronous),
        "threading" | "threads" => Box::new(Threading::new()),
        "pool" => Box::new(Pool::default()),
        "forking" | "fork" => Box::new(Forking::new()),
        "prefork" => Box::new(PreFork::new()),
        #[cfg(feature = "green")]
        "green" => Box::new(Green::new()),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "unknown strategy {name:?}: expected one of {}",
                    NAMES.join(", ")
                ),
            ))
        }
    })
}
