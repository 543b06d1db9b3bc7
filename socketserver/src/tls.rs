//! TLS on stream servers (feature `tls`): [`Builder::tls`](crate::Builder::tls)
//! makes every accepted TCP or Unix stream connection speak TLS, with the
//! handler unchanged: [`StreamRequest`] reads and
//! writes plaintext, buffered and auto-flushed as without TLS.
//!
//! Built on [rustls] with its `ring` crypto provider: `ring` builds with
//! cargo and the system C compiler alone, where rustls' default provider,
//! aws-lc-rs, needs cmake too and compiles a large C library.
//!
//! ## The handshake
//!
//! The handshake runs in the request's own thread (a `Forking` or `PreFork`
//! child, a `Green` coroutine), never in the accepting loop, after the
//! connection is admitted (it counts toward `max_connections` and
//! `max_per_ip`), after `verify_request` and after a PROXY header, before
//! `setup` and `handle`. It has a deadline of its own for the whole
//! handshake, not per read: [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s), set with
//! [`Builder::tls_handshake_timeout`](crate::Builder::tls_handshake_timeout);
//! a client that sends its hello one byte at a time is cut there. A failed
//! handshake (timeout, plaintext bytes, a protocol or certificate error) is
//! logged once at `info` with the peer and the reason, counted in
//! [`Stats::failed`](crate::Stats), and never reaches the handler.
//!
//! ## What the handler sees
//!
//! [`StreamRequest::tls_info`] gives the
//! negotiated protocol version, cipher suite, ALPN protocol, SNI name and
//! the client's certificates (when the `ServerConfig` asks for them).
//! [`StreamRequest::stream`] is still the raw
//! socket: under TLS, bytes read or written through it are ciphertext and
//! would corrupt the session; use it for socket options only.
//!
//! ## Mutual TLS
//!
//! [`mutual_server_config`] asks every client for a certificate signed by
//! the CAs of a PEM file, [`ClientAuth::Required`] or
//! [`ClientAuth::Optional`]. A client without one (when required), with one
//! the CAs did not sign, or with an expired one fails the handshake and
//! never reaches the handler. After the handshake,
//! [`StreamHandler::verify_tls`](crate::StreamHandler::verify_tls) sees the
//! client's chain and can refuse it (a pinned certificate, a name);
//! `verify_request` runs earlier, on the address alone.
//!
//! A peer that closes without a TLS `close_notify` makes the next read fail
//! with `UnexpectedEof` (the data may have been truncated by an attacker);
//! a clean close reads as end-of-file.
//!
//! ```no_run
//! use socketserver::{Server, StreamRequest, Threading};
//!
//! let config = socketserver::tls::server_config("cert.pem", "key.pem")?;
//! let server = Server::builder()
//!     .strategy(Threading::new())
//!     .tls(config)
//!     .tcp("0.0.0.0:8443", |r: &mut StreamRequest| r.echo().map(drop))?;
//! server.serve_forever()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use rustls::server::WebPkiClientVerifier;
pub use rustls::{RootCertStore, ServerConfig};

pub use crate::peer_names::PeerNames;

pub(crate) mod session;

use crate::connections::Registry;
use crate::StreamRequest;
pub use session::TlsInfo;
use session::{send_all, tls_error, Session};

/// Default deadline of a whole TLS handshake: 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A `ServerConfig` (ring provider, TLS 1.2 and 1.3, no client
/// certificates) from a PEM certificate chain (the server's certificate
/// first) and a PEM private key (PKCS#8, PKCS#1 or SEC1). Errors name the
/// file and what is wrong with it.
pub fn server_config(
    cert_chain_pem: impl AsRef<Path>,
    key_pem: impl AsRef<Path>,
) -> io::Result<Arc<ServerConfig>> {
    build_config(
        cert_chain_pem.as_ref(),
        key_pem.as_ref(),
        WebPkiClientVerifier::no_client_auth(),
    )
}

/// Whether clients must present a certificate, under
/// [`mutual_server_config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client without a certificate signed by the given CAs fails the
    /// handshake; the handler never runs.
    Required,
    /// A client may present no certificate (then
    /// [`TlsInfo::peer_certificates`] is empty); one that presents a
    /// certificate the CAs did not sign fails the handshake.
    Optional,
}

/// A `ServerConfig` for mutual TLS: as [`server_config`], and clients are
/// asked for a certificate that one of the CA certificates in
/// `client_ca_pem` signed (required or optional, `mode`); expired or
/// not-yet-valid client certificates fail the handshake. The handler sees
/// the client's chain in [`TlsInfo::peer_certificates`], and
/// [`StreamHandler::verify_tls`](crate::StreamHandler::verify_tls) can
/// refuse a client by its certificate before any handler code runs.
///
/// ```no_run
/// use socketserver::tls::{self, ClientAuth};
/// use socketserver::{Server, StreamRequest};
///
/// let config = tls::mutual_server_config("cert.pem", "key.pem", "clients-ca.pem", ClientAuth::Required)?;
/// let server = Server::builder()
///     .tls(config)
///     .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn mutual_server_config(
    cert_chain_pem: impl AsRef<Path>,
    key_pem: impl AsRef<Path>,
    client_ca_pem: impl AsRef<Path>,
    mode: ClientAuth,
) -> io::Result<Arc<ServerConfig>> {
    let path = client_ca_pem.as_ref();
    let roots = Arc::new(load_roots(path)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
    let verifier = match mode {
        ClientAuth::Required => verifier,
        ClientAuth::Optional => verifier.allow_unauthenticated(),
    }
    .build()
    .map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: client CAs: {e}", path.display()),
        )
    })?;
    build_config(cert_chain_pem.as_ref(), key_pem.as_ref(), verifier)
}

