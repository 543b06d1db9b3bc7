use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Protocol, Type};

use super::{AcceptOptions, Next, SocketOptions, Source, Transport};
use crate::error::at;
use crate::{Address, Conn, ShutdownHandle, StreamRequest};

/// A listening TCP socket (IPv4 or IPv6).
#[derive(Debug)]
pub struct Tcp {
    listener: TcpListener,
    address: Address,
    /// What every accepted connection is given (`TCP_NODELAY`, keepalive,
    /// `TCP_USER_TIMEOUT`).
    accept: AcceptOptions,
    /// Made by `from_std`, without options: takes the `Builder`'s.
    default_options: bool,
    /// Bound here (not inherited): closing it to new clients is ours to do.
    owned: bool,
    /// Handed over to a successor process: left listening on close.
    handed_over: AtomicBool,
}

impl Tcp {
    /// Binds and listens on the first of `addrs` that works, with `opts`.
    /// Errors name the operation and address, e.g.
    /// `bind tcp://127.0.0.1:80: Permission denied`.
    pub fn bind(addrs: impl ToSocketAddrs, opts: &SocketOptions) -> io::Result<Tcp> {
        super::bind_first(addrs, "tcp", |addr| Self::bind_one(addr, opts))
    }

    fn bind_one(addr: SocketAddr, opts: &SocketOptions) -> io::Result<Tcp> {
        let (socket, target) = super::inet_socket(addr, Type::STREAM, Protocol::TCP, opts)?;
        socket.bind(&addr.into()).map_err(at("bind", &target))?;
        socket.listen(opts.backlog).map_err(at("listen", &target))?;
        socket
            .set_nonblocking(true)
            .map_err(at("set_nonblocking", &target))?;
        let mut tcp = Tcp::from_std_with(socket.into(), opts)?;
        tcp.owned = true;
        tcp.default_options = false;
        Ok(tcp)
    }

    /// Serves an already listening socket (e.g. inherited from a parent
    /// process or systemd). It is made non-blocking. Accepted connections
    /// get the options of the [`Builder`](crate::Builder) that serves it
    /// (`nodelay`, `keepalive`, `user_timeout`), or the defaults.
    pub fn from_std(listener: TcpListener) -> io::Result<Tcp> {
        Tcp::from_std_with(listener, &SocketOptions::default())
    }

    fn from_std_with(listener: TcpListener, opts: &SocketOptions) -> io::Result<Tcp> {
        listener.set_nonblocking(true)?;
        let address = Address::Inet(listener.local_addr()?);
        Ok(Tcp {
            listener,
            address,
            accept: AcceptOptions::from(opts),
            default_options: true,
            owned: false,
            handed_over: AtomicBool::new(false),
        })
    }

    /// The listening socket.
    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }
}

impl Transport for Tcp {
    fn address(&self) -> &Address {
        &self.address
    }
    fn scheme(&self) -> &'static str {
        "tcp"
    }
}

impl Source for Tcp {
    type Request = StreamRequest;
    fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
    fn buffer_size(&self) -> usize {
        0
    }
    fn next(&self, _buf: &mut [u8], shutdown: &ShutdownHandle) -> io::Result<Next<StreamRequest>> {
        match self.listener.accept() {
            Ok((stream, peer)) => {
                // Best effort: a connection reset already is noticed by
                // the handler.
                if let Err(e) = self.accept.apply(&stream) {
                    log::debug!("{peer}: cannot set the connection's TCP options: {e}");
                }
                Ok(Next::Request(StreamRequest::new(
                    Conn::Tcp(stream),
                    Address::Inet(peer),
                    shutdown.clone(),
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Next::Empty),
            Err(e) => Err(e),
        }
    }
    fn stop_listening(&self) {
        if self.owned && !self.handed_over.load(Ordering::SeqCst) {
            // On Linux, SHUT_RD on a listening socket closes it to new
            // clients (refused) and resets those queued but not accepted.
            use std::os::fd::AsRawFd;
            crate::sys::shutdown_socket(self.listener.as_raw_fd(), std::net::Shutdown::Read);
        }
    }
    fn hand_over(&self) {
        self.handed_over.store(true, Ordering::SeqCst);
    }
    fn adopt_options(&mut self, opts: &SocketOptions) {
        if self.default_options {
            self.accept = AcceptOptions::from(opts);
        }
    }
}
