//! TCP driver: one thread's share of the connections, driven by one mio `Poll` (epoll,
//! edge-triggered), for the ping-pong and connect-echo-close modes.
//!
//! A connection goes `Waiting -> Connecting -> Busy` and, in ping-pong, `Busy -> Parked`
//! after its first echo until all connections are up (or half the warmup has passed).
//! Any failure (refused connect, reset, early EOF, wrong bytes) closes it, counts one
//! error and puts it back to `Waiting` with a backoff.
//!
//! With TLS ([`Config::tls`]) each connection has a rustls client session: requests are
//! written into it (it holds them until the handshake is done), its records are written
//! to and read from the socket on the same edges, and the echo is read from the
//! decrypted stream. In connect mode a connection says `close_notify` before closing.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use rustls::ClientConnection;

use crate::config::Config;
use crate::cpu::thread_cpu;
use crate::error::Error;
use crate::mode::Mode;
use crate::payload::Pattern;
use crate::shared::{Publisher, Shared};
use crate::stats::Stats;

/// First reconnect delay after a failure; doubles per consecutive failure.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// A connection that holds a ramp slot this long without its first echo gives the slot
/// back (it stays open and waiting), so one unserved connection cannot stall the ramp.
const SLOT_TIMEOUT: Duration = Duration::from_secs(1);
/// Poll tick while something is waiting on other threads (ramp slots, the release).
const TICK_FAST: Duration = Duration::from_millis(2);
/// Longest poll wait otherwise (progress publication).
const TICK_SLOW: Duration = Duration::from_millis(100);
/// Read buffer per thread.
const RBUF: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not connected: queued for a connect or backing off.
    Waiting,
    /// Non-blocking connect in progress.
    Connecting,
    /// A request is being written and/or its echo read.
    Busy,
    /// Ping-pong: first echo done, waiting for all connections to be up.
    Parked,
}

#[derive(Clone, Copy)]
enum Failure {
    Connect,
    Io,
    Mismatch,
}

struct Conn {
    /// Run-wide connection number (selects the payloads).
    id: usize,
    stream: Option<TcpStream>,
    /// The TLS session on `stream`, when the run speaks TLS.
    tls: Option<ClientConnection>,
    state: State,
    /// Request number on this connection.
    seq: u64,
    written: usize,
    read: usize,
    /// When the current request (or, in connect mode, the connect) started.
    t0: Instant,
    /// Consecutive failures (for the backoff).
    fails: u32,
    /// Holds a ramp slot, taken at this instant.
    slot: Option<Instant>,
    /// Has had its first echo (counted once in the shared `ready`).
    ready: bool,
    /// Counted as active in the window.
    counted: bool,
}

struct Driver<'a> {
    cfg: &'a Config,
    pat: &'a Pattern,
    sh: &'a Shared,
    poll: Poll,
    conns: Vec<Conn>,
    /// Connections waiting for a connect (in ping-pong, for a ramp slot).
    queue: VecDeque<usize>,
    /// Connections backing off: (when to queue again, index).
    retry: Vec<(Instant, usize)>,
    /// Ramp slots in the order they were taken: (taken at, index).
    slots: VecDeque<(Instant, usize)>,
    parked: Vec<usize>,
    released: bool,
    connected: u64,
    stats: Stats,
    rbuf: Vec<u8>,
}

/// Drives the connections numbered `ids` until the run ends; returns what they measured.
pub(crate) fn drive(
    cfg: &Config,
    ids: Vec<usize>,
    pat: &Pattern,
    sh: &Shared,
) -> Result<Stats, Error> {
    let cpu0 = thread_cpu();
    let now = Instant::now();
    let poll = Poll::new().map_err(|e| Error::io("creating an epoll instance", e))?;
    let conns: Vec<Conn> = ids
        .into_iter()
        .map(|id| Conn {
            id,
            stream: None,
            tls: None,
            state: State::Waiting,
            seq: 0,
            written: 0,
            read: 0,
            t0: now,
            fails: 0,
            slot: None,
            ready: false,
            counted: false,
        })
        .collect();
    let mut d = Driver {
        cfg,
        pat,
        sh,
        poll,
        queue: (0..conns.len()).collect(),
        conns,
        retry: Vec::new(),
        slots: VecDeque::new(),
        parked: Vec::new(),
        released: false,
        connected: 0,
        stats: Stats::new(),
        rbuf: vec![0u8; RBUF],
    };
    d.run()?;
    let mut stats = d.stats;
    // Dropping the driver closes every socket.
    stats.cpu = thread_cpu().saturating_sub(cpu0);
    Ok(stats)
}

