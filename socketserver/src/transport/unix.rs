use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use socket2::{Domain, SockAddr, Socket, Type};

use super::{next_datagram, Next, SocketOptions, Source, Transport};
use crate::error::at;
use crate::{Address, Conn, DatagramRequest, DatagramSocket, ShutdownHandle, StreamRequest};

/// The socket file a server created, removed when the server closes (if it
/// is still the same file: a newer server's socket at the same path is left
/// alone).
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
    /// The socket was handed over to a successor process: the file is
    /// theirs now.
    handed_over: AtomicBool,
}

impl SocketFile {
    fn new(path: &Path) -> SocketFile {
        let id = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        SocketFile {
            path: path.to_path_buf(),
            id,
            handed_over: AtomicBool::new(false),
        }
    }

    fn remove(&mut self) {
        if self.handed_over.load(Ordering::SeqCst) {
            return;
        }
        if let Some(id) = self.id.take() {
            let same = std::fs::symlink_metadata(&self.path)
                .map(|m| (m.dev(), m.ino()) == id)
                .unwrap_or(false);
            if same {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log::warn!("cannot remove socket file {}: {e}", self.path.display());
                }
            }
        }
    }
}

/// Creates a Unix socket of type `ty` bound to `path`; returns it with the
/// address as text for error messages.
fn bind_unix(path: &Path, ty: Type, scheme: &str) -> io::Result<(Socket, String)> {
    let target = format!("{scheme}://{}", path.display());
    let socket = Socket::new(Domain::UNIX, ty, None).map_err(at("socket", &target))?;
    let addr = SockAddr::unix(path).map_err(at("bind", &target))?;
    socket.bind(&addr).map_err(at("bind", &target))?;
    Ok((socket, target))
}

/// A listening Unix stream socket. The socket file is removed when the
/// server closes.
#[derive(Debug)]
pub struct Unix {
    listener: UnixListener,
    address: Address,
    file: SocketFile,
}

impl Unix {
    /// Binds `path` and listens with `opts.backlog`. Fails with `AddrInUse`
    /// if the path exists (remove a stale socket file first).
    pub fn bind(path: impl AsRef<Path>, opts: &SocketOptions) -> io::Result<Unix> {
        let path = path.as_ref();
        let (socket, target) = bind_unix(path, Type::STREAM, "unix")?;
        let file = SocketFile::new(path);
        let mut unix = Unix {
            listener: UnixListener::from(socket),
            address: Address::Unix(Some(path.to_path_buf())),
            file,
        };
        // From here on, `unix` removes the file on error.
        let socket = socket2::SockRef::from(&unix.listener);
        let ready = socket
            .listen(opts.backlog)
            .map_err(at("listen", &target))
            .and_then(|()| {
                unix.listener
                    .set_nonblocking(true)
                    .map_err(at("set_nonblocking", &target))
            });
        if let Err(e) = ready {
            unix.cleanup();
            return Err(e);
        }
        Ok(unix)
    }

    /// Serves an already listening socket (its file is not removed on
    /// close: whoever made it owns it). It is made non-blocking.
    pub fn from_std(listener: UnixListener) -> io::Result<Unix> {
        listener.set_nonblocking(true)?;
        let path = listener.local_addr()?.as_pathname().map(Path::to_path_buf);
        Ok(Unix {
            listener,
            file: SocketFile {
                path: path.clone().unwrap_or_default(),
                id: None,
                handed_over: AtomicBool::new(false),
            },
            address: Address::Unix(path),
        })
    }
}

impl Transport for Unix {
    fn address(&self) -> &Address {
        &self.address
    }
    fn scheme(&self) -> &'static str {
        "unix"
    }
}

impl Source for Unix {
    type Request = StreamRequest;
    fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
    fn buffer_size(&self) -> usize {
        0
    }
    fn next(&self, _buf: &mut [u8], shutdown: &ShutdownHandle) -> io::Result<Next<StreamRequest>> {
        match self.listener.accept() {
            Ok((stream, peer)) => Ok(Next::Request(StreamRequest::new(
                Conn::Unix(stream),
                Address::from(&peer),
                shutdown.clone(),
            ))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Next::Empty),
            Err(e) => Err(e),
        }
    }
    fn cleanup(&mut self) {
        self.file.remove()
    }
    fn stop_listening(&self) {
        if self.file.id.is_some() && !self.file.handed_over.load(Ordering::SeqCst) {
            // Bound here: refuse new clients (ECONNREFUSED on Linux).
            use std::os::fd::AsRawFd;
            crate::sys::shutdown_socket(self.listener.as_raw_fd(), std::net::Shutdown::Read);
        }
    }
    fn hand_over(&self) {
        self.file.handed_over.store(true, Ordering::SeqCst);
    }
}

/// A bound Unix datagram socket. The socket file is removed when the server
/// closes. To get replies, clients must bind a path of their own.
#[derive(Debug)]
pub struct Unixgram {
    socket: Arc<DatagramSocket>,
    address: Address,
    file: SocketFile,
    max_datagram_size: usize,
}

impl Unixgram {
    /// Binds `path`. Fails with `AddrInUse` if the path exists.
    pub fn bind(path: impl AsRef<Path>, opts: &SocketOptions) -> io::Result<Unixgram> {
        let path = path.as_ref();
        let (socket, target) = bind_unix(path, Type::DGRAM, "unixgram")?;
        let mut file = SocketFile::new(path);
        if let Err(e) = socket.set_nonblocking(true) {
            file.remove();
            return Err(at("set_nonblocking", &target)(e));
        }
        Ok(Unixgram {
            socket: Arc::new(DatagramSocket::Unix(UnixDatagram::from(socket))),
            address: Address::Unix(Some(path.to_path_buf())),
            file,
            max_datagram_size: opts.max_datagram_size,
        })
    }

    /// Serves an already bound socket (its file is not removed on close).
    pub fn from_std(socket: UnixDatagram) -> io::Result<Unixgram> {
        socket.set_nonblocking(true)?;
        let path = socket.local_addr()?.as_pathname().map(Path::to_path_buf);
        Ok(Unixgram {
            socket: Arc::new(DatagramSocket::Unix(socket)),
            file: SocketFile {
                path: path.clone().unwrap_or_default(),
                id: None,
                handed_over: AtomicBool::new(false),
            },
            address: Address::Unix(path),
            max_datagram_size: SocketOptions::default().max_datagram_size,
        })
    }

    /// The socket (shared with every request).
    pub fn socket(&self) -> &DatagramSocket {
        &self.socket
    }
}

impl Transport for Unixgram {
    fn address(&self) -> &Address {
        &self.address
    }
    fn scheme(&self) -> &'static str {
        "unixgram"
    }
}

impl Source for Unixgram {
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
    fn cleanup(&mut self) {
        self.file.remove()
    }
    fn hand_over(&self) {
        self.file.handed_over.store(true, Ordering::SeqCst);
    }
}
