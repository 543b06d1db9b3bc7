//! Client sockets of either transport: a stream connection with timeouts,
//! a datagram socket connected to one server, and the `scheme://addr` of a
//! server for messages.

use std::io;
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use socketserver::{Address, Conn};

/// Connects a stream client: TCP for `HOST:PORT` (at most `timeout`), Unix
/// stream for `unix:PATH`. Read and write timeouts are set to `timeout`.
pub fn connect_stream(addr: &Address, timeout: Duration) -> io::Result<Conn> {
    let conn = match addr {
        Address::Inet(a) => Conn::Tcp(TcpStream::connect_timeout(a, timeout)?),
        Address::Unix(Some(p)) => Conn::Unix(UnixStream::connect(p)?),
        Address::Unix(None) => return Err(unnamed()),
    };
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    Ok(conn)
}

/// A datagram client connected to one server: UDP, or Unix datagram bound
/// to a temporary path of its own (so that the server can answer), which is
/// removed on drop.
#[derive(Debug)]
pub enum DatagramClient {
    /// A UDP socket on the loopback (or wildcard) address of the server's
    /// family.
    Udp(UdpSocket),
    /// A Unix datagram socket and the path it is bound to.
    Unix(UnixDatagram, PathBuf),
}

impl DatagramClient {
    /// Binds a client socket and connects it to `server`; receive timeout
    /// `timeout`.
    pub fn connect(server: &Address, timeout: Duration) -> io::Result<DatagramClient> {
        let client = match server {
            Address::Inet(a) => {
                let local = match (a.is_ipv4(), a.ip().is_loopback()) {
                    (true, true) => "127.0.0.1:0",
                    (true, false) => "0.0.0.0:0",
                    (false, true) => "[::1]:0",
                    (false, false) => "[::]:0",
                };
                let s = UdpSocket::bind(local)?;
                s.connect(a)?;
                DatagramClient::Udp(s)
            }
            Address::Unix(Some(p)) => {
                static N: AtomicUsize = AtomicUsize::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                let mine = std::env::temp_dir()
                    .join(format!("demos-client-{}-{n}.sock", std::process::id()));
                let _ = std::fs::remove_file(&mine);
                let s = UnixDatagram::bind(&mine)?;
                if let Err(e) = s.connect(p) {
                    let _ = std::fs::remove_file(&mine);
                    return Err(e);
                }
                DatagramClient::Unix(s, mine)
            }
            Address::Unix(None) => return Err(unnamed()),
        };
        client.set_read_timeout(Some(timeout))?;
        Ok(client)
    }

    /// Sends one datagram to the server.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            DatagramClient::Udp(s) => s.send(buf),
            DatagramClient::Unix(s, _) => s.send(buf),
        }
    }

    /// Receives one datagram from the server (waits at most the timeout).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DatagramClient::Udp(s) => s.recv(buf),
            DatagramClient::Unix(s, _) => s.recv(buf),
        }
    }

    /// Sets the receive timeout.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            DatagramClient::Udp(s) => s.set_read_timeout(t),
            DatagramClient::Unix(s, _) => s.set_read_timeout(t),
        }
    }

    /// A second handle to the same socket (for a reader thread). The
    /// clone does not own the Unix path.
    pub fn try_clone(&self) -> io::Result<DatagramClient> {
        Ok(match self {
            DatagramClient::Udp(s) => DatagramClient::Udp(s.try_clone()?),
            DatagramClient::Unix(s, _) => DatagramClient::Unix(s.try_clone()?, PathBuf::new()),
        })
    }

    /// The client's own address.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            DatagramClient::Unix(_, p) if !p.as_os_str().is_empty() => Some(p),
            _ => None,
        }
    }
}

impl Drop for DatagramClient {
    fn drop(&mut self) {
        if let Some(p) = self.local_path() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `scheme://addr` for a client-side address, as in error messages.
pub fn url(addr: &Address, datagram: bool) -> String {
    match (addr, datagram) {
        (Address::Unix(Some(p)), false) => format!("unix://{}", p.display()),
        (Address::Unix(Some(p)), true) => format!("unixgram://{}", p.display()),
        (a, false) => format!("tcp://{a}"),
        (a, true) => format!("udp://{a}"),
    }
}

/// The error for `unix:` without a path.
pub(crate) fn unnamed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "a Unix address needs a path")
}
