//! [`ShutdownHandle`]: stop a running server from anywhere, at once.
//!
//! The server loop waits with `poll(2)` on its socket *and* on the read end of
//! a socket pair. [`ShutdownHandle::shutdown`] writes one byte into the other
//! end, so `serve_forever` wakes and returns immediately: no timer, no 0.5 s
//! polling as in Python, no CPU use while idle. Writing a byte is
//! async-signal-safe and works from a forked child too (it shares the pair),
//! which is how [`ShutdownHandle::shutdown_on_signals`] works.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A signal that can stop a server (see
/// [`ShutdownHandle::shutdown_on_signals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// `SIGINT` (^C).
    Int,
    /// `SIGTERM` (`kill`, systemd's stop).
    Term,
    /// `SIGHUP` (the terminal went away).
    Hup,
    /// `SIGQUIT` (^\\).
    Quit,
    /// `SIGUSR1`.
    Usr1,
    /// `SIGUSR2`.
    Usr2,
}

impl Signal {
    /// The signal's number on this platform, e.g. `libc::SIGTERM`.
    pub fn number(self) -> i32 {
        match self {
            Signal::Int => libc::SIGINT,
            Signal::Term => libc::SIGTERM,
            Signal::Hup => libc::SIGHUP,
            Signal::Quit => libc::SIGQUIT,
            Signal::Usr1 => libc::SIGUSR1,
            Signal::Usr2 => libc::SIGUSR2,
        }
    }
}

/// Set once a process asked for shutdown on signals, so forked children can
/// restore default dispositions.
pub(crate) static SIGNAL_HANDLERS_INSTALLED: AtomicBool = AtomicBool::new(false);

#[derive(Debug)]
struct Inner {
    /// Shared with the signal handlers of `shutdown_on_signals` (hence the
    /// `Arc`), which set it too.
    requested: Arc<AtomicBool>,
    /// Set by those signal handlers only, never cleared: a stop signal
    /// reached this process (an upgrade's drain watches it).
    signalled: Arc<AtomicBool>,
    /// The server's socket was handed over to a successor process (an
    /// upgrade): the loop's stop is then a hand-over, which does not stop
    /// a request running inline in it, since nothing is closed for being
    /// idle then (a stop signal still stops it).
    handed_over: AtomicBool,
    writer: UnixStream,
}

/// A cloneable, `Send + Sync` handle that asks a server to stop.
///
/// Obtain it with `Server::shutdown_handle`, or from inside a handler with
/// `StreamRequest::shutdown_handle` / `DatagramRequest::shutdown_handle`.
/// Unlike Python's `server.shutdown()`, calling it never blocks, so it is safe
/// from inside a handler, from a signal-handling thread, or before
/// `serve_forever` has started (then `serve_forever` returns at once).
///
/// ```
/// use socketserver::{StreamRequest, ThreadingTcpServer};
///
/// let server = ThreadingTcpServer::bind("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
/// let handle = server.shutdown_handle();
/// let t = std::thread::spawn(move || server.serve_forever());
/// handle.shutdown();
/// t.join().unwrap()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    inner: Arc<Inner>,
}

/// The byte `shutdown` writes. Any byte but [`POKE`] means shutdown
/// (signal-hook writes its own).
const SHUTDOWN: u8 = b'S';
/// The byte that only wakes the loop.
pub(crate) const POKE: u8 = b'+';

/// What the loop found on its wake-up socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Wake {
    /// Shutdown was asked (by a handle or a signal).
    pub(crate) shutdown: bool,
}

/// The server's side of the wake-up pair.
#[derive(Debug, Clone)]
pub(crate) struct WakeReceiver {
    reader: Arc<UnixStream>,
}

