//! TLS for the demos: the flags of servers ([`ServerTlsArgs`]) and clients
//! ([`ClientTlsArgs`]), the client side of a session ([`Stream`]: a
//! blocking stream over a TCP or Unix socket, plaintext or TLS, that every
//! demo client reads and writes the same way), the clear messages of a
//! failed handshake ([`describe`]), and `demos tls gen` ([`throwaway`]).
//!
//! The server side is the library's (`socketserver::tls`, feature `tls`):
//! [`ServerTlsArgs::config`] builds its `ServerConfig` from the flags. The
//! client side uses rustls with the same `ring` provider.

pub mod throwaway;

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use parking_lot::Mutex;
use socketserver::tls::rustls::{
    self, pki_types::ServerName, AlertDescription, CertificateError, ClientConfig, ClientConnection,
};
use socketserver::tls::{ClientAuth, ServerConfig};
use socketserver::{Address, Conn};

use crate::cli::CliError;

/// The TLS flags of a server: `--tls-cert`, `--tls-key`, `--tls-client-ca`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerTlsArgs {
    /// Serve TLS with this PEM certificate chain (the server's certificate
    /// first); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require a client certificate signed by a CA of this PEM file (mutual
    /// TLS); needs --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// Whether TLS is on (`--tls-cert` given).
    pub fn enabled(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// Whether clients must present a certificate (`--tls-client-ca`).
    pub fn requires_client_cert(&self) -> bool {
        self.enabled() && self.tls_client_ca.is_some()
    }

    /// The server's TLS configuration, `None` without `--tls-cert`. A file
    /// that cannot be read or holds no usable certificate or key is a usage
    /// error (exit status 2) naming the file; `what` is the command
    /// (`shell serve`).
    pub fn config(&self, what: &str) -> Result<Option<Arc<ServerConfig>>, CliError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let config = match &self.tls_client_ca {
            Some(ca) => {
                socketserver::tls::mutual_server_config(cert, key, ca, ClientAuth::Required)
            }
            None => socketserver::tls::server_config(cert, key),
        };
        config
            .map(Some)
            .map_err(|e| CliError::usage(format!("{what}: TLS: {e}")))
    }
}

/// The TLS flags of a client: `--tls-ca` (turns TLS on), `--tls-cert` and
/// `--tls-key` (a client certificate), `--tls-server-name`.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientTlsArgs {
    /// Speak TLS, trusting the CA certificates of this PEM file (and only
    /// them) for the server's certificate.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Present this PEM client certificate (for a server with
    /// --tls-client-ca); needs --tls-ca and --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_ca", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must be valid for [default: the
    /// host of --connect as typed: a DNS name, or an IP address].
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

/// What a client needs to open TLS sessions: the configuration and the
/// name to check the server's certificate against.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    ca: PathBuf,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("name", &self.name)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl ClientTlsArgs {
    /// The client's TLS settings, `None` without `--tls-ca`. `host` is the
    /// host of `--connect` as typed (see [`host_of`]), the default server
    /// name. Unreadable files and bad names are usage errors (exit status
    /// 2); `what` is the command (`shell run`).
    pub fn client(&self, host: Option<&str>, what: &str) -> Result<Option<ClientTls>, CliError> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let usage = |e: String| CliError::usage(format!("{what}: TLS: {e}"));
        let roots = socketserver::tls::load_roots(ca).map_err(|e| usage(e.to_string()))?;
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| usage(e.to_string()))?
                .with_root_certificates(roots);
        let config = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let certs =
                    socketserver::tls::load_certs(cert).map_err(|e| usage(e.to_string()))?;
                let key = socketserver::tls::load_key(key).map_err(|e| usage(e.to_string()))?;
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    usage(format!(
                        "{} and {}: {e}",
                        cert.display(),
                        self.tls_key.as_deref().unwrap_or(cert).display()
                    ))
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        let name = match self.tls_server_name.as_deref().or(host) {
            Some(n) => ServerName::try_from(n.to_owned())
                .map_err(|e| usage(format!("{n:?} is not a server name: {e}")))?,
            None => {
                return Err(usage(
                    "a Unix socket has no host name: give --tls-server-name".into(),
                ))
            }
        };
        Ok(Some(ClientTls {
            config: Arc::new(config),
            name,
            ca: ca.clone(),
        }))
    }
}

