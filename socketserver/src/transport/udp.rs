use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use socket2::{Protocol, Type};

use super::{next_datagram, Next, SocketOptions, Source, Transport};
use crate::error::at;
use crate::{Address, DatagramRequest, DatagramSocket, ShutdownHandle};

/// A bound UDP socket (IPv4 or IPv6).
#[derive(Debug)]
pub struct Udp {
    socket: Arc<DatagramSocket>,
    address: Address,
    max_datagram_size: usize,
}

impl Udp {
    /// Binds the first of `addrs` that works, with `opts`.
    pub fn bind(addrs: impl ToSocketAddrs, opts: &SocketOptions) -> io::Result<Udp> {
        super::bind_first(addrs, "udp", |addr| Self::bind_one(addr, opts))
    }

    fn bind_one(addr: SocketAddr, opts: &SocketOptions) -> io::Result<Udp> {
        let (socket, target) = super::inet_socket(addr, Type::DGRAM, Protocol::UDP, opts)?;
        socket.bind(&addr.into()).map_err(at("bind", &target))?;
        Udp::from_std_with(socket.into(), opts.max_datagram_size)
    }

    /// Serves an already bound socket. It is made non-blocking.
    pub fn from_std(socket: UdpSocket) -> io::Result<Udp> {
        Udp::from_std_with(socket, SocketOptions::default().max_datagram_size)
    }

    fn from_std_with(socket: UdpSocket, max_datagram_size: usize) -> io::Result<Udp> {
        socket.set_nonblocking(true)?;
        let address = Address::Inet(socket.local_addr()?);
        Ok(Udp {
            socket: Arc::new(DatagramSocket::Udp(socket)),
            address,
            max_datagram_size,
        })
    }

    /// The socket (shared with every request).
    pub fn socket(&self) -> &DatagramSocket {
        &self.socket
    }
}

impl Transport for Udp {
    fn address(&self) -> &Address {
        &self.address
    }
    fn scheme(&self) -> &'static str {
        "udp"
    }
}

impl Source for Udp {
    type Request = DatagramRequest;
    fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
    fn buffer_size(&self) -> usize {
        self.max_datagram_size + 1
    }
    fn next(&self, buf: &mut [u8], shutdown: &ShutdownHandle) -> io::Result<Next<DatagramRequest>> {
        next_datagram(&self.socket, buf, shutdown)
    }
}
