//! Noticing peers that vanish: TCP keepalive and `TCP_USER_TIMEOUT` on
//! accepted connections.
//!
//! A client whose machine loses power, or whose link is cut, sends nothing:
//! no FIN, no reset. Without help its server-side connection waits for the
//! read timeout (10 minutes by default), holding a thread, a pool worker or a
//! process. Keepalive probes an idle connection after
//! [`Keepalive::idle`] of silence, every [`Keepalive::interval`], and ends it
//! after [`Keepalive::count`] unanswered probes: with the defaults (15 s,
//! 5 s, 3), a vanished idle peer is noticed within about 30 s. The user
//! timeout bounds how long sent data may stay unacknowledged (a peer that
//! vanished while the server was writing to it).
//!
//! A connection ended this way fails its next read or write with
//! `ETIMEDOUT` (or `EHOSTUNREACH` when the network said so): counted in
//! [`Stats::peer_gone`](crate::Stats::peer_gone) and logged at info level,
//! at most once a second.
//!
//! On Linux, once `TCP_USER_TIMEOUT` is set it also replaces the probe
//! count as the keepalive limit: an idle connection ends when probes have
//! gone unanswered for the user timeout. That is why the
//! [`Builder`](crate::Builder)'s default user timeout is the write timeout
//! capped at the keepalive's [`Keepalive::time_to_notice`].

use std::io;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// TCP keepalive settings of accepted connections (`SO_KEEPALIVE`,
/// `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`); see
/// [`Builder::keepalive`](crate::Builder::keepalive).
///
/// ```
/// use socketserver::transport::Keepalive;
/// use std::time::Duration;
///
/// let keepalive = Keepalive::default().idle(Duration::from_secs(60));
/// assert_eq!(keepalive.time_to_notice(), Duration::from_secs(75));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    idle: Duration,
    interval: Duration,
    count: u32,
}

/// Default silence before the first keepalive probe: 15 s.
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
/// Default time between keepalive probes: 5 s.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Default unanswered probes that end a connection: 3.
pub const DEFAULT_KEEPALIVE_COUNT: u32 = 3;

impl Default for Keepalive {
    /// 15 s idle, probes every 5 s, 3 probes: a vanished peer is noticed
    /// within about 30 s.
    fn default() -> Self {
        Keepalive {
            idle: DEFAULT_KEEPALIVE_IDLE,
            interval: DEFAULT_KEEPALIVE_INTERVAL,
            count: DEFAULT_KEEPALIVE_COUNT,
        }
    }
}

impl Keepalive {
    /// Silence before the first probe (`TCP_KEEPIDLE`, at least 1 s).
    #[must_use]
    pub fn idle(mut self, idle: Duration) -> Self {
        self.idle = idle.max(Duration::from_secs(1));
        self
    }

    /// Time between probes (`TCP_KEEPINTVL`, at least 1 s).
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_secs(1));
        self
    }

    /// Unanswered probes that end the connection (`TCP_KEEPCNT`, at least
    /// 1).
    #[must_use]
    pub fn count(mut self, count: u32) -> Self {
        self.count = count.max(1);
        self
    }

    /// The silence before the first probe.
    #[must_use]
    pub fn idle_time(&self) -> Duration {
        self.idle
    }

    /// The time between probes.
    #[must_use]
    pub fn interval_time(&self) -> Duration {
        self.interval
    }

    /// The number of unanswered probes that end a connection.
    #[must_use]
    pub fn probe_count(&self) -> u32 {
        self.count
    }

    /// How long after its last sign of life a vanished idle peer is
    /// noticed: `idle + interval × count`.
    #[must_use]
    pub fn time_to_notice(&self) -> Duration {
        self.idle
            .saturating_add(self.interval.saturating_mul(self.count))
    }

    fn to_socket2(self) -> socket2::TcpKeepalive {
        socket2::TcpKeepalive::new()
            .with_time(self.idle)
            .with_interval(self.interval)
            .with_retries(self.count)
    }
}

/// What an accepted TCP connection is given, taken from
/// [`SocketOptions`](super::SocketOptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AcceptOptions {
    pub(crate) nodelay: bool,
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) user_timeout: Option<Duration>,
}

impl AcceptOptions {
    pub(crate) fn from(opts: &super::SocketOptions) -> AcceptOptions {
        AcceptOptions {
            nodelay: opts.nodelay,
            keepalive: opts.keepalive,
            user_timeout: opts.user_timeout,
        }
    }

    /// Sets the options on a just accepted connection. A failure (the
    /// connection was reset meanwhile) is returned for a debug log: the
    /// handler notices a broken connection itself.
    pub(crate) fn apply(&self, stream: &TcpStream) -> io::Result<()> {
        self.set(&socket2::SockRef::from(stream))
    }

    /// Sets the options on the listening socket: Linux gives the
    /// connections it accepts the listener's `TCP_NODELAY`, keepalive and
    /// `TCP_USER_TIMEOUT`, so that they need no system call of their own
    /// (six per connection with the defaults, as many as the rest of a
    /// short request's). Whether they did is checked on the first one
    /// accepted ([`present_on`](Self::present_on)).
    pub(crate) fn apply_to_listener(&self, listener: &TcpListener) -> io::Result<()> {
        self.set(&socket2::SockRef::from(listener))
    }

    /// Whether `stream` has every option already (from its listener).
    /// Any doubt (an option that cannot be read back) is a no.
    pub(crate) fn present_on(&self, stream: &TcpStream) -> bool {
        let socket = socket2::SockRef::from(stream);
        let check = || -> io::Result<bool> {
            if self.nodelay && !socket.nodelay()? {
                return Ok(false);
            }
            if let Some(k) = self.keepalive {
                if !socket.keepalive()?
                    || socket.keepalive_time()? != k.idle_time()
                    || socket.keepalive_interval()? != k.interval_time()
                    || socket.keepalive_retries()? != k.probe_count()
                {
                    return Ok(false);
                }
            }
            if let Some(t) = self.user_timeout {
                if socket.tcp_user_timeout()? != Some(t) {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        check().unwrap_or(false)
    }

    fn set(&self, socket: &socket2::SockRef<'_>) -> io::Result<()> {
        if self.nodelay {
            socket.set_nodelay(true)?;
        }
        if let Some(keepalive) = self.keepalive {
            socket.set_tcp_keepalive(&keepalive.to_socket2())?;
        }
        if let Some(timeout) = self.user_timeout {
            socket.set_tcp_user_timeout(Some(timeout))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_clamped_to_what_the_kernel_takes() {
        let k = Keepalive::default()
            .idle(Duration::ZERO)
            .interval(Duration::from_millis(10))
            .count(0);
        assert_eq!(
            (k.idle_time(), k.interval_time(), k.probe_count()),
            (Duration::from_secs(1), Duration::from_secs(1), 1)
        );
        assert_eq!(k.time_to_notice(), Duration::from_secs(2));
        assert_eq!(
            Keepalive::default().time_to_notice(),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn the_default_user_timeout_is_the_write_timeout_capped_at_the_keepalive() {
        use super::super::default_user_timeout;
        let k = Some(Keepalive::default());
        let s = Duration::from_secs;
        assert_eq!(default_user_timeout(Some(s(60)), k), Some(s(30)));
        assert_eq!(default_user_timeout(Some(s(10)), k), Some(s(10)));
        assert_eq!(default_user_timeout(Some(s(60)), None), Some(s(60)));
        assert_eq!(default_user_timeout(None, k), None);
    }
}
