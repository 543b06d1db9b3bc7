//! Waiting for descriptors: `poll(2)` on a socket and a wake-up descriptor,
//! for writability, or a look without waiting.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

/// Which of the descriptors passed to [`poll`] are ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ready {
    /// The first descriptor (the socket) is readable or has an error.
    pub(crate) socket: bool,
    /// The second descriptor (the wake-up socket) is readable.
    pub(crate) wake: bool,
}

fn poll_timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        // Round up so that a 0.4 ms timeout does not become a busy loop.
        Some(d) => d
            .as_nanos()
            .div_ceil(1_000_000)
            .min(libc::c_int::MAX as u128) as libc::c_int,
    }
}

/// Waits until `socket` is readable or `wake` is readable, or `timeout` passes
/// (`None` = no timeout). `EINTR` is reported as an empty [`Ready`]. `wake`
/// is a raw number: polling a closed descriptor is harmless (`POLLNVAL`,
/// reported as readable).
pub(crate) fn poll_read(
    socket: Option<BorrowedFd<'_>>,
    wake: RawFd,
    timeout: Option<Duration>,
) -> io::Result<Ready> {
    let mut fds = [
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            // A negative fd is ignored by poll(2).
            fd: socket.map_or(-1, |s| s.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a valid, initialised array of two pollfd structs that
    // lives for the whole call; the length passed matches the array.
    let n = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            poll_timeout_ms(timeout),
        )
    };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(Ready::default());
        }
        return Err(err);
    }
    let hit = |p: &libc::pollfd| {
        p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
    };
    Ok(Ready {
        wake: hit(&fds[0]),
        socket: hit(&fds[1]),
    })
}

/// Waits until `fd` is writable (or has an error), at most `timeout`.
/// Returns `false` on timeout.
pub(crate) fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid pollfd that outlives the call.
        let n = unsafe { libc::poll(&mut pfd, 1, poll_timeout_ms(Some(timeout))) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Whether `fd` is readable right now (data, end-of-file or an error
/// waiting), without blocking.
pub(crate) fn readable_now(fd: BorrowedFd<'_>) -> bool {
    poll_read(Some(fd), -1, Some(Duration::ZERO)).is_ok_and(|r| r.socket)
}
