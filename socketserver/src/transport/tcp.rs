use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

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
    /// Whether accepted connections get `accept` from the listening socket
    /// (`INHERIT_*`): not known before the first one is checked.
    inherit: AtomicU8,
}

/// Not known yet: the first connection accepted is checked.
const INHERIT_UNKNOWN: u8 = 0;
/// Accepted connections have the options from the listening socket.
const INHERIT_YES: u8 = 1;
/// Each accepted connection is given the options itself.
const INHERIT_NO: u8 = 2;

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
        let tcp = Tcp {
            listener,
            address,
            accept: AcceptOptions::from(opts),
            default_options: true,
            owned: false,
            handed_over: AtomicBool::new(false),
            inherit: AtomicU8::new(INHERIT_UNKNOWN),
        };
        tcp.options_on_listener();
        Ok(tcp)
    }

    /// Sets the accept options on the listening socket, for the
    /// connections to inherit (checked on the first one accepted); where
    /// that fails, each connection is given them. A listening socket
    /// shared with another process (the new one of a zero-downtime
    /// upgrade) carries the options that process set last: connections
    /// this one still accepts meanwhile get those.
    fn options_on_listener(&self) {
        let state = match self.accept.apply_to_listener(&self.listener) {
            Ok(()) => INHERIT_UNKNOWN,
            Err(e) => {
                log::debug!(
                    "{}: cannot set TCP options on the listening socket ({e}); setting them \
                     on each connection",
                    self.address
                );
                INHERIT_NO
            }
        };
        self.inherit.store(state, Ordering::Relaxed);
    }

    /// Whether `stream`, just accepted, still needs its options set.
    fn needs_options(&self, stream: &std::net::TcpStream) -> bool {
        match self.inherit.load(Ordering::Relaxed) {
            INHERIT_YES => false,
            INHERIT_NO => true,
            _ => {
                let inherited = self.accept.present_on(stream);
                let state = if inherited { INHERIT_YES } else { INHERIT_NO };
                self.inherit.store(state, Ordering::Relaxed);
                !inherited
            }
        }
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
                if self.needs_options(&stream) {
                    if let Err(e) = self.accept.apply(&stream) {
                        log::debug!("{peer}: cannot set the connection's TCP options: {e}");
                    }
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
            self.options_on_listener();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Keepalive;
    use std::time::Duration;

    /// Connections accepted from a listener with the options set get them
    /// from it (Linux), with no call of their own; what they get is what
    /// was asked.
    #[test]
    fn accepted_connections_inherit_the_listener_s_options() {
        let opts = SocketOptions {
            keepalive: Some(Keepalive::default().idle(Duration::from_secs(20))),
            user_timeout: Some(Duration::from_millis(12_500)),
            ..SocketOptions::default()
        };
        let tcp = Tcp::bind("127.0.0.1:0", &opts).expect("bind");
        let addr = tcp.listener().local_addr().expect("address");
        for _ in 0..2 {
            let _client = std::net::TcpStream::connect(addr).expect("connect");
            let (stream, _) = accept_blocking(&tcp);
            assert!(!tcp.needs_options(&stream), "inherited");
            assert_eq!(tcp.inherit.load(Ordering::Relaxed), INHERIT_YES);
            let s = socket2::SockRef::from(&stream);
            assert!(s.nodelay().expect("nodelay"));
            assert!(s.keepalive().expect("keepalive"));
            assert_eq!(s.keepalive_time().expect("idle"), Duration::from_secs(20));
            assert_eq!(
                s.tcp_user_timeout().expect("user timeout"),
                Some(Duration::from_millis(12_500))
            );
        }
    }

    /// A connection that lacks the options (here: the listener's were
    /// turned off behind the transport's back) makes the transport set
    /// them on each connection from then on.
    #[test]
    fn a_connection_without_the_options_gets_them_set() {
        let tcp = Tcp::bind("127.0.0.1:0", &SocketOptions::default()).expect("bind");
        // Undo what the transport set on the listener.
        let l = socket2::SockRef::from(tcp.listener());
        l.set_nodelay(false).expect("nodelay off");
        l.set_keepalive(false).expect("keepalive off");
        let addr = tcp.listener().local_addr().expect("address");
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        let (stream, _) = accept_blocking(&tcp);
        assert!(
            tcp.needs_options(&stream),
            "not inherited: set per connection"
        );
        assert_eq!(tcp.inherit.load(Ordering::Relaxed), INHERIT_NO);
        tcp.accept.apply(&stream).expect("apply");
        assert!(tcp.accept.present_on(&stream));
    }

    fn accept_blocking(tcp: &Tcp) -> (std::net::TcpStream, SocketAddr) {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tcp.listener().accept() {
                Ok(pair) => return pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < end, "no connection to accept");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
}