/// The certificates of a PEM file as trust anchors (e.g. the CAs that sign
/// client certificates); an error naming the file when it cannot be read,
/// holds no certificate or one that cannot be a trust anchor.
pub fn load_roots(path: &Path) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a usable CA certificate: {e}", path.display()),
            )
        })?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build_config(
    cert_chain_pem: &Path,
    key_pem: &Path,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> io::Result<Arc<ServerConfig>> {
    let certs = load_certs(cert_chain_pem)?;
    let key = load_key(key_pem)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} and {}: {e}",
                    cert_chain_pem.display(),
                    key_pem.display()
                ),
            )
        })?;
    Ok(Arc::new(config))
}

/// The certificates of a PEM file, in order; an error naming the file when
/// it cannot be read or holds none.
pub fn load_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let bad = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    let pem = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file; an error naming the file when it cannot
/// be read or holds no key.
pub fn load_key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no usable PEM private key: {e}", path.display()),
        )
    })
}

/// The server's TLS settings (one per server).
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) timeout: Duration,
    /// Failed handshakes are logged at most once a second.
    pub(crate) failures: crate::throttle::Throttle,
}

/// The builder's TLS settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) config: Option<Arc<ServerConfig>>,
    pub(crate) timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            config: None,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

impl Config {
    /// The gates of the listeners that `choices` describes (one each, in
    /// order); empty when `choices` is.
    pub(crate) fn listener_gates(
        &self,
        choices: Vec<crate::transport::ListenerTls>,
    ) -> Vec<Option<Gate>> {
        use crate::transport::ListenerTls;
        choices
            .into_iter()
            .map(|choice| match choice {
                ListenerTls::Server => self.gate(),
                ListenerTls::Plain => None,
                ListenerTls::Config(config) => Some(Gate {
                    config,
                    timeout: self.timeout,
                    failures: crate::throttle::Throttle::default(),
                }),
            })
            .collect()
    }

    pub(crate) fn gate(&self) -> Option<Gate> {
        self.config.as_ref().map(|config| Gate {
            config: Arc::clone(config),
            timeout: self.timeout,
            failures: crate::throttle::Throttle::default(),
        })
    }
}

/// Runs the handshake of `req` under the gate's deadline. Returns whether
/// to serve the request; when not, it was logged and counted as failed (or,
/// closed by a graceful close before the client said anything, as idle).
pub(crate) fn handshake(req: &mut StreamRequest, gate: &Gate, registry: &Registry) -> bool {
    match run_handshake(req, gate) {
        Ok(session) => {
            req.set_layer(session);
            true
        }
        Err(Failed::Drained) => {
            registry
                .counters
                .refused(crate::counters::RefusedReason::Draining);
            log::debug!(
                "{}: closed before its TLS handshake began (the server is closing)",
                req.peer_addr()
            );
            false
        }
        Err(Failed::Error(why)) => {
            registry
                .counters
                .failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            registry
                .counters
                .handshake_failed(crate::counters::HandshakeStage::Tls);
            if let Some(skipped) = gate.failures.allow() {
                log::info!(
                    "TLS handshake with {} failed: {why}{}",
                    req.peer_addr(),
                    crate::throttle::Throttle::more(skipped)
                );
            }
            false
        }
    }
}

/// Asks `verify` (the handler's `verify_tls`) about the session of `req`;
/// a refusal is counted (`refused`, and the metrics' `verify` reason) and
/// logged at info, at most once a second for the process, with the count
/// of refusals not shown and the names in the client's certificate.
pub(crate) fn verified(
    req: &StreamRequest,
    registry: &Registry,
    verify: impl FnOnce(&crate::Address, &TlsInfo) -> bool,
) -> bool {
    let Some(info) = req.tls_info() else {
        return true;
    };
    if verify(req.peer_addr(), &info) {
        return true;
    }
    registry.refused(
        req.peer_addr(),
        &crate::refusal::Refusal::Verify("verify_tls"),
    );
    if let Some(not_shown) = allow_refusal_log(Instant::now()) {
        let names = info.peer_names().map_or_else(
            || "no client certificate".to_owned(),
            |n| {
                format!(
                    "certificate CN {:?}, DNS {:?}, IP {:?}",
                    n.common_name.as_deref().unwrap_or(""),
                    n.dns_names,
                    n.ip_addresses
                )
            },
        );
        let more = match not_shown {
            0 => String::new(),
            n => format!(" ({n} more refusals in the last second not shown)"),
        };
        log::info!("{} refused by verify_tls: {names}{more}", req.peer_addr());
    }
    false
}

