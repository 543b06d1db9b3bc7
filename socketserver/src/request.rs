//! What a handler receives: [`StreamRequest`] (one accepted connection) and
//! [`DatagramRequest`] (one datagram and a way to answer it).

use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::conn::Conn;
use crate::connections::{Registration, Registry};
use crate::layer::Layer;
use crate::shutdown::Stop;
use crate::timeouts::Timeouts;
use crate::{Address, ShutdownHandle, Stats};

const BUF_SIZE: usize = 8 * 1024;

/// The largest buffer `echo` grows to.
const MAX_ECHO_BUF: usize = 64 * 1024;

/// The stack buffer [`StreamRequest::echo`] starts with.
const SMALL_ECHO_BUF: usize = 1024;

/// One accepted connection, handed to a [`StreamHandler`](crate::StreamHandler).
///
/// A `StreamRequest` is itself a buffered reader and writer, like Python's
/// `rfile` and `wfile` rolled into one: it implements [`Read`], [`BufRead`]
/// (`read_line`, `lines`, `read_until`) and [`Write`]. [`rfile`](Self::rfile)
/// and [`wfile`](Self::wfile) return it under Python's names.
///
/// Writes are buffered (8 KiB) and flushed automatically **before any read
/// that has to wait for the peer** and after `finish`, so a reply is never
/// stuck in the buffer while the handler waits for the next request, and a
/// handler that writes many small pieces costs few system calls.
///
/// ```
/// use socketserver::{StreamRequest, TcpServer};
/// use std::io::{BufRead, Write};
///
/// // A line-based handler: reads lines, answers each with its length.
/// let server = TcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
///     let mut line = String::new();
///     while req.rfile().read_line(&mut line)? > 0 {
///         writeln!(req.wfile(), "{}", line.trim_end().len())?;
///         line.clear();
///     }
///     Ok(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct StreamRequest {
    // Declared before `conn` so it drops first: the registry may shut the
    // socket down only while it is registered, hence still open.
    registration: Option<Registration>,
    registry: Option<Arc<Registry>>,
    conn: Conn,
    peer: Address,
    shutdown: ShutdownHandle,
    rbuf: Vec<u8>,
    rpos: usize,
    rfilled: usize,
    wbuf: Vec<u8>,
    timeouts: Timeouts,
    phase: Phase,
    /// The socket's read timeout as last set here.
    rcvtimeo: RcvTimeout,
    /// Where to watch for a shutdown while waiting for a message, when
    /// nobody else can wake this thread (the request runs inline in the
    /// server loop).
    stop: Option<Stop>,
    state: ConnectionState,
    /// What a PROXY header said, when one named the client.
    proxied: Option<Box<crate::proxy::header::ProxyHeader>>,
    /// A layer over the socket (TLS, under `Builder::tls`): socket reads
    /// and writes go through it.
    layer: Option<Box<dyn Layer>>,
    /// The client has just completed a TLS handshake: its first message is
    /// on its way (see [`FIRST_MESSAGE_GRACE`]).
    awaits_first: bool,
    /// The peer vanished (a read or write said so): counted once.
    gone: bool,
    /// Which of the server's listeners accepted it (0 but for
    /// `Listeners`).
    listener: usize,
}

/// Per-connection values, one per type (see [`StreamRequest::state`]).
#[derive(Default)]
struct ConnectionState(Vec<Box<dyn std::any::Any + Send>>);

impl std::fmt::Debug for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnectionState({} values)", self.0.len())
    }
}

impl ConnectionState {
    fn position<T: 'static>(&self) -> Option<usize> {
        self.0.iter().position(|v| v.is::<T>())
    }

    fn get_or_default<T: Default + Send + 'static>(&mut self) -> &mut T {
        let i = match self.position::<T>() {
            Some(i) => i,
            None => {
                self.0.push(Box::new(T::default()));
                self.0.len() - 1
            }
        };
        match self.0[i].downcast_mut::<T>() {
            Some(v) => v,
            None => unreachable!("the value at {i} was found by its type"),
        }
    }

    fn take<T: 'static>(&mut self) -> Option<T> {
        let i = self.position::<T>()?;
        self.0.swap_remove(i).downcast::<T>().ok().map(|b| *b)
    }
}

/// The socket's read timeout, as far as this request knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RcvTimeout {
    /// Not set here yet.
    Unknown,
    /// Set to this (`None`: no timeout).
    Set(Option<Duration>),
}

impl RcvTimeout {
    fn get(self) -> Option<Duration> {
        match self {
            RcvTimeout::Set(t) => t,
            RcvTimeout::Unknown => None,
        }
    }
}

/// Where a connection is in its messages (see [`StreamRequest::read_message`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not inside `read_message`: reads have the read timeout only.
    Outside,
    /// Inside `read_message`, no byte of the message yet: the connection is
    /// idle.
    Boundary,
    /// Inside `read_message`, the message has begun.
    Message { started: Instant, received: u64 },
    /// Inside `read_within`: every read ends by `until`.
    Within { until: Instant, limit: Duration },
}

