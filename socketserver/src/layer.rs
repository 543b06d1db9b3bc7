//! A layer between a request's buffers and its socket: what the handler
//! writes goes down through it to the socket, what it reads comes up from
//! the socket through it. TLS is one (`tls/session.rs`); a request holds at
//! most one, as a trait object, and knows nothing of what it is.

use std::io::{self, Write};

use crate::conn::Conn;

/// One connection's layer over its socket (see the [module](self)).
pub(crate) trait Layer: Send + std::fmt::Debug {
    /// Reads plaintext into `buf`, reading the socket as needed: `Ok(0)` at
    /// a clean end; a socket error (a read timeout) as the socket reported
    /// it.
    fn read(&mut self, conn: &Conn, buf: &mut [u8]) -> io::Result<usize>;

    /// Sends all of `buf` through `out` (the socket, or a writer that
    /// bounds the whole write by a deadline).
    fn write_all(&mut self, out: &mut dyn Write, buf: &[u8]) -> io::Result<()>;

    /// Whether bytes wait inside the layer: then a read returns at once,
    /// whether or not the socket is readable.
    fn has_buffered(&mut self) -> bool;

    /// Ends the layer on a clean end of the connection, best effort (TLS:
    /// a `close_notify`).
    fn close(&mut self, conn: &Conn);

    /// The layer as `Any`, for what only one kind of layer can tell (TLS:
    /// what the session negotiated).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    fn as_any(&self) -> &dyn std::any::Any;
}
