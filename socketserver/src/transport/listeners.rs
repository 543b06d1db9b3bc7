//! [`Listeners`]: one stream server on several listening sockets (TCP and
//! Unix stream, each with TLS or not), served by one loop, one handler,
//! one registry of connections and one graceful drain.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{url_of, Next, SocketOptions, Source, Tcp, Transport, Unix};
use crate::sys::Epoll;
use crate::{Address, ShutdownHandle, StreamRequest};

/// One listening socket of a [`Listeners`] set: TCP or Unix stream.
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamListener {
    /// A TCP listener.
    Tcp(Tcp),
    /// A Unix stream listener.
    Unix(Unix),
}

impl From<Tcp> for StreamListener {
    fn from(t: Tcp) -> Self {
        StreamListener::Tcp(t)
    }
}

impl From<Unix> for StreamListener {
    fn from(u: Unix) -> Self {
        StreamListener::Unix(u)
    }
}

impl StreamListener {
    fn source(&self) -> &dyn Source<Request = StreamRequest> {
        match self {
            StreamListener::Tcp(t) => t,
            StreamListener::Unix(u) => u,
        }
    }

    fn source_mut(&mut self) -> &mut dyn Source<Request = StreamRequest> {
        match self {
            StreamListener::Tcp(t) => t,
            StreamListener::Unix(u) => u,
        }
    }

    /// The address it is bound to.
    pub fn address(&self) -> &Address {
        match self {
            StreamListener::Tcp(t) => t.address(),
            StreamListener::Unix(u) => u.address(),
        }
    }

    /// `tcp` or `unix`.
    pub fn scheme(&self) -> &'static str {
        match self {
            StreamListener::Tcp(t) => t.scheme(),
            StreamListener::Unix(u) => u.scheme(),
        }
    }

    /// `SCHEME://ADDR`.
    pub fn url(&self) -> String {
        url_of(self.scheme(), self.address())
    }
}

/// What TLS one listener of a [`Listeners`] set speaks (feature `tls`).
#[cfg(feature = "tls")]
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum ListenerTls {
    /// As the server: [`Builder::tls`](crate::Builder::tls) if set, plain
    /// otherwise (the default).
    #[default]
    Server,
    /// Plain, whatever `Builder::tls` says (e.g. a loopback or Unix socket
    /// beside a public TLS port).
    Plain,
    /// TLS with this configuration, whatever `Builder::tls` says.
    Config(std::sync::Arc<crate::tls::ServerConfig>),
}

#[derive(Debug)]
struct Entry {
    listener: StreamListener,
    #[cfg(feature = "tls")]
    tls: ListenerTls,
}

/// Several listening stream sockets served as one server: TCP (IPv4, IPv6)
/// and Unix stream, in any mix, each with TLS or not. One loop, one
/// handler, one [`Stats`](crate::Stats) and one set of metrics, one
/// admission (allow and deny lists, `max_connections`, `max_per_ip` count
/// a client's connections over every listener), one graceful drain (every
/// listener stops at once; Unix socket files are removed) and one upgrade
/// (every socket is handed to the new process, in order). What Perl's
/// `Net::Server` calls one server on several ports.
///
/// The server loop waits on one descriptor, an epoll instance holding
/// every listener, so every strategy serves it as it serves one socket
/// (`PreFork` children inherit it). Connections are taken round-robin: a
/// listener flooded with connections does not starve the others.
/// [`StreamRequest::listener`](crate::StreamRequest::listener) says which
/// listener (its index here) took a connection.
///
/// ```
/// use socketserver::transport::{Listeners, SocketOptions, Tcp, Unix};
/// use socketserver::{Server, StreamRequest, Threading, Transport};
/// use std::io::{Read, Write};
///
/// let dir = std::env::temp_dir().join(format!("listeners-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let options = SocketOptions::default();
/// let mut listeners = Listeners::new()?;
/// listeners.push(Tcp::bind("127.0.0.1:0", &options)?)?;
/// listeners.push(Tcp::bind("[::1]:0", &options)?)?;
/// listeners.push(Unix::bind(dir.join("echo.sock"), &options)?)?;
/// let urls = listeners.urls();
/// let server = Server::builder()
///     .strategy(Threading::new())
///     .build(listeners, |r: &mut StreamRequest| r.echo().map(drop))?;
/// assert_eq!(server.urls(), urls);
/// let v4 = server.transport().addresses()[0].as_inet().unwrap();
/// let stop = server.shutdown_handle();
/// let running = std::thread::spawn(move || server.serve_forever());
///
/// let mut client = std::net::TcpStream::connect(v4)?;
/// client.write_all(b"hi")?;
/// let mut reply = [0; 2];
/// client.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"hi");
/// let mut unix = std::os::unix::net::UnixStream::connect(dir.join("echo.sock"))?;
/// unix.write_all(b"ho")?;
/// unix.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"ho");
///
/// stop.shutdown();
/// running.join().unwrap()?; // the server closes: echo.sock is removed
/// assert!(!dir.join("echo.sock").exists());
/// # std::fs::remove_dir(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Listeners {
    entries: Vec<Entry>,
    epoll: Epoll,
    /// The listener the next accept tries first.
    cursor: AtomicUsize,
}

/// The address of an empty set.
static NO_ADDRESS: Address = Address::Unix(None);

impl Listeners {
    /// An empty set; add listeners with [`push`](Self::push). A server is
    /// not built on an empty set.
    pub fn new() -> io::Result<Listeners> {
        Ok(Listeners {
            entries: Vec::new(),
            epoll: Epoll::new().map_err(|e| {
                io::Error::new(e.kind(), format!("epoll_create1 for a listener set: {e}"))
            })?,
            cursor: AtomicUsize::new(0),
        })
    }

