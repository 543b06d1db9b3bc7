//! Handlers: the user's code. [`StreamHandler`] for connections,
//! [`DatagramHandler`] for datagrams, and [`Handler`], the one trait the
//! server loop drives, implemented for both.
//!
//! Both handler traits follow Python's `BaseRequestHandler`: `setup`, then
//! `handle`, then `finish`, where `finish` runs whenever `setup` succeeded,
//! even if `handle` failed or panicked (Python's `try/finally`). Server-level
//! hooks that Python puts on the server class (`verify_request`,
//! `handle_error`, `handle_timeout`, `service_actions`) are default methods
//! here, so one value carries all of a server's behaviour and its shared
//! state (`&self` is shared by every request, across threads).

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use crate::counters::Outcome;
use crate::{Address, DatagramRequest, StreamRequest};

/// Why a request failed: the handler returned an error, or it panicked.
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestError {
    /// `setup`, `handle` or `finish` returned this error (or flushing the
    /// reply failed).
    Io(io::Error),
    /// The handler panicked with this message. The panic was caught: the
    /// connection is closed, the server keeps serving.
    Panic(String),
}

impl RequestError {
    /// Whether a read or write timeout of the connection ran out (the peer
    /// went quiet, or stopped reading): logged at info level by the default
    /// `handle_error`. Not a peer that vanished (the kernel's `ETIMEDOUT`
    /// after unanswered keepalive probes): that is a
    /// [disconnect](Self::is_disconnect).
    pub fn is_timeout(&self) -> bool {
        matches!(self, RequestError::Io(e) if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) && !crate::error::is_peer_gone(e))
    }

    /// Whether this is the peer going away (reset, broken pipe, EOF in the
    /// middle of a message) or vanishing without a word (keepalive or the
    /// user timeout gave up on it: `ETIMEDOUT`, `EHOSTUNREACH`, counted in
    /// [`Stats::peer_gone`](crate::Stats::peer_gone) and logged by the
    /// server at info level, throttled): routine for a server, logged at
    /// debug level by the default `handle_error`.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, RequestError::Io(e) if matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        ) || crate::error::is_peer_gone(e))
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Io(e) => write!(f, "{e}"),
            RequestError::Panic(msg) => write!(f, "handler panicked: {msg}"),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Io(e) => Some(e),
            RequestError::Panic(_) => None,
        }
    }
}

impl RequestError {
    /// Whether the client caused it by sending what the protocol does not
    /// allow (bad JSON, an oversized frame or datagram, invalid UTF-8): any
    /// client can cause these at will, so they are logged at warn level, not
    /// error.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, RequestError::Io(e) if matches!(
            e.kind(),
            io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
        ))
    }
}

/// The default `handle_error`: logs through `log` with the peer address;
/// disconnects at debug level, timeouts at info level, bad input from the
/// client at warn level, everything else (a failure of the server's own,
/// a panic) at error level.
pub fn log_request_error(peer: &Address, error: &RequestError) {
    if error.is_disconnect() {
        log::debug!("request from {peer}: {error}");
    } else if error.is_timeout() {
        log::info!("request from {peer} timed out: {error}");
    } else if error.is_bad_input() {
        log::warn!("bad request from {peer}: {error}");
    } else {
        log::error!("error handling request from {peer}: {error}");
    }
}

