//! [`Conn`]: an accepted stream socket, TCP or Unix, read and written
//! straight (unbuffered). What every layer of a connection (the PROXY
//! header, TLS, the request's buffers) reads from and writes to.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A connected stream socket: TCP or Unix. Reads and writes go straight to
/// the socket (unbuffered); both `Conn` and `&Conn` implement `Read` and
/// `Write`, so another thread can write through a shared reference or a
/// [`Conn::try_clone`].
#[derive(Debug)]
pub enum Conn {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix stream connection.
    Unix(UnixStream),
}

macro_rules! both {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Conn::Tcp($s) => $e,
            Conn::Unix($s) => $e,
        }
    };
}

impl Conn {
    /// A second handle to the same connection (`dup(2)`), e.g. for a writer
    /// thread.
    pub fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    /// Shuts down the read, write or both halves (wakes a blocked reader).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        both!(self, s => s.shutdown(how))
    }

    /// Sets the read timeout (`None` = block forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_new_read_timeout(t)?;
        crate::green::timeout_set(std::os::fd::AsRawFd::as_raw_fd(self), false, t);
        Ok(())
    }

    /// Sets the write timeout (`None` = block forever).
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_new_write_timeout(t)?;
        crate::green::timeout_set(std::os::fd::AsRawFd::as_raw_fd(self), true, t);
        Ok(())
    }

    /// [`set_read_timeout`](Self::set_read_timeout) on a connection no
    /// request has used yet (so no `Green` worker has its timeouts cached).
    pub(crate) fn set_new_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        both!(self, s => s.set_read_timeout(t))
    }

    /// [`set_write_timeout`](Self::set_write_timeout) on a connection no
    /// request has used yet.
    pub(crate) fn set_new_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        both!(self, s => s.set_write_timeout(t))
    }

    /// The TCP stream, if this is one (to set TCP options).
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Tcp(s) => Some(s),
            Conn::Unix(_) => None,
        }
    }
}

impl Read for &Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Under `Green`: wait in the reactor, not in the kernel.
        if crate::green::is_green() {
            return crate::green::read(self, buf);
        }
        both!(*self, s => (&*s).read(buf))
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        if crate::green::is_green() {
            return match bufs.iter_mut().find(|b| !b.is_empty()) {
                Some(buf) => crate::green::read(self, buf),
                None => Ok(0),
            };
        }
        both!(*self, s => (&*s).read_vectored(bufs))
    }
}

impl Write for &Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if crate::green::is_green() {
            return crate::green::write(self, buf);
        }
        both!(*self, s => (&*s).write(buf))
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if crate::green::is_green() {
            let buf = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return crate::green::write(self, buf);
        }
        both!(*self, s => (&*s).write_vectored(bufs))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        both!(self, s => s.as_fd())
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        both!(self, s => s.as_raw_fd())
    }
}
