//! Socket calls the standard library does not offer on a raw descriptor:
//! sending and receiving without waiting, and `shutdown(2)`.

use std::io;
use std::os::fd::RawFd;

/// Sends `data` on a connected socket without waiting (`MSG_DONTWAIT`):
/// what does not fit in the socket buffer now is not sent.
pub(crate) fn send_nowait(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of its length for the whole call;
    // the caller owns the open socket `fd`. MSG_NOSIGNAL: a closed peer is
    // an error, not SIGPIPE.
    let n = unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Receives from a connected socket without waiting (`MSG_DONTWAIT`):
/// `WouldBlock` when nothing is there yet. The socket itself stays as it is
/// (blocking, for other users of it). Used by the `Green` strategy.
#[cfg(feature = "green")]
pub(crate) fn recv_nowait(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length for the whole call;
    // the caller holds the socket open (it borrows the connection).
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `shutdown(2)` on a descriptor the caller guarantees is an open socket
/// (the connection registry holds its lock while the socket is alive).
pub(crate) fn shutdown_socket(fd: std::os::fd::RawFd, how: std::net::Shutdown) {
    let how = match how {
        std::net::Shutdown::Read => libc::SHUT_RD,
        std::net::Shutdown::Write => libc::SHUT_WR,
        std::net::Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: shutdown only reads its integer arguments. The caller keeps
    // `fd` open for the duration of the call (see `Registry::cut_all`), so it
    // cannot name an unrelated, reused descriptor. Errors (ENOTCONN for a
    // peer that already left) are of no interest.
    unsafe {
        libc::shutdown(fd, how);
    }
}