/// `write_all` (through the TLS session, if any), a write timeout
/// reported as what it is.
fn write_timed(
    conn: &Conn,
    layer: Option<&mut (dyn Layer + 'static)>,
    buf: &[u8],
    timeout: Option<Duration>,
) -> io::Result<()> {
    let mut out = WriteWithin::new(conn, timeout);
    let result = match layer {
        Some(layer) => layer.write_all(&mut out, buf),
        None => out.write_all(buf),
    };
    result.map_err(|e| write_timed_out(e, timeout))
}

/// Writes to a connection with one deadline for a whole `write_all`: the
/// write timeout. `SO_SNDTIMEO` bounds each `write(2)`, and a client that
/// reads a little now and then would stretch a loop of them to many
/// timeouts. The first write is a plain one (one system call when the
/// socket has room); after a short one, each waits for room until the
/// deadline, then sends what fits without waiting.
struct WriteWithin<'a> {
    conn: &'a Conn,
    started: Instant,
    timeout: Option<Duration>,
    /// Set after the first short write.
    until: Option<Instant>,
}

impl<'a> WriteWithin<'a> {
    fn new(conn: &'a Conn, timeout: Option<Duration>) -> WriteWithin<'a> {
        WriteWithin {
            conn,
            started: Instant::now(),
            timeout,
            until: None,
        }
    }

    fn timed_out() -> io::Error {
        io::ErrorKind::TimedOut.into()
    }
}

impl Write for WriteWithin<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(until) = self.until else {
            let n = (&mut &*self.conn).write(buf)?;
            if n < buf.len() {
                // No deadline without a write timeout: plain writes on.
                self.until = self.timeout.and_then(|t| self.started.checked_add(t));
            }
            return Ok(n);
        };
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || !wait_writable(self.conn.as_fd(), left)? {
                return Err(Self::timed_out());
            }
            match crate::sys::send_nowait(self.conn.as_raw_fd(), buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A write timeout (`SO_SNDTIMEO` ran out) as `TimedOut` with a message
/// that says so; other errors unchanged.
fn write_timed_out(e: io::Error, timeout: Option<Duration>) -> io::Error {
    match timeout {
        Some(t) if is_timeout(&e) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("write timed out after {t:?} (write_timeout): the client does not read"),
        ),
        _ => e,
    }
}

/// How long a client that completed its TLS handshake while the server
/// began to close gets to send its first message before its connection
/// counts as idle and is closed.
const FIRST_MESSAGE_GRACE: Duration = Duration::from_millis(250);

/// Whether an error is a socket timeout of the server's own (`SO_RCVTIMEO`
/// or `SO_SNDTIMEO` ran out), not the kernel ending the connection with
/// `ETIMEDOUT` because the peer vanished (keepalive, `TCP_USER_TIMEOUT`).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) && !crate::error::is_peer_gone(e)
}

impl StreamRequest {
    pub(crate) fn new(conn: Conn, peer: Address, shutdown: ShutdownHandle) -> StreamRequest {
        StreamRequest {
            registration: None,
            registry: None,
            conn,
            peer,
            shutdown,
            rbuf: Vec::new(),
            rpos: 0,
            rfilled: 0,
            wbuf: Vec::new(),
            timeouts: Timeouts::none(),
            phase: Phase::Outside,
            rcvtimeo: RcvTimeout::Unknown,
            stop: None,
            state: ConnectionState::default(),
            proxied: None,
            layer: None,
            awaits_first: false,
            gone: false,
            listener: 0,
        }
    }

    /// Which of the server's listening sockets accepted this connection:
    /// its index in a [`Listeners`](crate::transport::Listeners) set, 0
    /// for a server on one socket.
    #[must_use]
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// Notes which listener accepted it.
    pub(crate) fn set_listener(&mut self, index: usize) {
        self.listener = index;
    }

