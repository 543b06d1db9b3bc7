//! An epoll instance used as one pollable descriptor for several listening
//! sockets: readable (to `poll(2)`, to another epoll, to a forked child that
//! inherits it) whenever one of the sockets in it is readable.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// An epoll descriptor (close-on-exec), level-triggered interest in
/// readability of each descriptor added to it.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// A new, empty instance.
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes only a flag; the result is checked
        // below before it is used as a descriptor.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1, is open, and is
        // owned by nothing else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for readability (level-triggered), reporting `token`.
    /// The caller keeps `fd` open as long as this instance is used: closing
    /// it (every copy, in every process) removes it from the interest list.
    pub(crate) fn add_readable(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open (one owned here, one borrowed
        // for the call); `event` is a valid epoll_event that outlives the
        // call, which only reads it.
        let r = unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &raw mut event,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[test]
    fn an_epoll_is_readable_when_one_of_its_descriptors_is() {
        let epoll = Epoll::new().unwrap();
        let (a, mut a_writer) = std::os::unix::net::UnixStream::pair().unwrap();
        let (b, _b_writer) = std::os::unix::net::UnixStream::pair().unwrap();
        epoll.add_readable(a.as_fd(), 0).unwrap();
        epoll.add_readable(b.as_fd(), 1).unwrap();
        let quiet = super::super::poll_read(Some(epoll.as_fd()), -1, Some(Duration::ZERO));
        assert!(!quiet.unwrap().socket);
        a_writer.write_all(b"x").unwrap();
        let ready = super::super::poll_read(Some(epoll.as_fd()), -1, Some(Duration::from_secs(5)));
        assert!(ready.unwrap().socket);
        assert!(epoll.add_readable(a.as_fd(), 2).is_err(), "added twice");
    }
}
