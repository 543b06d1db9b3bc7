//! UDP driver: one thread's share of the sockets, each connected to the server with one
//! datagram outstanding. A datagram carries its sequence number in its first (up to) 8
//! bytes, then a window of the pattern; a reply is served only if it is the whole
//! datagram just sent. No reply within `udp_timeout`: `lost`, and the next one goes.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::config::{Config, MAX_UDP_SIZE};
use crate::cpu::thread_cpu;
use crate::error::Error;
use crate::payload::Pattern;
use crate::shared::{Publisher, Shared};
use crate::stats::Stats;

/// Pause before sending again after a send or receive error (e.g. ICMP unreachable).
const ERROR_PAUSE: Duration = Duration::from_millis(20);
/// Pause before retrying a send that would block.
const BLOCKED_PAUSE: Duration = Duration::from_millis(1);
/// Longest poll wait (progress publication).
const TICK: Duration = Duration::from_millis(100);
/// Bytes of the sequence-number header.
const HDR: usize = 8;

struct Sock {
    id: usize,
    sock: UdpSocket,
    seq: u64,
    /// When the outstanding datagram was sent.
    t0: Instant,
    /// A datagram is outstanding; its echo is due before `deadline`.
    waiting: bool,
    deadline: Instant,
    /// Not waiting: when to send the next datagram.
    next_send: Instant,
    counted: bool,
}

/// The first `min(8, size)` bytes of datagram `seq`.
fn header(seq: u64, size: usize) -> ([u8; HDR], usize) {
    (seq.to_le_bytes(), size.min(HDR))
}

struct Driver<'a> {
    cfg: &'a Config,
    pat: &'a Pattern,
    sh: &'a Shared,
    socks: Vec<Sock>,
    stats: Stats,
    sbuf: Vec<u8>,
    rbuf: Vec<u8>,
    /// Earliest instant at which some socket has a deadline or a send due.
    next_due: Instant,
}

/// Drives the sockets numbered `ids` until the run ends; returns what they measured.
pub(crate) fn drive(
    cfg: &Config,
    ids: Vec<usize>,
    pat: &Pattern,
    sh: &Shared,
) -> Result<Stats, Error> {
    let cpu0 = thread_cpu();
    let mut poll = Poll::new().map_err(|e| Error::io("creating an epoll instance", e))?;
    let now = Instant::now();
    let mut socks = Vec::with_capacity(ids.len());
    for (k, id) in ids.into_iter().enumerate() {
        let mut sock = UdpSocket::bind(udp_bind_addr(cfg.addr))
            .map_err(|e| Error::io("binding a UDP socket", e))?;
        sock.connect(cfg.addr)
            .map_err(|e| Error::io("connecting a UDP socket", e))?;
        poll.registry()
            .register(&mut sock, Token(k), Interest::READABLE)
            .map_err(|e| Error::io("registering a UDP socket", e))?;
        socks.push(Sock {
            id,
            sock,
            seq: 0,
            t0: now,
            waiting: false,
            deadline: now,
            next_send: now,
            counted: false,
        });
    }
    let mut d = Driver {
        cfg,
        pat,
        sh,
        socks,
        stats: Stats::new(),
        sbuf: vec![0u8; cfg.size],
        // One byte more than the largest datagram, so an oversized reply is seen as such.
        rbuf: vec![0u8; MAX_UDP_SIZE + 1],
        next_due: now,
    };
    d.run(&mut poll)?;
    let mut stats = d.stats;
    stats.cpu = thread_cpu().saturating_sub(cpu0);
    Ok(stats)
}