    /// This connection's value of type `T`, created with `T::default()` on
    /// first use: per-connection state, as Python's `self.x = ...` in a
    /// handler object made per connection. Set it in `setup`, use it in
    /// `handle`, read it in `finish`; the state shared by all connections
    /// stays on the handler (`&self`). One value per type: use a struct of
    /// your own for several fields.
    ///
    /// ```
    /// use socketserver::{StreamHandler, StreamRequest, ThreadingTcpServer};
    /// use std::io::{self, BufRead};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// /// What one connection did.
    /// #[derive(Default)]
    /// struct Session { lines: u64 }
    ///
    /// /// Totals across connections: shared, behind `&self`.
    /// struct Counter { total: AtomicU64 }
    ///
    /// impl StreamHandler for Counter {
    ///     fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
    ///         let mut line = String::new();
    ///         while req.read_line(&mut line)? > 0 {
    ///             req.state::<Session>().lines += 1;
    ///             line.clear();
    ///         }
    ///         Ok(())
    ///     }
    ///     fn finish(&self, req: &mut StreamRequest) -> io::Result<()> {
    ///         let lines = req.state::<Session>().lines;
    ///         self.total.fetch_add(lines, Ordering::Relaxed);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", Counter { total: AtomicU64::new(0) })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn state<T: Default + Send + 'static>(&mut self) -> &mut T {
        self.state.get_or_default()
    }

    /// Takes this connection's value of type `T` out, if it has one.
    pub fn take_state<T: Send + 'static>(&mut self) -> Option<T> {
        self.state.take()
    }

    /// Reads one message with `f`, under the connection's message deadline:
    /// the protocol-level read every message-oriented handler should use.
    ///
    /// While `f` waits for the message's first byte with nothing buffered,
    /// the connection is **idle**: a graceful close (or, under
    /// `Synchronous`, a shutdown request) ends it at once (the read returns
    /// end-of-file, so `f` sees a clean end of the stream), instead of
    /// waiting for the drain deadline. Once the first byte is in, the whole
    /// message must arrive within the builder's
    /// [`message_timeout`](crate::Builder::message_timeout), extended by one
    /// second for every [`min_data_rate`](crate::Builder::min_data_rate)
    /// bytes received: a client that dribbles a message byte by byte (a
    /// slowloris) is cut with `TimedOut`, however often it sends.
    ///
    /// [`read_line`](BufRead::read_line), [`read_until`](BufRead::read_until)
    /// and [`lines`](BufRead::lines) read one message each this way already,
    /// and so does [`echo`](Self::echo) (every chunk is a message). Wrap
    /// other protocol reads yourself, e.g. a frame:
    /// `req.read_message(|r| framing.read_json(r))`. Calls nest: reads
    /// inside `f` belong to the same message.
    ///
    /// ```
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    /// use std::io::{Read, Write};
    ///
    /// // A protocol of fixed 4-byte records: one record is one message.
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
    ///     let mut record = [0u8; 4];
    ///     while req.read_message(|r| r.read_exact(&mut record)).is_ok() {
    ///         req.write_all(&record)?;
    ///     }
    ///     Ok(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_message<T>(&mut self, f: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        if self.phase != Phase::Outside {
            return f(self);
        }
        self.phase = if self.has_buffered_input() {
            Phase::Message {
                started: Instant::now(),
                received: 0,
            }
        } else {
            Phase::Boundary
        };
        let result = f(self);
        self.phase = Phase::Outside;
        result
    }

    /// Runs `f`, a handshake of the handler's own (authentication, a
    /// greeting the client must answer), as part of the connection's way
    /// in: meanwhile the connection counts against the server's
    /// [`max_pre_handler`](crate::Builder::max_pre_handler) budget, with
    /// the PROXY headers and TLS handshakes under way, so clients that
    /// never finish it cannot hold every thread: when the budget is full,
    /// the oldest connection not past its handshake is closed (its reads
    /// see end-of-file). Without that budget it just calls `f`.
    ///
    /// ```
    /// use socketserver::{Server, StreamRequest, Threading};
    /// use std::io::{BufRead, Write};
    ///
    /// let server = Server::builder()
    ///     .strategy(Threading::new())
    ///     .max_pre_handler(Some(16))
    ///     .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
    ///         let hello = req.pre_handler(|req| {
    ///             let mut line = String::new();
    ///             req.read_line(&mut line)?;
    ///             Ok(line)
    ///         })?;
    ///         req.write_all(hello.as_bytes())
    ///     })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pre_handler<T>(&mut self, f: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        if let Some(registration) = &self.registration {
            registration.enter_pre_handler();
        }
        let result = f(self);
        if let Some(registration) = &self.registration {
            registration.established();
        }
        result
    }

    /// Runs `f` with all its reads bounded by one deadline, `limit` from
    /// now: each read waits at most for the time left (and at most the read
    /// timeout), and past the deadline a read fails with `TimedOut`. For an
    /// exchange that must end in time as a whole, however the peer spaces
    /// its bytes: an authentication handshake, a greeting. Reads inside `f`
    /// that are messages (`read_line`, `read_message`, ...) keep this
    /// deadline; a `read_within` inside `f` can only shorten it.
    ///
    /// ```
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    /// use std::io::{BufRead, Write};
    /// use std::time::Duration;
    ///
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
    ///     req.write_all(b"password?\n")?;
    ///     let mut answer = String::new();
    ///     // The whole answer within 5 s, or the connection ends.
    ///     req.read_within(Duration::from_secs(5), |r| r.read_line(&mut answer))?;
    ///     req.echo().map(drop)
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_within<T>(
        &mut self,
        limit: Duration,
        f: impl FnOnce(&mut Self) -> io::Result<T>,
    ) -> io::Result<T> {
        let Some(until) = Instant::now().checked_add(limit) else {
            return f(self); // too far to represent: no deadline
        };
        let outer = self.phase;
        let inner = match outer {
            Phase::Within { until: u, .. } if u <= until => outer,
            _ => Phase::Within { until, limit },
        };
        self.phase = inner;
        let result = f(self);
        self.phase = outer;
        result
    }

    /// Counters of the server serving this request (as of the fork, in a
    /// `Forking` child).
    pub fn stats(&self) -> Stats {
        self.registry
            .as_ref()
            .map(|r| r.stats())
            .unwrap_or_default()
    }

    /// Sets the socket's read timeout unless it is set to that already.
    fn set_rcvtimeo(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if self.rcvtimeo != RcvTimeout::Set(timeout) {
            self.conn.set_read_timeout(timeout)?;
            self.rcvtimeo = RcvTimeout::Set(timeout);
        }
        Ok(())
    }

    /// Every read from the socket goes through here: the read timeout, the
    /// message deadline and idleness, by phase.
    fn read_socket(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.phase {
            Phase::Boundary => {
                let n = self.read_idle(buf)?;
                if n > 0 {
                    self.phase = Phase::Message {
                        started: Instant::now(),
                        received: n as u64,
                    };
                }
                Ok(n)
            }
            Phase::Message { started, received } => {
                let read = self.timeouts.read;
                let deadline = self.timeouts.message_deadline(started, received);
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                if left.is_some_and(|l| l.is_zero()) {
                    return Err(self.message_timed_out());
                }
                // At least 1 ms: a zero timeout means "none" to the socket.
                let left = left.map(|l| l.max(Duration::from_millis(1)));
                let by_message = match (left, read) {
                    (Some(l), Some(r)) => l < r,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                self.set_rcvtimeo(if by_message { left } else { read })?;
                match self.read_raw(buf) {
                    Ok(n) => {
                        self.phase = Phase::Message {
                            started,
                            received: received + n as u64,
                        };
                        Ok(n)
                    }
                    Err(e) if by_message && is_timeout(&e) => Err(self.message_timed_out()),
                    Err(e) => Err(e),
                }
            }
            Phase::Outside => {
                self.set_rcvtimeo(self.timeouts.read)?;
                self.read_raw(buf)
            }
            Phase::Within { until, limit } => {
                let left = until.saturating_duration_since(Instant::now());
                let within_timed_out = || {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("not complete within {limit:?} (read_within)"),
                    )
                };
                if left.is_zero() {
                    return Err(within_timed_out());
                }
                // At least 1 ms: a zero timeout means "none" to the socket.
                let left = left.max(Duration::from_millis(1));
                let by_deadline = self.timeouts.read.is_none_or(|r| left < r);
                self.set_rcvtimeo(if by_deadline {
                    Some(left)
                } else {
                    self.timeouts.read
                })?;
                match self.read_raw(buf) {
                    Err(e) if by_deadline && is_timeout(&e) => Err(within_timed_out()),
                    r => r,
                }
            }
        }
    }

    fn message_timed_out(&self) -> io::Error {
        let base = self.timeouts.message.unwrap_or_default();
        let rate = match self.timeouts.min_rate {
            Some(r) => format!(" at a minimum of {r} bytes/s"),
            None => String::new(),
        };
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("message not complete within {base:?}{rate} (message_timeout)"),
        )
    }

    /// One `read(2)`, retried on `EINTR`, a timeout reported as what it is.
    fn read_raw(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let read = match self.layer.as_deref_mut() {
                Some(layer) => layer.read(&self.conn, buf),
                None => (&self.conn).read(buf),
            };
            match read {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) && self.rcvtimeo.get().is_some() => {
                    let t = self.rcvtimeo.get().unwrap_or_default();
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("read timed out after {t:?} (read_timeout)"),
                    ));
                }
                Err(e) => {
                    self.note_gone(&e);
                    return Err(e);
                }
                Ok(n) => {
                    if let Some(r) = &self.registry {
                        r.counters.bytes_in(n);
                    }
                    return Ok(n);
                }
            }
        }
    }

    /// Counts the peer as gone (once) when `e`, from a read or write on
    /// the connection, says it vanished (see
    /// [`Stats::peer_gone`](crate::Stats::peer_gone)).
    fn note_gone(&mut self, e: &io::Error) {
        if !self.gone && crate::error::is_peer_gone(e) {
            self.gone = true;
            if let Some(registry) = &self.registry {
                registry.peer_gone(&self.peer, e);
            }
        }
    }

    /// A read that waits for a new message: the connection is idle
    /// meanwhile, and a drain (or a shutdown, when nobody else can wake us)
    /// ends it with end-of-file.
    fn read_idle(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if std::mem::take(&mut self.awaits_first) {
            if let Some(read) = self.first_message_during_drain(buf) {
                return read;
            }
        }
        if let Some(reg) = &self.registration {
            if reg.set_idle(true) {
                reg.set_idle(false);
                // Draining. A message already waiting in the socket (a
                // request queued in a `Pool` whose client has spoken) is
                // served; only a connection with nothing to say is idle.
                let pending = self.layer.as_deref_mut().is_some_and(Layer::has_buffered);
                if !pending && !crate::sys::readable_now(self.conn.as_fd()) {
                    reg.count_idle_closed();
                    return Ok(0);
                }
                return self.read_raw(buf);
            }
        }
        let result = self.wait_then_read(buf);
        if let Some(reg) = &self.registration {
            reg.set_idle(false);
        }
        result
    }

    /// The first read after a TLS handshake that a graceful close overtook:
    /// the client was talking (its first message often comes in a packet of
    /// its own, just after the handshake's last one), so it gets
    /// [`FIRST_MESSAGE_GRACE`] to send it before it counts as idle and is
    /// closed. `None` when no drain has begun (an ordinary idle read).
    fn first_message_during_drain(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        if !self.registration.as_ref()?.draining() {
            return None;
        }
        let grace = self
            .timeouts
            .read
            .map_or(FIRST_MESSAGE_GRACE, |r| r.min(FIRST_MESSAGE_GRACE));
        if let Err(e) = self.set_rcvtimeo(Some(grace)) {
            return Some(Err(e));
        }
        Some(match self.read_raw(buf) {
            Err(e) if is_timeout(&e) => {
                if let Some(reg) = &self.registration {
                    reg.count_idle_closed();
                }
                Ok(0)
            }
            r => r,
        })
    }

    fn wait_then_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.set_rcvtimeo(self.timeouts.read)?;
        let stop = self.stop.clone().or_else(Stop::for_forked_child);
        // Decrypted bytes already waiting: the socket may have nothing.
        let stop = stop.filter(|_| !self.layer_has_buffered());
        if let Some(stop) = stop {
            // A forked child serving one request at a time: SIGTERM ends a
            // plain blocking read itself (`IdleRead`). Not under TLS, where
            // a read cut that way would look like a truncation attack.
            if self.layer.is_none() && crate::sys::child_stop_fd().is_some() {
                let idle = crate::sys::IdleRead::enter(self.conn.as_fd());
                if stop.stop_requested() && !crate::sys::readable_now(self.conn.as_fd()) {
                    return Ok(0);
                }
                let read = self.read_raw(buf);
                drop(idle);
                return read;
            }
            match stop.wait_readable(self.conn.as_fd(), self.timeouts.read)? {
                crate::shutdown::Waited::Ready => {}
                crate::shutdown::Waited::Stop => return Ok(0),
                crate::shutdown::Waited::TimedOut => {
                    let t = self.timeouts.read.unwrap_or_default();
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("read timed out after {t:?} (read_timeout)"),
                    ));
                }
            }
        }
        self.read_raw(buf)
    }

    /// The peer's address (Python: `self.client_address`). Behind a proxy
    /// speaking the PROXY protocol (see
    /// [`Builder::proxy_protocol`](crate::Builder::proxy_protocol)), the
    /// client named by its header.
    pub fn peer_addr(&self) -> &Address {
        &self.peer
    }

    /// The proxy's address, when a PROXY header named the client (then
    /// [`peer_addr`](Self::peer_addr) is the client); `None` otherwise.
    pub fn proxy_addr(&self) -> Option<&Address> {
        self.proxied.as_ref().map(|p| &p.proxy)
    }

    /// The PROXY header that named the client, with its destination address
    /// and TLVs; `None` when there was none.
    pub fn proxy_header(&self) -> Option<&crate::proxy::header::ProxyHeader> {
        self.proxied.as_deref()
    }

    /// After a PROXY header: the client it names becomes the peer; `rest`
    /// (bytes read after the header) is buffered for the handler.
    pub(crate) fn set_proxied(&mut self, header: crate::proxy::header::ProxyHeader, rest: &[u8]) {
        self.peer = header.client.clone();
        self.proxied = Some(Box::new(header));
        self.unread(rest);
    }

    /// After reading the start of the connection outside the buffer: puts
    /// `bytes` into the read buffer (which must be empty) and forgets the
    /// read timeout set meanwhile.
    /// Deregisters the connection now (it is being refused): its places
    /// under the limits are free before the client sees the refusal.
    pub(crate) fn leave_registry(&mut self) {
        self.registration = None;
    }

    /// Takes the bytes read from the socket but not yet by the handler
    /// (what came after a PROXY header): a layer that reads the socket
    /// itself (the TLS handshake) starts with them.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn take_buffered(&mut self) -> Vec<u8> {
        let pending = self.rbuf[self.rpos..self.rfilled].to_vec();
        self.rpos = 0;
        self.rfilled = 0;
        pending
    }

    pub(crate) fn unread(&mut self, bytes: &[u8]) {
        self.rcvtimeo = RcvTimeout::Unknown;
        if !bytes.is_empty() {
            let mut rbuf = vec![0; BUF_SIZE.max(bytes.len())];
            rbuf[..bytes.len()].copy_from_slice(bytes);
            self.rbuf = rbuf;
            self.rpos = 0;
            self.rfilled = bytes.len();
        }
    }

    /// Counts `n` bytes sent in the server's counters.
    fn count_out(&self, n: usize) {
        if let Some(r) = &self.registry {
            r.counters.bytes_out(n);
        }
    }

    /// Counts a failed handshake of this connection at `stage` in the
    /// server's counters (`socketserver_handshake_failures_total`): for an
    /// application's own authentication, such as the `auth` module's
    /// HMAC handshake run by the handler, which the server cannot see fail.
    pub fn count_handshake_failure(&self, stage: crate::counters::HandshakeStage) {
        if let Some(r) = &self.registry {
            r.counters.handshake_failed(stage);
        }
    }

    /// The registry entry, to count the client against `max_per_ip`.
    pub(crate) fn registration_mut(&mut self) -> Option<&mut Registration> {
        self.registration.as_mut()
    }

    /// Python's name for [`peer_addr`](Self::peer_addr).
    pub fn client_address(&self) -> &Address {
        &self.peer
    }

    /// The buffered reader (Python: `self.rfile`). It is this request.
    pub fn rfile(&mut self) -> &mut Self {
        self
    }

    /// The buffered writer (Python: `self.wfile`). It is this request.
    pub fn wfile(&mut self) -> &mut Self {
        self
    }

    /// The socket itself (Python: `self.request`), for options or unbuffered
    /// access. Bytes already buffered by `rfile` are not seen through it.
    /// Under TLS (`Builder::tls`, feature `tls`) this is the raw
    /// socket: what passes through it is ciphertext, so read and write
    /// through the request instead.
    pub fn stream(&self) -> &Conn {
        &self.conn
    }

    /// A handle to stop the server, usable from inside the handler.
    pub fn shutdown_handle(&self) -> &ShutdownHandle {
        &self.shutdown
    }

    /// Copies everything the peer sends back to it until it closes its
    /// side; returns the number of bytes echoed. Bytes already buffered are
    /// echoed first. This is the fast path of an echo server: one `read` and
    /// one `write` per chunk, no extra copies. Every chunk is a message: the
    /// connection is idle between chunks (see
    /// [`read_message`](Self::read_message)).
    ///
    /// ```
    /// # use socketserver::{StreamRequest, ThreadingTcpServer};
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn echo(&mut self) -> io::Result<u64> {
        self.flush()?;
        let mut total = 0u64;
        if self.rpos < self.rfilled {
            let pending = self.rpos..self.rfilled;
            write_timed(
                &self.conn,
                self.layer.as_deref_mut(),
                &self.rbuf[pending],
                self.timeouts.write,
            )?;
            total += (self.rfilled - self.rpos) as u64;
            self.count_out(self.rfilled - self.rpos);
            self.rpos = self.rfilled;
        }
        // Small first, on the stack: a connection that sits idle or sends
        // small messages touches one more page of its thread's stack at
        // most. An 8 KiB array here cost two more pages (zeroed, and probed)
        // in every request thread: 8 KiB of RSS per idle connection under
        // `Threading` (`demos compare`, idle cells). A read that fills the
        // buffer switches to one 8 times larger on the heap, up to 64 KiB,
        // so bulk transfers move up to 64 KiB per call (16 KiB messages
        // in one read and one write, like a plain 64 KiB-buffer echo).
        let mut small = [0u8; SMALL_ECHO_BUF];
        let mut big: Vec<u8> = Vec::new();
        loop {
            let buf: &mut [u8] = if big.is_empty() { &mut small } else { &mut big };
            let n = match self.read_idle(buf)? {
                0 => return Ok(total),
                n => n,
            };
            write_timed(
                &self.conn,
                self.layer.as_deref_mut(),
                &buf[..n],
                self.timeouts.write,
            )?;
            total += n as u64;
            self.count_out(n);
            if n == buf.len() && n < MAX_ECHO_BUF {
                big = vec![0u8; (n * 8).min(MAX_ECHO_BUF)];
            }
        }
    }

    /// Whether unread bytes sit in the read buffer.
    pub fn has_buffered_input(&self) -> bool {
        self.rpos < self.rfilled
    }

    /// What the TLS session negotiated (protocol, cipher suite, ALPN, SNI,
    /// client certificates); `None` without TLS.
    #[cfg(feature = "tls")]
    pub fn tls_info(&self) -> Option<crate::tls::session::TlsInfo> {
        let layer = self.layer.as_deref()?;
        let session = layer
            .as_any()
            .downcast_ref::<crate::tls::session::Session>()?;
        Some(session.info())
    }

    /// After a layer's handshake (TLS): reads and writes go through
    /// `layer`, and the read timeout the handshake set is forgotten.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn set_layer(&mut self, layer: Box<dyn Layer>) {
        self.rcvtimeo = RcvTimeout::Unknown;
        self.layer = Some(layer);
        self.awaits_first = true;
    }

    fn layer_has_buffered(&mut self) -> bool {
        self.layer.as_deref_mut().is_some_and(Layer::has_buffered)
    }
}