pub(crate) fn wake_pair() -> io::Result<(ShutdownHandle, WakeReceiver)> {
    let (reader, writer) = UnixStream::pair()?;
    reader.set_nonblocking(true)?;
    writer.set_nonblocking(true)?;
    Ok((
        ShutdownHandle {
            inner: Arc::new(Inner {
                requested: Arc::new(AtomicBool::new(false)),
                signalled: Arc::new(AtomicBool::new(false)),
                handed_over: AtomicBool::new(false),
                writer,
            }),
        },
        WakeReceiver {
            reader: Arc::new(reader),
        },
    ))
}

impl ShutdownHandle {
    /// Asks the server to stop; `serve_forever` returns as soon as the
    /// request that is running inline (if any) is done. Returns at once.
    /// Calling it again is harmless.
    pub fn shutdown(&self) {
        // The byte first, then the flag: a loop that sees the flag finds
        // the byte there to consume, so no stale byte ends the next run.
        // A full buffer (WouldBlock) means wake-ups are already pending.
        let _ = (&self.inner.writer).write(&[SHUTDOWN]);
        self.inner.requested.store(true, Ordering::SeqCst);
    }

    /// Whether the server is stopping: shutdown was asked, or
    /// `serve_forever` has returned (until it runs again). Long-running
    /// handlers can check it to finish early during a graceful close.
    pub fn is_shutdown_requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Shuts the server down when one of `signals` (e.g. `SIGINT`, `SIGTERM`)
    /// arrives. The signal handler only writes a byte to the wake-up socket
    /// (async-signal-safe, via `signal-hook`); the server loop does the rest.
    /// Forked children of the server get the default dispositions back, so
    /// ^C still ends them.
    ///
    /// ```no_run
    /// # use socketserver::{Signal, StreamRequest, TcpServer};
    /// let server = TcpServer::bind("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
    /// server.shutdown_handle().shutdown_on_signals(&[Signal::Int, Signal::Term])?;
    /// server.serve_forever()?; // returns on ^C or `kill`
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown_on_signals(&self, signals: &[Signal]) -> io::Result<()> {
        for sig in signals.iter().map(|s| s.number()) {
            // The flag as well as the byte: a strategy that waits inside
            // `execute` (Forking at `max_children`, Pool with a full queue)
            // only checks the flag, and the loop checks it between requests.
            // With the byte alone, SIGTERM to a forking server whose 40
            // children hold idle connections went unnoticed until a child
            // exited. Setting an AtomicBool is async-signal-safe.
            signal_hook::flag::register(sig, Arc::clone(&self.inner.requested))?;
            signal_hook::flag::register(sig, Arc::clone(&self.inner.signalled))?;
            let writer = self.inner.writer.try_clone()?;
            signal_hook::low_level::pipe::register(sig, writer)?;
        }
        SIGNAL_HANDLERS_INSTALLED.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The server's socket serves a successor process now: a stop from
    /// here on is a hand-over, which leaves a request running inline in
    /// the loop to end on its own terms
    /// ([`stops_inline_requests`](Self::stops_inline_requests)).
    pub(crate) fn mark_handed_over(&self) {
        self.inner.handed_over.store(true, Ordering::SeqCst);
    }

    /// Whether [`mark_handed_over`](Self::mark_handed_over) was called.
    pub(crate) fn is_handed_over(&self) -> bool {
        self.inner.handed_over.load(Ordering::SeqCst)
    }

    /// Whether a request running inline in the loop (`Synchronous`) is to
    /// stop at its next message boundary: a shutdown, unless it is a
    /// hand-over (then only a stop signal since).
    pub(crate) fn stops_inline_requests(&self) -> bool {
        self.is_shutdown_requested() && (!self.is_handed_over() || self.stop_signalled())
    }

    /// Whether one of the signals given to
    /// [`shutdown_on_signals`](Self::shutdown_on_signals) arrived (ever).
    pub(crate) fn stop_signalled(&self) -> bool {
        self.inner.signalled.load(Ordering::SeqCst)
    }

    /// A second writer on the wake-up socket (for a signal's action).
    pub(crate) fn wake_writer(&self) -> io::Result<UnixStream> {
        self.inner.writer.try_clone()
    }

    /// Wakes the loop without asking it to stop (a connection slot freed).
    pub(crate) fn poke(&self) {
        let _ = (&self.inner.writer).write(&[POKE]);
    }

    /// Sets the flag without waking anyone.
    pub(crate) fn shutdown_flag_only(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
    }

    pub(crate) fn clear(&self) {
        self.inner.requested.store(false, Ordering::SeqCst);
    }
}

impl WakeReceiver {
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.reader.as_raw_fd()
    }