impl Driver<'_> {
    fn run(&mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(1024);
        let mut publisher = Publisher::default();
        loop {
            let now = Instant::now();
            if self.sh.should_stop(now) {
                break;
            }
            if !self.released && self.sh.check_released(now) {
                self.release(now);
            }
            self.housekeeping(now);
            publisher.publish(&self.sh.live, &self.stats, self.connected);

            let timeout = self.next_wake(now).saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("epoll_wait", e));
            }
            for ev in &events {
                let i = ev.token().0;
                if i < self.conns.len() {
                    self.on_event(i);
                }
            }
        }
        publisher.publish(&self.sh.live, &self.stats, 0);
        Ok(())
    }

    /// Backoffs that expired, ramp slots held too long, and new connects.
    fn housekeeping(&mut self, now: Instant) {
        if !self.retry.is_empty() {
            let mut k = 0;
            while k < self.retry.len() {
                if self.retry[k].0 <= now {
                    let (_, i) = self.retry.swap_remove(k);
                    self.queue.push_back(i);
                } else {
                    k += 1;
                }
            }
        }
        while let Some(&(taken, i)) = self.slots.front() {
            if self.conns[i].slot != Some(taken) {
                self.slots.pop_front(); // already given back
            } else if now.saturating_duration_since(taken) >= SLOT_TIMEOUT {
                self.slots.pop_front();
                self.give_slot(i);
            } else {
                break;
            }
        }
        while let Some(&i) = self.queue.front() {
            if self.cfg.mode == Mode::PingPong {
                if !self.sh.try_take_slot() {
                    break;
                }
                self.conns[i].slot = Some(now);
                self.slots.push_back((now, i));
            }
            self.queue.pop_front();
            self.open(i, now);
        }
    }

    /// When the loop must look around again at the latest.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = self.sh.tl.end.min(now + TICK_SLOW);
        if !self.released || !self.queue.is_empty() {
            wake = wake.min(now + TICK_FAST);
        }
        for &(at, _) in &self.retry {
            wake = wake.min(at);
        }
        if let Some(&(taken, _)) = self.slots.front() {
            wake = wake.min(taken + SLOT_TIMEOUT);
        }
        wake
    }

    fn give_slot(&mut self, i: usize) {
        if self.conns[i].slot.take().is_some() {
            self.sh.give_slot();
        }
    }

    /// Lets the parked connections start their closed loops.
    fn release(&mut self, now: Instant) {
        self.released = true;
        for i in std::mem::take(&mut self.parked) {
            if self.conns[i].state == State::Parked {
                self.start_request(i, now);
                self.pump(i);
            }
        }
    }

    /// Starts a non-blocking connect.
    fn open(&mut self, i: usize, now: Instant) {
        let Ok(mut stream) = TcpStream::connect(self.cfg.addr) else {
            return self.fail(i, Failure::Connect);
        };
        // Best effort: a socket that refuses TCP_NODELAY still works, only slower.
        let _ = stream.set_nodelay(true);
        if self
            .poll
            .registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            return self.fail(i, Failure::Connect);
        }
        let tls = match &self.cfg.tls {
            Some(client) => match client.connect() {
                Ok(session) => Some(session),
                Err(_) => return self.fail(i, Failure::Connect),
            },
            None => None,
        };
        let c = &mut self.conns[i];
        c.stream = Some(stream);
        c.tls = tls;
        c.state = State::Connecting;
        c.t0 = now;
    }

    fn on_event(&mut self, i: usize) {
        match self.conns[i].state {
            State::Waiting | State::Parked => {}
            State::Connecting => self.on_connecting(i),
            State::Busy => self.pump(i),
        }
    }

    /// A connecting socket became ready: connected, failed, or a spurious wake-up.
    fn on_connecting(&mut self, i: usize) {
        let Some(s) = self.conns[i].stream.as_ref() else {
            return;
        };
        match s.take_error() {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return self.fail(i, Failure::Connect),
        }
        match s.peer_addr() {
            Ok(_) => {}
            Err(e)
                if e.kind() == ErrorKind::NotConnected
                    || e.raw_os_error() == Some(Errno::EINPROGRESS as i32) =>
            {
                return; // not yet
            }
            Err(_) => return self.fail(i, Failure::Connect),
        }
        self.connected += 1;
        let now = Instant::now();
        // Connect mode: the latency includes the connect, so t0 stays.
        let t0 = match self.cfg.mode {
            Mode::Connect => self.conns[i].t0,
            _ => now,
        };
        self.start_request(i, t0);
        self.pump(i);
    }

    fn start_request(&mut self, i: usize, t0: Instant) {
        let c = &mut self.conns[i];
        c.state = State::Busy;
        c.seq = c.seq.wrapping_add(1);
        c.written = 0;
        c.read = 0;
        c.t0 = t0;
    }

    /// Writes what is left of the request, then reads what has come back.
    fn pump(&mut self, i: usize) {
        if self.write_some(i) {
            self.read_some(i);
        }
    }

    /// Returns false if the connection failed.
    fn write_some(&mut self, i: usize) -> bool {
        if self.conns[i].tls.is_some() {
            return self.write_tls(i);
        }
        let size = self.cfg.size;
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_mut() else {
            return false;
        };
        let payload = self.pat.request(c.id, c.seq);
        while c.written < size {
            match stream.write(&payload[c.written..]) {
                Ok(0) => {
                    self.fail(i, Failure::Io);
                    return false;
                }
                Ok(n) => c.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.fail(i, Failure::Io);
                    return false;
                }
            }
        }
        true
    }

    /// TLS: hands what is left of the request to the session, then writes its records
    /// until the socket would block or nothing is pending. Returns false if the
    /// connection failed.
    fn write_tls(&mut self, i: usize) -> bool {
        let size = self.cfg.size;
        // Bounded: each round either moves request bytes into the session or flushes
        // records; a session that takes nothing more and has nothing to send ends it.
        for _ in 0..1_000 {
            let c = &mut self.conns[i];
            let (Some(stream), Some(tls)) = (c.stream.as_mut(), c.tls.as_mut()) else {
                return false;
            };
            let mut took = 0;
            if c.written < size {
                let payload = self.pat.request(c.id, c.seq);
                match tls.writer().write(&payload[c.written..]) {
                    Ok(n) => took = n,
                    Err(_) => {
                        self.fail(i, Failure::Io);
                        return false;
                    }
                }
                c.written += took;
            }
            while tls.wants_write() {
                match tls.write_tls(stream) {
                    Ok(0) => {
                        self.fail(i, Failure::Io);
                        return false;
                    }
                    Ok(_) => {}
                    // The rest goes on the next writable edge.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.fail(i, Failure::Io);
                        return false;
                    }
                }
            }
            if c.written == size || took == 0 {
                return true;
            }
        }
        true
    }

    /// TLS: reads records until the socket is drained or the echo is complete,
    /// answering the handshake (and sending held request bytes) as it goes.
    fn read_tls(&mut self, i: usize) {
        let size = self.cfg.size;
        loop {
            let c = &mut self.conns[i];
            let (Some(stream), Some(tls)) = (c.stream.as_mut(), c.tls.as_mut()) else {
                return;
            };
            let want = (size - c.read).min(self.rbuf.len());
            match tls.reader().read(&mut self.rbuf[..want]) {
                Ok(0) => return self.fail(i, Failure::Io), // close_notify before the echo
                Ok(n) => {
                    let expected = &self.pat.request(c.id, c.seq)[c.read..];
                    if c.read + n > c.written || self.rbuf[..n] != expected[..n] {
                        return self.fail(i, Failure::Mismatch);
                    }
                    c.read += n;
                    if c.read == size {
                        return self.complete(i);
                    }
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {} // records needed
                Err(_) => return self.fail(i, Failure::Io),
            }
            match tls.read_tls(stream) {
                Ok(0) => return self.fail(i, Failure::Io), // EOF before the whole echo
                Ok(_) => {
                    if tls.process_new_packets().is_err() {
                        // Best effort: tell the server why (the alert is queued).
                        let _ = tls.write_tls(stream);
                        return self.fail(i, Failure::Io);
                    }
                    if !self.write_tls(i) {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i, Failure::Io),
            }
        }
    }

    /// Reads until the socket is drained or the echo is complete.
    fn read_some(&mut self, i: usize) {
        if self.conns[i].tls.is_some() {
            return self.read_tls(i);
        }
        let size = self.cfg.size;
        loop {
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            let want = (size - c.read).min(self.rbuf.len());
            match stream.read(&mut self.rbuf[..want]) {
                Ok(0) => return self.fail(i, Failure::Io), // EOF before the whole echo
                Ok(n) => {
                    // An echo can hold only bytes already sent, and exactly those.
                    let expected = &self.pat.request(c.id, c.seq)[c.read..];
                    if c.read + n > c.written || self.rbuf[..n] != expected[..n] {
                        return self.fail(i, Failure::Mismatch);
                    }
                    c.read += n;
                    if c.read == size {
                        return self.complete(i);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i, Failure::Io),
            }
        }
    }

    /// The whole echo is in and correct.
    fn complete(&mut self, i: usize) {
        let now = Instant::now();
        let tl = self.sh.tl;
        let c = &mut self.conns[i];
        self.stats.served(&tl, c.t0, now, &mut c.counted);
        c.fails = 0;
        if !c.ready {
            c.ready = true;
            self.sh.mark_ready();
        }
        self.give_slot(i);
        match self.cfg.mode {
            Mode::Connect => {
                self.say_goodbye(i);
                self.close(i);
                if !self.sh.should_stop(now) {
                    self.open(i, now);
                }
            }
            Mode::PingPong | Mode::Udp => {
                if self.released || self.sh.check_released(now) {
                    // Next request at once; its echo arrives as a new edge.
                    self.start_request(i, now);
                    self.write_some(i);
                } else {
                    self.conns[i].state = State::Parked;
                    self.parked.push(i);
                }
            }
        }
    }

    /// TLS: sends `close_notify` (best effort, one write) before a clean close.
    fn say_goodbye(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if let (Some(stream), Some(tls)) = (c.stream.as_mut(), c.tls.as_mut()) {
            tls.send_close_notify();
            let _ = tls.write_tls(stream);
        }
    }

    /// Closes the connection (if open) without counting anything.
    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        c.tls = None;
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
            if c.state != State::Connecting {
                self.connected = self.connected.saturating_sub(1);
            }
        }
        c.state = State::Waiting;
    }

    /// Counts a failure, closes the connection and schedules a reconnect with backoff.
    fn fail(&mut self, i: usize, f: Failure) {
        match f {
            Failure::Connect => self.stats.connect_errors += 1,
            Failure::Io => self.stats.io_errors += 1,
            Failure::Mismatch => self.stats.mismatches += 1,
        }
        self.give_slot(i);
        self.close(i);
        let c = &mut self.conns[i];
        let backoff = BACKOFF_MIN
            .saturating_mul(1u32 << c.fails.min(6))
            .min(BACKOFF_MAX);
        c.fails = c.fails.saturating_add(1);
        self.retry.push((Instant::now() + backoff, i));
    }
}