impl Drop for StreamRequest {
    /// Under TLS: a `close_notify`, so the peer sees a clean end. The
    /// connection leaves the registry first: its place under `max_per_ip`
    /// and `max_connections` is free before the peer can see the end.
    fn drop(&mut self) {
        self.registration = None;
        if let Some(layer) = self.layer.as_deref_mut() {
            layer.close(&self.conn);
        }
    }
}

impl Read for StreamRequest {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Large reads with an empty buffer bypass it.
        if self.rpos == self.rfilled && buf.len() >= BUF_SIZE {
            self.flush()?;
            return self.read_socket(buf);
        }
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for StreamRequest {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.rpos == self.rfilled {
            // About to wait for the peer: send what we owe it first.
            self.flush()?;
            let mut rbuf = std::mem::take(&mut self.rbuf);
            if rbuf.is_empty() {
                rbuf = vec![0; BUF_SIZE];
            }
            let result = self.read_socket(&mut rbuf);
            self.rbuf = rbuf;
            self.rpos = 0;
            self.rfilled = result?;
        }
        Ok(&self.rbuf[self.rpos..self.rfilled])
    }

    fn consume(&mut self, amt: usize) {
        self.rpos = (self.rpos + amt).min(self.rfilled);
    }

    /// One message (see [`StreamRequest::read_message`]): the bytes up to
    /// and including `byte`, or to end-of-file.
    fn read_until(&mut self, byte: u8, out: &mut Vec<u8>) -> io::Result<usize> {
        self.read_message(|r| {
            let mut total = 0;
            loop {
                let available = match r.fill_buf() {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if available.is_empty() {
                    return Ok(total);
                }
                let (found, used) = match available.iter().position(|&b| b == byte) {
                    Some(i) => (true, i + 1),
                    None => (false, available.len()),
                };
                out.extend_from_slice(&available[..used]);
                r.consume(used);
                total += used;
                if found {
                    return Ok(total);
                }
            }
        })
    }

    /// One line as one message (see [`StreamRequest::read_message`]). Bytes
    /// that are not UTF-8 fail with `InvalidData` (and are consumed), as in
    /// the standard library.
    fn read_line(&mut self, line: &mut String) -> io::Result<usize> {
        let start = line.len();
        let mut bytes = std::mem::take(line).into_bytes();
        let result = self.read_until(b'\n', &mut bytes);
        match String::from_utf8(bytes) {
            Ok(s) => {
                *line = s;
                result
            }
            Err(e) => {
                let mut bytes = e.into_bytes();
                bytes.truncate(start);
                *line = String::from_utf8(bytes).unwrap_or_default();
                result.and(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "stream did not contain valid UTF-8",
                )))
            }
        }
    }
}

