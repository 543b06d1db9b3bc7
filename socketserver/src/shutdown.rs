//! [`ShutdownHandle`]: stop a running server from anywhere, at once.
//!
//! The server loop waits with `poll(2)` on its socket *and* on the read end of
//! a socket pair. [`ShutdownHandle::shutdown`] writes one byte into the other
//! end, so `serve_forever` wakes and returns immediately: no timer, no 0.5 s
//! polling as in Python, no CPU use while idle. Writing a byte is
//! async-signal-safe and works from a forked child too (it shares the pair),
//! which is how [`ShutdownHandle::shutdown_on_signals`] works.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Set once a process asked for shutdown on signals, so forked children can
/// restore default dispositions.
pub(crate) static SIGNAL_HANDLERS_INSTALLED: AtomicBool = AtomicBool::new(false);

#[derive(Debug)]
struct Inner {
    /// Shared with the signal handlers of `shutdown_on_signals` (hence the
    /// `Arc`), which set it too.
    requested: Arc<AtomicBool>,
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
const POKE: u8 = b'+';

/// What the loop found on its wake-up socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Wake {
    /// Shutdown was asked (by a handle or a signal).
    pub(crate) shutdown: bool,
}

/// The server's side of the wake-up pair.
#[derive(Debug)]
pub(crate) struct WakeReceiver {
    reader: UnixStream,
}

pub(crate) fn wake_pair() -> io::Result<(ShutdownHandle, WakeReceiver)> {
    let (reader, writer) = UnixStream::pair()?;
    reader.set_nonblocking(true)?;
    writer.set_nonblocking(true)?;
    Ok((
        ShutdownHandle {
            inner: Arc::new(Inner {
                requested: Arc::new(AtomicBool::new(false)),
                writer,
            }),
        },
        WakeReceiver { reader },
    ))
}

impl ShutdownHandle {
    /// Asks the server to stop; `serve_forever` returns as soon as the
    /// request that is running inline (if any) is done. Returns at once.
    /// Calling it again is harmless.
    pub fn shutdown(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        // A full buffer (WouldBlock) means wake-ups are already pending.
        let _ = (&self.inner.writer).write(&[SHUTDOWN]);
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
    /// # use socketserver::{StreamRequest, TcpServer};
    /// let server = TcpServer::bind("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
    /// server.shutdown_handle().shutdown_on_signals(&[libc::SIGINT, libc::SIGTERM])?;
    /// server.serve_forever()?; // returns on ^C or `kill`
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown_on_signals(&self, signals: &[i32]) -> io::Result<()> {
        for &sig in signals {
            // The flag as well as the byte: a strategy that waits inside
            // `execute` (Forking at `max_children`, Pool with a full queue)
            // only checks the flag, and the loop checks it between requests.
            // With the byte alone, SIGTERM to a forking server whose 40
            // children hold idle connections went unnoticed until a child
            // exited. Setting an AtomicBool is async-signal-safe.
            signal_hook::flag::register(sig, Arc::clone(&self.inner.requested))?;
            let writer = self.inner.writer.try_clone()?;
            signal_hook::low_level::pipe::register(sig, writer)?;
        }
        SIGNAL_HANDLERS_INSTALLED.store(true, Ordering::SeqCst);
        Ok(())
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
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }

    /// Reads every pending wake-up byte.
    pub(crate) fn drain(&self) -> Wake {
        let mut buf = [0u8; 64];
        let mut wake = Wake::default();
        loop {
            match (&self.reader).read(&mut buf) {
                Ok(0) => return wake,
                Ok(n) => wake.shutdown |= buf[..n].iter().any(|&b| b != POKE),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return wake,
            }
        }
    }
}