/// Handles connections (TCP, Unix stream). Python: `StreamRequestHandler`.
///
/// Implement [`handle`](Self::handle); the other methods have defaults. A
/// closure `Fn(&mut StreamRequest) -> io::Result<()>` is a `StreamHandler`
/// too; write its parameter's type, `|req: &mut StreamRequest| ...`: the
/// compiler cannot infer it through the trait (without it, the error is
/// "type annotations needed" or "expected a closure that implements
/// `StreamHandler`").
///
/// One handler value serves every connection: `&self` is shared, across
/// threads. Keep per-connection state in the request
/// ([`StreamRequest::state`]).
///
/// ```
/// use socketserver::{Address, StreamHandler, StreamRequest, ThreadingTcpServer};
/// use std::io::{self, BufRead, Write};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// /// Numbers each line it echoes; the counter is shared by all connections.
/// struct Numbered { lines: AtomicUsize }
///
/// impl StreamHandler for Numbered {
///     fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
///         let mut line = String::new();
///         while req.read_line(&mut line)? > 0 {
///             let n = self.lines.fetch_add(1, Ordering::Relaxed);
///             write!(req, "{n}: {line}")?;
///             line.clear();
///         }
///         Ok(())
///     }
///     fn verify_request(&self, peer: &Address) -> bool {
///         peer.is_local() // loopback clients only
///     }
/// }
///
/// let server = ThreadingTcpServer::bind("127.0.0.1:0", Numbered { lines: AtomicUsize::new(0) })?;
/// # Ok::<(), io::Error>(())
/// ```
pub trait StreamHandler: Send + Sync + 'static {
    /// Runs before `handle`. If it fails, neither `handle` nor `finish` run.
    fn setup(&self, _req: &mut StreamRequest) -> io::Result<()> {
        Ok(())
    }

    /// Serves the connection. Returning closes it (after `finish`).
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()>;

    /// Runs after `handle`, even when `handle` failed or panicked. Buffered
    /// output is flushed after it, also when `handle` returned an error (but
    /// not after a panic).
    fn finish(&self, _req: &mut StreamRequest) -> io::Result<()> {
        Ok(())
    }

    /// Decides, before any handler code runs, whether to serve this peer;
    /// `false` closes the connection at once. Default: `true`.
    fn verify_request(&self, _peer: &Address) -> bool {
        true
    }

    /// Decides, after the TLS handshake (feature `tls`, under
    /// [`Builder::tls`](crate::Builder::tls)) and before `setup`, whether
    /// to serve this client, seeing what the handshake negotiated: the
    /// client's certificate chain under mutual TLS
    /// ([`tls::mutual_server_config`](crate::tls::mutual_server_config)),
    /// the SNI name, the ALPN protocol. `false` closes the connection
    /// (counted as refused). `verify_request` runs before the handshake, on
    /// the address alone. Default: `true`.
    ///
    /// ```
    /// use socketserver::tls::TlsInfo;
    /// use socketserver::{Address, StreamHandler, StreamRequest};
    /// use std::io;
    ///
    /// /// Serves clients whose certificate is the one it was given.
    /// struct Pinned { client_cert: Vec<u8> }
    ///
    /// impl StreamHandler for Pinned {
    ///     fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
    ///         req.echo().map(drop)
    ///     }
    ///     fn verify_tls(&self, _peer: &Address, tls: &TlsInfo) -> bool {
    ///         tls.peer_certificates.first().is_some_and(|c| c.as_ref() == self.client_cert)
    ///     }
    /// }
    /// ```
    #[cfg(feature = "tls")]
    fn verify_tls(&self, _peer: &Address, _tls: &crate::tls::TlsInfo) -> bool {
        true
    }

    /// Called when a request failed or panicked. Default:
    /// [`log_request_error`].
    fn handle_error(&self, peer: &Address, error: &RequestError) {
        log_request_error(peer, error)
    }

    /// Called by `handle_request` when its timeout passes with no request.
    fn handle_timeout(&self) {}

    /// Called by the server loop after each wake-up (and every
    /// `service_interval` if one is set). Python: `service_actions`.
    fn service_actions(&self) {}
}