impl Write for StreamRequest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.wbuf.len() + buf.len() > BUF_SIZE {
            self.flush()?;
        }
        if buf.len() >= BUF_SIZE {
            // All of it, within one write timeout.
            write_timed(
                &self.conn,
                self.layer.as_deref_mut(),
                buf,
                self.timeouts.write,
            )
            .inspect_err(|e| self.note_gone(e))?;
            self.count_out(buf.len());
            return Ok(buf.len());
        }
        self.wbuf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            let result = write_timed(
                &self.conn,
                self.layer.as_deref_mut(),
                &self.wbuf,
                self.timeouts.write,
            );
            if result.is_ok() {
                self.count_out(self.wbuf.len());
            }
            self.wbuf.clear();
            result.inspect_err(|e| self.note_gone(e))?;
        }
        Ok(())
    }
}

// `poll(2)` for room in a socket's send buffer, or the reactor's in a green
// coroutine.
use crate::green::wait_writable;

/// A datagram socket of the server: UDP or Unix datagram. Shared by every
/// request of the server, so a handler can send to any peer (a chat relay).
#[derive(Debug)]
pub enum DatagramSocket {
    /// A UDP socket.
    Udp(std::net::UdpSocket),
    /// A Unix datagram socket.
    Unix(UnixDatagram),
}

