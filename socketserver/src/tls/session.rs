//! One connection's TLS session once its handshake is complete: the
//! [`Layer`] between the request's buffers and the socket ([`Conn`]) that encrypts
//! what the handler writes and decrypts what it reads. It knows the socket,
//! not the request. [`TlsInfo`]: what the session negotiated.

use std::io::{self, Read, Write};

use rustls::pki_types::CertificateDer;

use crate::conn::Conn;
use crate::layer::Layer;

/// What a TLS session negotiated, from
/// [`StreamRequest::tls_info`](crate::StreamRequest::tls_info).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The protocol version, e.g. `TLSv1_3`.
    pub protocol: Option<rustls::ProtocolVersion>,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: Option<rustls::CipherSuite>,
    /// The ALPN protocol agreed on, if any.
    pub alpn: Option<Vec<u8>>,
    /// The server name the client asked for (SNI), if it sent one.
    pub sni: Option<String>,
    /// The client's certificate chain, when the configuration asked for one
    /// and the client sent it; empty otherwise.
    pub peer_certificates: Vec<CertificateDer<'static>>,
}

/// One connection's TLS session.
#[derive(Debug)]
pub(crate) struct Session(rustls::ServerConnection);

impl Session {
    /// The session of a connection whose handshake is complete.
    pub(crate) fn new(established: rustls::ServerConnection) -> Session {
        Session(established)
    }
}

/// A TLS error as an `io::Error` (`InvalidData`).
pub(crate) fn tls_error(e: &rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

impl Session {
    /// Sends what rustls has queued (records, alerts).
    fn send_queued(&mut self, conn: &Conn) -> io::Result<()> {
        send_all(&mut self.0, &mut &*conn)
    }

    /// What the session negotiated.
    pub(crate) fn info(&self) -> TlsInfo {
        let c = &self.0;
        TlsInfo {
            protocol: c.protocol_version(),
            cipher_suite: c.negotiated_cipher_suite().map(|s| s.suite()),
            alpn: c.alpn_protocol().map(<[u8]>::to_vec),
            sni: c.server_name().map(str::to_owned),
            peer_certificates: c
                .peer_certificates()
                .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
        }
    }
}

impl Layer for Session {
    /// Reads records from `conn` until plaintext (or the end) is there,
    /// then returns it: `Ok(0)` after the peer's `close_notify`,
    /// `UnexpectedEof` when it closed without one, a socket error (a read
    /// timeout) as the socket reported it, `InvalidData` for a TLS error.
    fn read(&mut self, conn: &Conn, buf: &mut [u8]) -> io::Result<usize> {
        let mut io = conn;
        loop {
            match self.0.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
            self.0.read_tls(&mut io)?;
            let processed = self.0.process_new_packets();
            // Alerts, key update answers.
            let sent = self.send_queued(conn);
            processed.map_err(|e| tls_error(&e))?;
            sent?;
        }
    }

    /// Encrypts all of `buf` and sends it through `out` (the connection,
    /// or a writer bounding the whole write by a deadline).
    fn write_all(&mut self, out: &mut dyn Write, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.0.writer().write(buf)?;
            if n == 0 && !self.0.wants_write() {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
            send_all(&mut self.0, out)?;
        }
        Ok(())
    }

    /// Whether decrypted bytes (or the peer's `close_notify`) wait to be
    /// read.
    fn has_buffered(&mut self) -> bool {
        self.0
            .process_new_packets()
            .is_ok_and(|s| s.plaintext_bytes_to_read() > 0 || s.peer_has_closed())
    }

    /// A `close_notify` to the peer, best effort.
    fn close(&mut self, conn: &Conn) {
        self.0.send_close_notify();
        let _ = self.send_queued(conn);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Writes everything rustls has queued.
pub(crate) fn send_all(tls: &mut rustls::ServerConnection, out: &mut dyn Write) -> io::Result<()> {
    while tls.wants_write() {
        if tls.write_tls(out)? == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}