impl Driver<'_> {
    fn run(&mut self, poll: &mut Poll) -> Result<(), Error> {
        let mut events = Events::with_capacity(1024);
        let mut publisher = Publisher::default();
        let open = self.socks.len() as u64;
        loop {
            let now = Instant::now();
            if self.sh.should_stop(now) {
                break;
            }
            if now >= self.next_due {
                self.scan(now);
            }
            publisher.publish(&self.sh.live, &self.stats, open);
            let wake = self.next_due.min(self.sh.tl.end).min(now + TICK);
            if let Err(e) = poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("epoll_wait", e));
            }
            for ev in &events {
                let k = ev.token().0;
                if k < self.socks.len() {
                    self.drain(k);
                }
            }
        }
        publisher.publish(&self.sh.live, &self.stats, 0);
        Ok(())
    }

    /// Expires overdue datagrams, sends those that are due, and finds the next due time.
    fn scan(&mut self, now: Instant) {
        let mut next = self.sh.tl.end;
        for k in 0..self.socks.len() {
            let s = &mut self.socks[k];
            if s.waiting && now >= s.deadline {
                s.waiting = false;
                s.next_send = now;
                self.stats.lost += 1;
            }
            if !s.waiting && s.next_send <= now {
                self.send(k, now);
            }
            let s = &self.socks[k];
            next = next.min(if s.waiting { s.deadline } else { s.next_send });
        }
        self.next_due = next;
    }

    /// Sends the next datagram on socket `k`.
    fn send(&mut self, k: usize, now: Instant) {
        let size = self.cfg.size;
        let s = &mut self.socks[k];
        let seq = s.seq.wrapping_add(1);
        let (hdr, hl) = header(seq, size);
        self.sbuf.copy_from_slice(self.pat.request(s.id, seq));
        self.sbuf[..hl].copy_from_slice(&hdr[..hl]);
        let when = match s.sock.send(&self.sbuf) {
            Ok(n) if n == size => {
                s.seq = seq;
                s.waiting = true;
                s.t0 = now;
                s.deadline = now + self.cfg.udp_timeout;
                s.deadline
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                s.next_send = now + BLOCKED_PAUSE;
                s.next_send
            }
            // A short send or an error (e.g. refused after an ICMP port unreachable).
            Ok(_) | Err(_) => {
                s.seq = seq;
                self.stats.io_errors += 1;
                s.next_send = now + ERROR_PAUSE;
                s.next_send
            }
        };
        self.next_due = self.next_due.min(when);
    }

    /// Reads every datagram queued on socket `k` (edge-triggered: drain to `WouldBlock`).
    fn drain(&mut self, k: usize) {
        loop {
            let r = self.socks[k].sock.recv(&mut self.rbuf);
            match r {
                Ok(n) => self.on_reply(k, n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    // Pending socket error (ICMP unreachable...); it is cleared by reading it.
                    self.stats.io_errors += 1;
                    let now = Instant::now();
                    let s = &mut self.socks[k];
                    if s.waiting {
                        s.waiting = false;
                        s.next_send = now + ERROR_PAUSE;
                        self.next_due = self.next_due.min(s.next_send);
                    }
                }
            }
        }
    }

    /// Classifies one reply of `n` bytes (in `rbuf`) on socket `k`.
    fn on_reply(&mut self, k: usize, n: usize) {
        let size = self.cfg.size;
        let now = Instant::now();
        let s = &mut self.socks[k];
        let got = &self.rbuf[..n];
        let (hdr, hl) = header(s.seq, size);
        let exact = s.waiting
            && n == size
            && got[..hl] == hdr[..hl]
            && got[hl..] == self.pat.request(s.id, s.seq)[hl..];
        if exact {
            s.waiting = false;
            let tl = self.sh.tl;
            self.stats.served(&tl, s.t0, now, &mut s.counted);
            if !self.sh.should_stop(now) {
                self.send(k, now);
            }
            return;
        }
        // Not the echo we wait for. An echo of an earlier (timed-out) datagram is late;
        // with a header too short to tell (size < 8) anything else is counted late too.
        let earlier = if hl == HDR && n >= HDR {
            let mut b = [0u8; HDR];
            b.copy_from_slice(&got[..HDR]);
            let seq = u64::from_le_bytes(b);
            seq < s.seq || (seq == s.seq && !s.waiting)
        } else {
            hl < HDR
        };
        if earlier {
            self.stats.late += 1;
        } else {
            self.stats.mismatches += 1;
            if s.waiting {
                s.waiting = false;
                s.next_send = now;
                self.next_due = now;
            }
        }
    }
}

/// The local address a UDP socket talking to `target` binds: loopback of the same
/// family (the unspecified IPv6 address for an IPv4-mapped target).
pub(crate) fn udp_bind_addr(target: SocketAddr) -> SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match target.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}