/// Handles datagrams (UDP, Unix datagram). Python: `DatagramRequestHandler`.
///
/// A closure `Fn(&mut DatagramRequest) -> io::Result<()>` is a
/// `DatagramHandler` too (write the parameter's type:
/// `|req: &mut DatagramRequest| ...`). What was written to
/// [`DatagramRequest::wfile`] is sent back after `finish`, as in Python.
///
/// ```
/// use socketserver::{DatagramHandler, DatagramRequest, UdpServer};
/// use std::io::{self, Write};
///
/// struct Upper;
///
/// impl DatagramHandler for Upper {
///     fn handle(&self, req: &mut DatagramRequest) -> io::Result<()> {
///         let upper = req.data().to_ascii_uppercase();
///         req.wfile().write_all(&upper)
///     }
/// }
///
/// let server = UdpServer::bind("127.0.0.1:0", Upper)?;
/// # Ok::<(), io::Error>(())
/// ```
pub trait DatagramHandler: Send + Sync + 'static {
    /// Runs before `handle`. If it fails, neither `handle` nor `finish` run.
    fn setup(&self, _req: &mut DatagramRequest) -> io::Result<()> {
        Ok(())
    }

    /// Serves one datagram.
    fn handle(&self, req: &mut DatagramRequest) -> io::Result<()>;

    /// Runs after `handle`, even when `handle` failed or panicked. The
    /// `wfile` reply is sent after it, also when `handle` returned an error
    /// (but not after a panic).
    fn finish(&self, _req: &mut DatagramRequest) -> io::Result<()> {
        Ok(())
    }

    /// Decides whether to serve a datagram from this peer; `false` drops it.
    fn verify_request(&self, _peer: &Address) -> bool {
        true
    }

    /// Called when a request failed or panicked, or a datagram was dropped
    /// (e.g. larger than `max_datagram_size`). Default: [`log_request_error`].
    fn handle_error(&self, peer: &Address, error: &RequestError) {
        log_request_error(peer, error)
    }

    /// Called by `handle_request` when its timeout passes with no request.
    fn handle_timeout(&self) {}

    /// Called by the server loop after each wake-up (and every
    /// `service_interval` if one is set).
    fn service_actions(&self) {}
}

impl<F> StreamHandler for F
where
    F: Fn(&mut StreamRequest) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        self(req)
    }
}

impl<F> DatagramHandler for F
where
    F: Fn(&mut DatagramRequest) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, req: &mut DatagramRequest) -> io::Result<()> {
        self(req)
    }
}

mod sealed {
    /// Only the blanket implementations below make a `Handler`.
    pub trait Sealed<R> {}
    impl<H: super::StreamHandler> Sealed<crate::StreamRequest> for H {}
    impl<H: super::DatagramHandler> Sealed<crate::DatagramRequest> for H {}
}

/// What the server loop needs from a handler for requests of type `R`.
///
/// Implemented for every [`StreamHandler`] (with `R` = [`StreamRequest`]) and
/// every [`DatagramHandler`] (with `R` = [`DatagramRequest`]); implement one
/// of those: this trait is sealed. The method names differ from theirs so
/// that both can be in scope.
pub trait Handler<R>: sealed::Sealed<R> + Send + Sync + 'static {
    /// Runs the whole request: setup, handle, finish, the final flush or
    /// reply; catches panics; reports failures through `report_error`.
    /// Returns how it ended.
    fn serve_request(&self, req: R) -> Outcome;
    /// `verify_request`.
    fn verify(&self, peer: &Address) -> bool;
    /// `verify_tls` (always `true` for datagram handlers).
    #[cfg(feature = "tls")]
    fn verify_session(&self, peer: &Address, tls: &crate::tls::TlsInfo) -> bool;
    /// `handle_error`.
    fn report_error(&self, peer: &Address, error: &RequestError);
    /// `handle_timeout`.
    fn timed_out(&self);
    /// `service_actions`.
    fn service(&self);
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

thread_local! {
    /// Set while handler code runs on this thread, so that the panic hook
    /// leaves its panics to `guarded`.
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
    /// Where the last handler panic on this thread happened.
    static PANIC_LOCATION: Cell<Option<String>> = const { Cell::new(None) };
}

/// Installs, once per process, a panic hook that keeps handler panics out of
/// stderr: the server catches them and logs them through `log` with the
/// peer (the backtrace too, at debug level, when `RUST_BACKTRACE` asks for
/// one). Panics anywhere else go to the hook that was there before.
pub(crate) fn route_panics_to_log() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_HANDLER.with(Cell::get) && !in_green_request() {
                return previous(info);
            }
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            let backtrace = std::backtrace::Backtrace::capture();
            if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
                log::debug!(
                    "handler panic at {}; backtrace:\n{backtrace}",
                    location.as_deref().unwrap_or("an unknown place")
                );
            }
            PANIC_LOCATION.with(|l| l.set(location));
        }));
    });
}

/// Whether this code runs in a green coroutine: a request under `Green`,
/// whose panics are all caught and logged. (`IN_HANDLER` is per thread, and
/// coroutines of one thread interleave, so it cannot tell for them.)
fn in_green_request() -> bool {
    crate::green::is_green()
}