    /// A set of `listeners`, in order (each speaks TLS as the server does).
    pub fn from_listeners(
        listeners: impl IntoIterator<Item = StreamListener>,
    ) -> io::Result<Listeners> {
        let mut set = Listeners::new()?;
        for l in listeners {
            set.push(l)?;
        }
        Ok(set)
    }

    /// Adds `listener` (it speaks TLS if the server's
    /// `Builder::tls` is set, feature `tls`); returns its index,
    /// what [`StreamRequest::listener`](crate::StreamRequest::listener)
    /// says of its connections.
    pub fn push(&mut self, listener: impl Into<StreamListener>) -> io::Result<usize> {
        let listener = listener.into();
        let index = self.entries.len();
        let fd = listener.source().fd();
        if let Err(e) = self.epoll.add_readable(fd, index as u64) {
            let url = listener.url();
            return Err(io::Error::new(
                e.kind(),
                format!("adding {url} to a listener set (epoll_ctl): {e}"),
            ));
        }
        self.entries.push(Entry {
            listener,
            #[cfg(feature = "tls")]
            tls: ListenerTls::Server,
        });
        Ok(index)
    }

    /// Adds `listener` speaking TLS as `tls` says, whatever
    /// [`Builder::tls`](crate::Builder::tls) says (feature `tls`): e.g.
    /// [`ListenerTls::Plain`] for a loopback socket beside a public TLS
    /// one. Returns its index.
    ///
    /// ```
    /// use socketserver::transport::{ListenerTls, Listeners, SocketOptions, Tcp};
    ///
    /// let options = SocketOptions::default();
    /// let mut listeners = Listeners::new()?;
    /// listeners.push(Tcp::bind("127.0.0.1:0", &options)?)?; // TLS, from Builder::tls
    /// listeners.push_with_tls(Tcp::bind("127.0.0.1:0", &options)?, ListenerTls::Plain)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[cfg(feature = "tls")]
    pub fn push_with_tls(
        &mut self,
        listener: impl Into<StreamListener>,
        tls: ListenerTls,
    ) -> io::Result<usize> {
        let index = self.push(listener)?;
        self.entries[index].tls = tls;
        Ok(index)
    }

    /// The listeners, in order.
    pub fn listeners(&self) -> impl ExactSizeIterator<Item = &StreamListener> {
        self.entries.iter().map(|e| &e.listener)
    }

    /// How many listeners there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The address of every listener, in order (real ports when bound to
    /// port 0).
    pub fn addresses(&self) -> Vec<&Address> {
        self.listeners().map(StreamListener::address).collect()
    }

    /// What each listener speaks (feature `tls`), in order.
    #[cfg(feature = "tls")]
    pub(crate) fn tls_choices(&self) -> Vec<ListenerTls> {
        self.entries.iter().map(|e| e.tls.clone()).collect()
    }
}

impl Transport for Listeners {
    /// The first listener's address.
    fn address(&self) -> &Address {
        self.entries
            .first()
            .map_or(&NO_ADDRESS, |e| e.listener.address())
    }

    /// The first listener's scheme (see [`urls`](Transport::urls) for all).
    fn scheme(&self) -> &'static str {
        self.entries.first().map_or("tcp", |e| e.listener.scheme())
    }

    fn urls(&self) -> Vec<String> {
        self.listeners().map(StreamListener::url).collect()
    }
}

impl Source for Listeners {
    type Request = StreamRequest;

    fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }

    fn buffer_size(&self) -> usize {
        0
    }

    /// One connection from the listeners, round-robin: starts at the one
    /// after the last that gave a connection (or an error), and moves on
    /// past each that would block. `Empty` once every one would.
    fn next(&self, buf: &mut [u8], shutdown: &ShutdownHandle) -> io::Result<Next<StreamRequest>> {
        let n = self.entries.len();
        if n == 0 {
            return Ok(Next::Empty);
        }
        let start = self.cursor.load(Ordering::Relaxed) % n;
        for step in 0..n {
            let index = (start + step) % n;
            let taken = self.entries[index].listener.source().next(buf, shutdown);
            match taken {
                Ok(Next::Empty) => {}
                Ok(Next::Request(mut req)) => {
                    self.cursor.store(index + 1, Ordering::Relaxed);
                    req.set_listener(index);
                    return Ok(Next::Request(req));
                }
                other => {
                    // An error or a rejection: the next call starts with
                    // the next listener, so one failing socket does not
                    // hold up the others.
                    self.cursor.store(index + 1, Ordering::Relaxed);
                    return other;
                }
            }
        }
        Ok(Next::Empty)
    }

    fn cleanup(&mut self) {
        for e in &mut self.entries {
            e.listener.source_mut().cleanup();
        }
    }

    fn stop_listening(&self) {
        for e in &self.entries {
            e.listener.source().stop_listening();
        }
    }

    fn hand_over(&self) {
        for e in &self.entries {
            e.listener.source().hand_over();
        }
    }

    fn adopt_options(&mut self, opts: &SocketOptions) {
        for e in &mut self.entries {
            e.listener.source_mut().adopt_options(opts);
        }
    }

    fn listening_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.listeners().map(|l| l.source().fd()).collect()
    }

    fn own_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.epoll.as_raw_fd()];
        fds.extend(self.listening_fds().iter().map(AsRawFd::as_raw_fd));
        fds
    }

    fn check(&self) -> io::Result<()> {
        if self.entries.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a server on Listeners needs at least one listener: the set is empty",
            ));
        }
        Ok(())
    }

    #[cfg(feature = "tls")]
    fn listener_tls(&self) -> Vec<ListenerTls> {
        self.tls_choices()
    }
}
