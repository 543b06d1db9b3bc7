//! Descriptors: adopting an inherited one (socket activation), closing the
//! server's own in a forked child.

use std::io;
use std::os::fd::RawFd;

/// Takes ownership of an inherited descriptor (socket activation), after
/// checking that it is open; marks it close-on-exec.
pub(crate) fn adopt_fd(fd: std::os::fd::RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl(F_GETFD) only queries the descriptor table.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; setting FD_CLOEXEC changes only the descriptor flag.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked above) and, by the socket
    // activation protocol, handed to this process to own; the caller adopts
    // each number once (`activation::listeners` and the pid file's
    // inheritance take theirs once per process).
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Closes `fd` in a forked child (the server's listening and wake-up
/// sockets, which the child must not keep open).
pub(crate) fn close_in_child(fd: RawFd) {
    // SAFETY: only called in a forked child on the server's own descriptors,
    // whose owners (the server's copy in the child's memory) are never
    // dropped: the child leaves through `_exit`. So nothing uses or closes
    // the number again. close only reads its integer argument.
    unsafe {
        libc::close(fd);
    }
}