/// Runs `f`, turning an error or a panic into a [`RequestError`].
fn guarded<R>(req: &mut R, f: impl FnOnce(&mut R) -> io::Result<()>) -> Result<(), RequestError> {
    let was = IN_HANDLER.with(|h| h.replace(true));
    let result = catch_unwind(AssertUnwindSafe(|| f(req)));
    IN_HANDLER.with(|h| h.set(was));
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RequestError::Io(e)),
        Err(payload) => {
            let mut message = panic_message(&*payload);
            if let Some(at) = PANIC_LOCATION.with(Cell::take) {
                message = format!("{message} (at {at})");
            }
            Err(RequestError::Panic(message))
        }
    }
}

/// The life of one request, shared by both handler kinds: setup; then handle
/// and finish (finish always); then `complete` (flush or reply) unless
/// something panicked. What a handler wrote before returning an error still
/// goes out, as in Python (e.g. an `ERR ...` line before closing); after a
/// panic it does not, since the reply may be half made. Every failure is
/// reported; returns whether there was none.
fn run_request<R>(
    req: &mut R,
    peer: impl Fn(&R) -> &Address,
    report: impl Fn(&Address, &RequestError),
    setup: impl FnOnce(&mut R) -> io::Result<()>,
    handle: impl FnOnce(&mut R) -> io::Result<()>,
    finish: impl FnOnce(&mut R) -> io::Result<()>,
    complete: impl FnOnce(&mut R) -> io::Result<()>,
) -> Outcome {
    match guarded(req, setup) {
        Ok(()) => {}
        Err(e) => {
            report(peer(req), &e);
            return match e {
                RequestError::Panic(_) => Outcome::Panicked,
                RequestError::Io(_) => Outcome::Errored,
            };
        }
    }
    let handled = guarded(req, handle);
    let finished = guarded(req, finish);
    let panicked = [&handled, &finished]
        .iter()
        .any(|r| matches!(r, Err(RequestError::Panic(_))));
    let mut ok = true;
    for result in [handled, finished] {
        if let Err(e) = result {
            report(peer(req), &e);
            ok = false;
        }
    }
    if !panicked {
        if let Err(e) = guarded(req, complete) {
            // After an error, a failed flush (the peer left) adds nothing.
            if ok {
                report(peer(req), &e);
            }
            ok = false;
        }
    }
    match (panicked, ok) {
        (true, _) => Outcome::Panicked,
        (false, true) => Outcome::Finished,
        (false, false) => Outcome::Errored,
    }
}

impl<H: StreamHandler> Handler<StreamRequest> for H {
    fn serve_request(&self, mut req: StreamRequest) -> Outcome {
        use std::io::Write;
        run_request(
            &mut req,
            |r| r.peer_addr(),
            |p, e| self.handle_error(p, e),
            |r| self.setup(r),
            |r| self.handle(r),
            |r| self.finish(r),
            |r| r.flush(),
        )
    }
    fn verify(&self, peer: &Address) -> bool {
        self.verify_request(peer)
    }
    #[cfg(feature = "tls")]
    fn verify_session(&self, peer: &Address, tls: &crate::tls::TlsInfo) -> bool {
        self.verify_tls(peer, tls)
    }
    fn report_error(&self, peer: &Address, error: &RequestError) {
        self.handle_error(peer, error)
    }
    fn timed_out(&self) {
        self.handle_timeout()
    }
    fn service(&self) {
        self.service_actions()
    }
}

impl<H: DatagramHandler> Handler<DatagramRequest> for H {
    fn serve_request(&self, mut req: DatagramRequest) -> Outcome {
        run_request(
            &mut req,
            |r| r.peer_addr(),
            |p, e| self.handle_error(p, e),
            |r| self.setup(r),
            |r| self.handle(r),
            |r| self.finish(r),
            |r| r.send_pending(),
        )
    }
    fn verify(&self, peer: &Address) -> bool {
        self.verify_request(peer)
    }
    #[cfg(feature = "tls")]
    fn verify_session(&self, _peer: &Address, _tls: &crate::tls::TlsInfo) -> bool {
        true
    }
    fn report_error(&self, peer: &Address, error: &RequestError) {
        self.handle_error(peer, error)
    }
    fn timed_out(&self) {
        self.handle_timeout()
    }
    fn service(&self) {
        self.service_actions()
    }
}