/// The host part of a `--connect` value as typed: `localhost` for
/// `localhost:7000`, `::1` for `[::1]:7000`; `None` for `unix:PATH`.
///
/// ```
/// use demos::tls::host_of;
/// assert_eq!(host_of("localhost:7000").as_deref(), Some("localhost"));
/// assert_eq!(host_of("127.0.0.1:0").as_deref(), Some("127.0.0.1"));
/// assert_eq!(host_of("[::1]:7000").as_deref(), Some("::1"));
/// assert_eq!(host_of("unix:/tmp/s.sock"), None);
/// ```
pub fn host_of(connect: &str) -> Option<String> {
    if connect.starts_with("unix:") {
        return None;
    }
    let (host, _port) = connect.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_owned())
}

/// A `--connect` value: the address, and the host as typed (the default
/// TLS server name).
#[derive(Debug, Clone)]
pub struct Target {
    /// The resolved address.
    pub addr: Address,
    /// The host as typed; `None` for a Unix socket.
    pub host: Option<String>,
}

/// Parses a `--connect` value ([`parse_address`](crate::cli::parse_address)
/// and [`host_of`]).
pub fn parse_target(s: &str) -> Result<Target, String> {
    Ok(Target {
        addr: crate::cli::parse_address(s)?,
        host: host_of(s),
    })
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// A client's connection: plaintext, or a TLS session over the socket.
/// Reads and writes go through `&Stream` as through a socket; clones
/// ([`try_clone`](Self::try_clone)) share the session, for a reader and a
/// writer used one after the other in one thread (a read blocks the
/// session until it returns).
#[derive(Debug)]
pub struct Stream {
    conn: Conn,
    tls: Option<Arc<Mutex<Session>>>,
}

#[derive(Debug)]
struct Session {
    tls: ClientConnection,
    ca: PathBuf,
}

impl Stream {
    /// A plaintext stream.
    pub fn plain(conn: Conn) -> Stream {
        Stream { conn, tls: None }
    }

    /// Runs the TLS handshake on `conn` (under the socket's timeouts) when
    /// `tls` is given, else returns a plaintext stream. A failed handshake
    /// is `InvalidData` with a message from [`describe`].
    pub fn start(conn: Conn, tls: Option<&ClientTls>) -> io::Result<Stream> {
        let Some(tls) = tls else {
            return Ok(Stream::plain(conn));
        };
        let client = ClientConnection::new(Arc::clone(&tls.config), tls.name.clone())
            .map_err(|e| tls_error(&e, &tls.ca))?;
        let mut session = Session {
            tls: client,
            ca: tls.ca.clone(),
        };
        while session.tls.is_handshaking() {
            session.send(&conn)?;
            if !session.tls.is_handshaking() {
                break;
            }
            if session.receive(&conn)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TLS: the server closed the connection during the handshake \
                     (does it serve TLS?)",
                ));
            }
        }
        session.send(&conn)?;
        Ok(Stream {
            conn,
            tls: Some(Arc::new(Mutex::new(session))),
        })
    }

    /// The socket, for options (timeouts, linger). Under TLS, bytes read
    /// or written through it would break the session.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Whether this is a TLS session.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A second handle on the same connection (and TLS session).
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(Stream {
            conn: self.conn.try_clone()?,
            tls: self.tls.clone(),
        })
    }

    /// Sets the socket's read timeout.
    pub fn set_read_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        self.conn.set_read_timeout(t)
    }

    /// Sets the socket's write timeout.
    pub fn set_write_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        self.conn.set_write_timeout(t)
    }

    /// Sends a TLS `close_notify` (nothing without TLS), best effort: the
    /// peer then reads a clean end of the session.
    pub fn close_notify(&self) {
        if let Some(tls) = &self.tls {
            let mut s = tls.lock();
            s.tls.send_close_notify();
            let _ = s.send(&self.conn);
        }
    }

    /// Closes the sending side: a TLS `close_notify` first, then a
    /// half-close of the socket.
    pub fn shutdown_write(&self) -> io::Result<()> {
        if let Some(tls) = &self.tls {
            let mut s = tls.lock();
            s.tls.send_close_notify();
            s.send(&self.conn)?;
        }
        self.conn.shutdown(std::net::Shutdown::Write)
    }
}