    /// Reads every pending wake-up byte.
    pub(crate) fn drain(&self) -> Wake {
        let mut buf = [0u8; 64];
        let mut wake = Wake::default();
        loop {
            match (&*self.reader).read(&mut buf) {
                Ok(0) => return wake,
                Ok(n) => wake.shutdown |= buf[..n].iter().any(|&b| b != POKE),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return wake,
            }
        }
    }
}

/// What a request waiting for a new message watches besides its socket,
/// when no other thread can wake it: the server's wake-up socket (the
/// request runs inline in the server loop, `Synchronous`), or the SIGTERM
/// pipe of a forked child.
#[derive(Debug, Clone)]
pub(crate) enum Stop {
    /// The request runs in the server loop's thread.
    Server {
        wake: WakeReceiver,
        handle: ShutdownHandle,
    },
    /// The request runs in a forked child; SIGTERM asks it to stop.
    Child(BorrowedFd<'static>),
}

/// How [`Stop::wait_readable`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The socket is readable.
    Ready,
    /// A stop was asked: treat the connection as ended.
    Stop,
    /// The timeout passed.
    TimedOut,
}

impl Stop {
    /// The stop of this process if it is a forked child serving a request.
    /// In a `PreFork` child the server loop runs and drains the
    /// connections itself: there only inline requests need a stop.
    pub(crate) fn for_forked_child() -> Option<Stop> {
        if crate::sys::child_runs_loop() {
            return None;
        }
        crate::sys::child_stop_fd().map(Stop::Child)
    }

    fn requested(&self) -> bool {
        match self {
            Stop::Server { handle, .. } => handle.stops_inline_requests(),
            Stop::Child(_) => crate::sys::child_stop_requested(),
        }
    }

    /// Whether a stop was asked, by the server's handle or, in a forked
    /// child, by SIGTERM.
    pub(crate) fn stop_requested(&self) -> bool {
        self.requested() || crate::sys::child_stop_requested()
    }

    /// Waits until `socket` is readable, a stop is asked, or `timeout`
    /// passes.
    pub(crate) fn wait_readable(
        &self,
        socket: BorrowedFd<'_>,
        timeout: Option<Duration>,
    ) -> io::Result<Waited> {
        let end = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if self.requested() {
                // A message already waiting is read; only silence stops.
                return Ok(if crate::sys::readable_now(socket) {
                    Waited::Ready
                } else {
                    Waited::Stop
                });
            }
            let left = end.map(|e| e.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(Waited::TimedOut);
            }
            let watched = match self {
                Stop::Server { wake, .. } => wake.raw_fd(),
                Stop::Child(fd) => fd.as_raw_fd(),
            };
            let ready = crate::sys::poll_read(Some(socket), watched, left)?;
            if ready.socket {
                return Ok(Waited::Ready);
            }
            if ready.wake {
                match self {
                    // A stop not flagged yet (a byte from a forked child's
                    // handle): flag it, so that the loop sees it although
                    // its byte is gone. A mere poke is dropped: the loop
                    // cannot be waiting for it while we run in its thread.
                    // Flagged already (a hand-over, which leaves this
                    // request be): the byte is spent all the same.
                    Stop::Server { wake, handle } => {
                        if wake.drain().shutdown && !handle.is_shutdown_requested() {
                            handle.shutdown_flag_only();
                        }
                    }
                    Stop::Child(_) => crate::sys::drain_child_stop(),
                }
            }
        }
    }
}