impl DatagramSocket {
    /// Sends one datagram to `to`. The server socket is non-blocking; when
    /// the send buffer is full this waits (up to 5 s) for room instead of
    /// failing.
    pub fn send_to(&self, buf: &[u8], to: &Address) -> io::Result<usize> {
        loop {
            let r = match (self, to) {
                (DatagramSocket::Udp(s), Address::Inet(a)) => s.send_to(buf, a),
                (DatagramSocket::Unix(s), Address::Unix(Some(p))) => s.send_to(buf, p),
                (DatagramSocket::Unix(_), Address::Unix(None)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrNotAvailable,
                        "cannot send to an unnamed Unix socket: the client must bind a path",
                    ))
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("address {to} does not match the socket's family"),
                    ))
                }
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !wait_writable(self.as_fd(), Duration::from_secs(5))? {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("send to {to}: socket send buffer stayed full for 5 s"),
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    pub(crate) fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Address)> {
        match self {
            DatagramSocket::Udp(s) => s.recv_from(buf).map(|(n, a)| (n, Address::Inet(a))),
            DatagramSocket::Unix(s) => s.recv_from(buf).map(|(n, a)| (n, Address::from(&a))),
        }
    }
}

impl AsFd for DatagramSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DatagramSocket::Udp(s) => s.as_fd(),
            DatagramSocket::Unix(s) => s.as_fd(),
        }
    }
}