/// `Some(refusals not shown since the last line)` when a refusal may be
/// logged now: one line a second at most, for the whole process, so that
/// no client can flood the log.
fn allow_refusal_log(now: Instant) -> Option<u64> {
    static LAST: parking_lot::Mutex<(Option<Instant>, u64)> = parking_lot::const_mutex((None, 0));
    let mut state = LAST.lock();
    let (last, not_shown) = &mut *state;
    match last {
        Some(t) if now.saturating_duration_since(*t) < Duration::from_secs(1) => {
            *not_shown += 1;
            None
        }
        _ => {
            *last = Some(now);
            Some(std::mem::take(not_shown))
        }
    }
}

/// How a handshake ended without a session.
enum Failed {
    /// A graceful close began while the client had sent nothing yet: the
    /// connection was idle, as one waiting for a new message, and is closed
    /// as those are.
    Drained,
    /// Timeout, end-of-file, a socket or TLS error.
    Error(io::Error),
}

impl From<io::Error> for Failed {
    fn from(e: io::Error) -> Self {
        Failed::Error(e)
    }
}

/// Marks the connection idle (or busy); when marking it idle, whether a
/// graceful close has begun.
fn mark_idle(req: &mut StreamRequest, idle: bool) -> bool {
    req.registration_mut().is_some_and(|r| r.set_idle(idle))
}

/// Counts the connection as closed idle by a graceful close.
fn drained(req: &mut StreamRequest) -> Failed {
    if let Some(r) = req.registration_mut() {
        r.count_idle_closed();
    }
    Failed::Drained
}

fn run_handshake(req: &mut StreamRequest, gate: &Gate) -> Result<Box<Session>, Failed> {
    let mut tls =
        rustls::ServerConnection::new(Arc::clone(&gate.config)).map_err(|e| tls_error(&e))?;
    let deadline = Instant::now() + gate.timeout;
    // Until the client's first byte the connection is idle: a graceful
    // close shuts it down (the read below ends) rather than waiting for
    // its handshake, as it does a connection waiting for a new message.
    let mut silent = true;
    // Behind a PROXY header, the first records may have come with it.
    let early = req.take_buffered();
    if !early.is_empty() {
        silent = false;
        feed(&mut tls, req, &early)?;
    }
    if silent && mark_idle(req, true) {
        mark_idle(req, false);
        if !crate::sys::readable_now(std::os::fd::AsFd::as_fd(req.stream())) {
            return Err(drained(req));
        }
        silent = false;
    }
    let result = drive(&mut tls, req, gate, deadline, &mut silent);
    if silent {
        mark_idle(req, false);
    }
    result?;
    Ok(Box::new(Session::new(tls)))
}

/// Gives rustls `bytes` that were read from the socket before the
/// handshake began (after a PROXY header).
fn feed(
    tls: &mut rustls::ServerConnection,
    req: &mut StreamRequest,
    mut bytes: &[u8],
) -> Result<(), Failed> {
    while !bytes.is_empty() {
        if tls.read_tls(&mut bytes)? == 0 {
            break;
        }
        if let Err(e) = tls.process_new_packets() {
            // The alert that tells the client why, best effort.
            let _ = tls.write_tls(&mut req.stream());
            return Err(tls_error(&e).into());
        }
    }
    Ok(())
}

/// The handshake's loop: writes what rustls has to send, reads (within the
/// deadline) what it needs, until the handshake is complete. `silent`:
/// nothing was read yet (the connection is marked idle meanwhile).
fn drive(
    tls: &mut rustls::ServerConnection,
    req: &mut StreamRequest,
    gate: &Gate,
    deadline: Instant,
    silent: &mut bool,
) -> Result<(), Failed> {
    let timed_out = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "not complete within {:?} (tls_handshake_timeout)",
                gate.timeout
            ),
        )
    };
    while tls.is_handshaking() {
        send_all(tls, &mut req.stream())?;
        if !tls.is_handshaking() {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out().into());
        }
        let conn = req.stream();
        conn.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let mut io = conn;
        let read = tls.read_tls(&mut io);
        let interrupted = matches!(&read, Err(e) if e.kind() == io::ErrorKind::Interrupted);
        if *silent && !interrupted {
            // Whether a graceful close began while the client was silent
            // (then it shut the connection down: the read ended).
            let drain = mark_idle(req, true);
            mark_idle(req, false);
            *silent = false;
            if drain && matches!(read, Ok(0)) {
                return Err(drained(req));
            }
        }
        let n = match read {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out().into())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection during the handshake",
            )
            .into());
        }
        if let Err(e) = tls.process_new_packets() {
            // The alert that tells the client why, best effort.
            let _ = tls.write_tls(&mut req.stream());
            return Err(tls_error(&e).into());
        }
    }
    send_all(tls, &mut req.stream())?;
    Ok(())
}