impl Session {
    /// Sends what rustls has queued.
    fn send(&mut self, conn: &Conn) -> io::Result<()> {
        let mut io = conn;
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut io)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Reads records from the socket and processes them; returns the bytes
    /// read (0: the socket's end of file).
    fn receive(&mut self, conn: &Conn) -> io::Result<usize> {
        let mut io = conn;
        let n = loop {
            match self.tls.read_tls(&mut io) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r?,
            }
        };
        if let Err(e) = self.tls.process_new_packets() {
            // The alert that tells the server why, best effort.
            let _ = self.send(conn);
            return Err(tls_error(&e, &self.ca));
        }
        Ok(n)
    }

    fn read(&mut self, conn: &Conn, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(io::Error::new(
                        e.kind(),
                        "TLS: the server closed the connection without a close_notify \
                         (the data may be truncated)",
                    ))
                }
                r => return r,
            }
            self.send(conn)?;
            if self.receive(conn)? == 0 {
                // The socket ended: rustls reports it on the next read
                // (clean after a close_notify, UnexpectedEof without).
                match self.tls.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "TLS: the server closed the connection without a close_notify",
                        ))
                    }
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    r => return r,
                }
            }
        }
    }

    /// A write failed (the server closed: a broken pipe, a reset): the
    /// reason may be an alert it sent first (it refused our client
    /// certificate). Reads what is still there, briefly, and returns that
    /// alert's message if there is one, else `e`.
    fn why_write_failed(&mut self, conn: &Conn, e: io::Error) -> io::Error {
        if !matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ) {
            return e;
        }
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_millis(200)));
        for _ in 0..8 {
            match self.receive(conn) {
                Err(tls) if tls.kind() == io::ErrorKind::InvalidData => return tls,
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        e
    }

    /// Encrypts and sends all of `buf`, in pieces: rustls takes as much
    /// plaintext as its buffer holds at a time.
    fn write_all(&mut self, conn: &Conn, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.tls.writer().write(buf)?;
            if n == 0 && !self.tls.wants_write() {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
            self.send(conn)?;
        }
        Ok(())
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.tls {
            Some(tls) => tls.lock().read(&self.conn, buf),
            None => (&self.conn).read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.tls {
            Some(tls) => {
                let mut session = tls.lock();
                match session.write_all(&self.conn, buf) {
                    Ok(()) => Ok(buf.len()),
                    Err(e) => Err(session.why_write_failed(&self.conn, e)),
                }
            }
            None => (&self.conn).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &self.tls {
            Some(tls) => tls.lock().send(&self.conn),
            None => Ok(()),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

/// Connects a stream client ([`connect_stream`](crate::net::connect_stream))
/// and, with `tls`, runs the TLS handshake within the same timeout.
pub fn connect(
    addr: &Address,
    tls: Option<&ClientTls>,
    timeout: std::time::Duration,
) -> io::Result<Stream> {
    let conn = crate::net::connect_stream(addr, timeout)?;
    Stream::start(conn, tls)
}

/// The error of a plaintext client's first exchange (the HMAC challenge),
/// naming the server, with a hint when the cause may be a TLS server: one
/// waits for a TLS hello and says nothing, then closes at its handshake
/// deadline, so a plaintext client sees a timeout, an end of file or a
/// refusal where it expected the challenge.
pub fn first_exchange_error(e: io::Error, url: &str, tls: bool) -> io::Error {
    use io::ErrorKind as K;
    let maybe_tls = !tls
        && matches!(
            e.kind(),
            K::WouldBlock
                | K::TimedOut
                | K::UnexpectedEof
                | K::PermissionDenied
                | K::ConnectionReset
        );
    let what = match e.kind() {
        K::WouldBlock | K::TimedOut => "no answer in time".to_owned(),
        _ => e.to_string(),
    };
    if maybe_tls {
        io::Error::new(
            e.kind(),
            format!("{url}: {what} (if the server serves TLS, connect with --tls-ca)"),
        )
    } else {
        io::Error::new(e.kind(), format!("{url}: {what}"))
    }
}

/// `localhost` for rustls' `DnsName("localhost")`, `127.0.0.1` for
/// `IpAddress(127.0.0.1)`.
fn plain_name(n: &str) -> &str {
    for (open, close) in [("DnsName(\"", "\")"), ("IpAddress(", ")")] {
        if let Some(inner) = n.strip_prefix(open).and_then(|r| r.strip_suffix(close)) {
            return inner;
        }
    }
    n
}

fn tls_error(e: &rustls::Error, ca: &std::path::Path) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, describe(e, ca))
}

/// A one-line message for a TLS error of a client, starting with `TLS:`,
/// that says what went wrong in the user's terms: the server's certificate
/// is not valid for the name, not signed by the CA of `ca` (`--tls-ca`),
/// expired; the server wants a client certificate; a record failed its
/// integrity check (tampering); the server does not speak TLS.
pub fn describe(e: &rustls::Error, ca: &std::path::Path) -> String {
    use rustls::Error as E;
    let why = match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName => {
                "the server's certificate is not valid for the name asked for \
                 (use --tls-server-name, or connect by a name in the certificate)"
                    .to_owned()
            }
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => format!(
                "certificate not valid for name {}: it is valid for {} \
                 (use --tls-server-name, or connect by one of those)",
                expected.to_str(),
                if presented.is_empty() {
                    "no name".to_owned()
                } else {
                    presented
                        .iter()
                        .map(|n| plain_name(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            CertificateError::UnknownIssuer => format!(
                "the server's certificate is not signed by a CA of --tls-ca {} \
                 (unknown issuer)",
                ca.display()
            ),
            CertificateError::BadSignature => format!(
                "the server's certificate has a bad signature (not from a CA of --tls-ca {})",
                ca.display()
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (check the clocks)".to_owned()
            }
            other => format!("the server's certificate was refused: {other:?}"),
        },
        E::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => {
                "the server requires a client certificate (--tls-cert and --tls-key)".to_owned()
            }
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied => format!(
                "the server refused our client certificate (alert {alert:?}): \
                 is it signed by the server's --tls-client-ca?"
            ),
            AlertDescription::BadRecordMac | AlertDescription::DecryptError => format!(
                "the server could not authenticate a record we sent (alert {alert:?}): \
                 the connection was tampered with or corrupted"
            ),
            other => format!("the server ended the session with alert {other:?}"),
        },
        E::DecryptError => "a record from the server failed its integrity check \
             (bad_record_mac): the connection was tampered with or corrupted"
            .to_owned(),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            format!("the server's answer is not valid TLS ({e}): does it serve TLS?")
        }
        other => other.to_string(),
    };
    format!("TLS: {why}")
}

/// The rule for servers that run commands or hand out files (`shell
/// serve`, `files serve`): whether they may listen on `addr` without
/// `--allow-remote`. Loopback addresses and Unix sockets always may.
/// Beyond loopback, only when TLS is on (`--tls-cert`) **and** clients
/// must prove who they are before anything else: a client certificate
/// (`--tls-client-ca`) or the HMAC key (`--key-file`, inside TLS).
/// `Err` holds why not, for the refusal's message.
///
/// ```
/// use demos::tls::{remote_policy, ServerTlsArgs};
/// let lo = "127.0.0.1:0".parse().unwrap();
/// let any = "0.0.0.0:7000".parse().unwrap();
/// let plain = ServerTlsArgs::default();
/// let tls = ServerTlsArgs { tls_cert: Some("s.pem".into()), tls_key: Some("k.pem".into()), ..Default::default() };
/// let mtls = ServerTlsArgs { tls_client_ca: Some("ca.pem".into()), ..tls.clone() };
/// assert!(remote_policy(&lo, &plain, false).is_ok());
/// assert!(remote_policy(&any, &plain, true).is_err());
/// assert!(remote_policy(&any, &tls, false).is_err());
/// assert!(remote_policy(&any, &tls, true).is_ok());
/// assert!(remote_policy(&any, &mtls, false).is_ok());
/// ```
pub fn remote_policy(addr: &Address, tls: &ServerTlsArgs, key: bool) -> Result<(), &'static str> {
    if addr.is_local() {
        return Ok(());
    }
    match (tls.enabled(), tls.requires_client_cert() || key) {
        (true, true) => Ok(()),
        (false, _) => Err(
            "without TLS, everything (commands, files, their output) crosses \
                           the network in clear",
        ),
        (true, false) => Err(
            "with TLS but neither client certificates (--tls-client-ca) nor \
                              a key (--key-file), anyone who can connect is let in",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::first_exchange_error;
    use std::io;

    #[test]
    fn a_plaintext_client_that_gets_no_challenge_is_told_about_tls() {
        let e = io::Error::from(io::ErrorKind::WouldBlock);
        let e = first_exchange_error(e, "tcp://127.0.0.1:9", false);
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(
            e.to_string(),
            "tcp://127.0.0.1:9: no answer in time (if the server serves TLS, connect with --tls-ca)"
        );
    }

    #[test]
    fn a_tls_client_or_another_error_gets_no_tls_hint() {
        let timeout = first_exchange_error(
            io::Error::from(io::ErrorKind::TimedOut),
            "tcp://127.0.0.1:9",
            true,
        );
        assert!(!timeout.to_string().contains("--tls-ca"), "{timeout}");
        let data = first_exchange_error(
            io::Error::new(io::ErrorKind::InvalidData, "bad frame"),
            "tcp://127.0.0.1:9",
            false,
        );
        assert_eq!(data.to_string(), "tcp://127.0.0.1:9: bad frame");
    }
}