/// One datagram, handed to a [`DatagramHandler`](crate::DatagramHandler),
/// with a reply that goes back to the sender.
///
/// Python's `DatagramRequestHandler` reads the packet from `rfile` and sends
/// what was written to `wfile` when it finishes; here [`data`](Self::data) (or
/// [`rfile`](Self::rfile)) is the packet and either [`reply`](Self::reply)
/// sends at once, or what was written to [`wfile`](Self::wfile) is sent after
/// `finish`. Exactly one reply datagram is sent at most.
///
/// ```
/// use socketserver::{DatagramRequest, UdpServer};
///
/// let server = UdpServer::bind("127.0.0.1:0", |req: &mut DatagramRequest| {
///     let upper = req.data().to_ascii_uppercase();
///     req.reply(&upper)
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct DatagramRequest {
    data: Vec<u8>,
    peer: Address,
    socket: Arc<DatagramSocket>,
    shutdown: ShutdownHandle,
    wbuf: Vec<u8>,
    replied: bool,
    registry: Option<Arc<Registry>>,
}

impl DatagramRequest {
    pub(crate) fn new(
        data: Vec<u8>,
        peer: Address,
        socket: Arc<DatagramSocket>,
        shutdown: ShutdownHandle,
    ) -> DatagramRequest {
        DatagramRequest {
            data,
            peer,
            socket,
            shutdown,
            wbuf: Vec::new(),
            replied: false,
            registry: None,
        }
    }

