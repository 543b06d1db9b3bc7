//! What a handler receives: [`StreamRequest`] (one accepted connection) and
//! [`DatagramRequest`] (one datagram and a way to answer it).

use std::io::{self, BufRead, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use crate::{Address, ShutdownHandle};

/// A connected stream socket: TCP or Unix. Reads and writes go straight to
/// the socket (unbuffered); both `Conn` and `&Conn` implement `Read` and
/// `Write`, so another thread can write through a shared reference or a
/// [`Conn::try_clone`].
#[derive(Debug)]
pub enum Conn {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix stream connection.
    Unix(UnixStream),
}

macro_rules! both {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Conn::Tcp($s) => $e,
            Conn::Unix($s) => $e,
        }
    };
}

impl Conn {
    /// A second handle to the same connection (`dup(2)`), e.g. for a writer
    /// thread.
    pub fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    /// Shuts down the read, write or both halves (wakes a blocked reader).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        both!(self, s => s.shutdown(how))
    }

    /// Sets the read timeout (`None` = block forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        both!(self, s => s.set_read_timeout(t))
    }

    /// Sets the write timeout (`None` = block forever).
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        both!(self, s => s.set_write_timeout(t))
    }

    /// The TCP stream, if this is one (to set TCP options).
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Tcp(s) => Some(s),
            Conn::Unix(_) => None,
        }
    }
}

impl Read for &Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        both!(*self, s => (&*s).read(buf))
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        both!(*self, s => (&*s).read_vectored(bufs))
    }
}

impl Write for &Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        both!(*self, s => (&*s).write(buf))
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        both!(*self, s => (&*s).write_vectored(bufs))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        both!(self, s => s.as_fd())
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        both!(self, s => s.as_raw_fd())
    }
}

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
    registration: Option<crate::connections::Registration>,
    conn: Conn,
    peer: Address,
    shutdown: ShutdownHandle,
    rbuf: Vec<u8>,
    rpos: usize,
    rfilled: usize,
    wbuf: Vec<u8>,
}

impl StreamRequest {
    pub(crate) fn new(conn: Conn, peer: Address, shutdown: ShutdownHandle) -> StreamRequest {
        StreamRequest {
            registration: None,
            conn,
            peer,
            shutdown,
            rbuf: Vec::new(),
            rpos: 0,
            rfilled: 0,
            wbuf: Vec::new(),
        }
    }

    /// The peer's address (Python: `self.client_address`).
    pub fn peer_addr(&self) -> &Address {
        &self.peer
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
    /// one `write` per chunk, no extra copies.
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
            (&self.conn).write_all(&self.rbuf[self.rpos..self.rfilled])?;
            total += (self.rfilled - self.rpos) as u64;
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
            let n = match (&self.conn).read(buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            (&self.conn).write_all(&buf[..n])?;
            total += n as u64;
            if n == buf.len() && n < MAX_ECHO_BUF {
                big = vec![0u8; (n * 8).min(MAX_ECHO_BUF)];
            }
        }
    }

    /// Whether unread bytes sit in the read buffer.
    pub fn has_buffered_input(&self) -> bool {
        self.rpos < self.rfilled
    }
}

impl Read for StreamRequest {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Large reads with an empty buffer bypass it.
        if self.rpos == self.rfilled && buf.len() >= BUF_SIZE {
            self.flush()?;
            return (&self.conn).read(buf);
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
            if self.rbuf.is_empty() {
                self.rbuf = vec![0; BUF_SIZE];
            }
            let n = loop {
                match (&self.conn).read(&mut self.rbuf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => break r?,
                }
            };
            self.rpos = 0;
            self.rfilled = n;
        }
        Ok(&self.rbuf[self.rpos..self.rfilled])
    }

    fn consume(&mut self, amt: usize) {
        self.rpos = (self.rpos + amt).min(self.rfilled);
    }
}

impl Write for StreamRequest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.wbuf.len() + buf.len() > BUF_SIZE {
            self.flush()?;
        }
        if buf.len() >= BUF_SIZE {
            return (&self.conn).write(buf);
        }
        self.wbuf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            let result = (&self.conn).write_all(&self.wbuf);
            self.wbuf.clear();
            result?;
        }
        Ok(())
    }
}

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
                    if !crate::sys::wait_writable(self.as_fd(), Duration::from_secs(5))? {
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
        }
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
        self.socket.send_to(data, &self.peer).map(drop)
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

pub(crate) mod sealed {
    /// What the server loop needs to know about a request beyond its peer.
    pub trait Tracked {
        /// The connection's socket, for stream requests.
        fn conn(&self) -> Option<&super::Conn>;
        /// Keeps the registry entry alive as long as the request.
        fn attach(&mut self, registration: crate::connections::Registration);
    }
}

impl sealed::Tracked for StreamRequest {
    fn conn(&self) -> Option<&Conn> {
        Some(&self.conn)
    }
    fn attach(&mut self, registration: crate::connections::Registration) {
        self.registration = Some(registration);
    }
}

impl sealed::Tracked for DatagramRequest {
    fn conn(&self) -> Option<&Conn> {
        None
    }
    fn attach(&mut self, _registration: crate::connections::Registration) {}
}

/// A request knows who sent it. Implemented by [`StreamRequest`] and
/// [`DatagramRequest`].
pub trait Peer {
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