    /// Counters of the server serving this request (as of the fork, in a
    /// `Forking` child).
    pub fn stats(&self) -> Stats {
        self.registry
            .as_ref()
            .map(|r| r.stats())
            .unwrap_or_default()
    }

    /// The datagram's payload (Python: `self.request[0]`).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Takes the payload out of the request, leaving it empty.
    pub fn take_data(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.data)
    }

    /// The payload as a reader (Python: `self.rfile`); each call starts at
    /// the beginning.
    pub fn rfile(&self) -> &[u8] {
        &self.data
    }

    /// A buffer sent to the peer as one datagram after `finish`, unless
    /// [`reply`](Self::reply) was called (Python: `self.wfile`).
    pub fn wfile(&mut self) -> &mut Vec<u8> {
        &mut self.wbuf
    }

    /// The sender's address (Python: `self.client_address`).
    pub fn peer_addr(&self) -> &Address {
        &self.peer
    }

    /// Python's name for [`peer_addr`](Self::peer_addr).
    pub fn client_address(&self) -> &Address {
        &self.peer
    }

    /// The server's socket (Python: `self.request[1]`), to send to other
    /// peers.
    pub fn socket(&self) -> &DatagramSocket {
        &self.socket
    }

    /// A handle to stop the server, usable from inside the handler.
    pub fn shutdown_handle(&self) -> &ShutdownHandle {
        &self.shutdown
    }

    /// Sends `data` to the sender as one datagram, now. A request is answered
    /// once: a second call fails with `AlreadyExists` and sends nothing.
    pub fn reply(&mut self, data: &[u8]) -> io::Result<()> {
        if self.replied {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("a reply to {} was already sent", self.peer),
            ));
        }
        self.replied = true;
        self.socket.send_to(data, &self.peer)?;
        if let Some(r) = &self.registry {
            r.counters.bytes_out(data.len());
        }
        Ok(())
    }

    /// Whether a reply was sent.
    pub fn has_replied(&self) -> bool {
        self.replied
    }

    /// Sends what was written to `wfile`, if anything and not yet replied.
    pub(crate) fn send_pending(&mut self) -> io::Result<()> {
        if self.replied || self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.wbuf);
        self.reply(&buf)
    }
}

/// What the server attaches to a request before it runs (public in a
/// private module: reachable only inside the crate).
#[derive(Debug)]
pub struct Attachment {
    pub(crate) registration: Option<Registration>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) timeouts: Timeouts,
    pub(crate) stop: Option<Stop>,
}

pub(crate) mod sealed {
    /// What the server loop needs to know about a request beyond its peer.
    pub trait Tracked {
        /// The connection's socket, for stream requests.
        fn conn(&self) -> Option<&super::Conn>;
        /// Keeps the registry entry alive as long as the request, and sets
        /// its deadlines.
        fn attach(&mut self, attachment: super::Attachment) -> std::io::Result<()>;
        /// The stream request, for stream requests (the PROXY header).
        fn as_stream(&mut self) -> Option<&mut super::StreamRequest>;
    }

    /// The request types. Only this crate's requests are served.
    pub trait Sealed {}
    impl Sealed for super::StreamRequest {}
    impl Sealed for super::DatagramRequest {}
}

impl sealed::Tracked for StreamRequest {
    fn conn(&self) -> Option<&Conn> {
        Some(&self.conn)
    }
    fn attach(&mut self, a: Attachment) -> io::Result<()> {
        self.registration = a.registration;
        self.registry = Some(a.registry);
        self.timeouts = a.timeouts;
        self.stop = a.stop;
        // A fresh connection: no green worker has its timeouts cached yet.
        self.conn.set_new_read_timeout(a.timeouts.read)?;
        self.rcvtimeo = RcvTimeout::Set(a.timeouts.read);
        Ok(())
    }
    fn as_stream(&mut self) -> Option<&mut StreamRequest> {
        Some(self)
    }
}

impl sealed::Tracked for DatagramRequest {
    fn conn(&self) -> Option<&Conn> {
        None
    }
    fn attach(&mut self, a: Attachment) -> io::Result<()> {
        a.registry.counters.bytes_in(self.data.len());
        self.registry = Some(a.registry);
        Ok(())
    }
    fn as_stream(&mut self) -> Option<&mut StreamRequest> {
        None
    }
}

/// A request knows who sent it. Implemented by [`StreamRequest`] and
/// [`DatagramRequest`] only (the trait is sealed).
pub trait Peer: sealed::Sealed {
    /// The peer's address.
    fn peer(&self) -> &Address;
}

impl Peer for StreamRequest {
    fn peer(&self) -> &Address {
        &self.peer
    }
}

impl Peer for DatagramRequest {
    fn peer(&self) -> &Address {
        &self.peer
    }
}
