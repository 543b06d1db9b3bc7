//! Chat members and peers seen from the client side, and the whole chat
//! sessions the showcase and the tests run against a room.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use socketserver::{Address, Conn};

use super::{fail, now_micros, STEP};
use crate::net::{connect_stream, DatagramClient};

/// A TCP (or Unix stream) chat member, seen from the client side.
#[derive(Debug)]
pub struct Member {
    /// The nickname it joined with (empty before joining).
    pub nick: String,
    conn: Conn,
    reader: BufReader<Conn>,
}

impl Member {
    /// Connects without sending a nickname. Reads wait at most `timeout`.
    pub fn connect(addr: &Address, timeout: Duration) -> io::Result<Member> {
        let conn = connect_stream(addr, timeout)?;
        let reader = BufReader::new(conn.try_clone()?);
        Ok(Member {
            nick: String::new(),
            conn,
            reader,
        })
    }

    /// Connects, sends `nick` and expects the `* welcome` line, which it
    /// returns with the member.
    pub fn join(addr: &Address, nick: &str, timeout: Duration) -> io::Result<(Member, String)> {
        let mut m = Member::connect(addr, timeout)?;
        m.send(nick)?;
        let welcome = m.line()?;
        if !welcome.starts_with("* welcome") {
            return Err(fail(format!("{nick} was not welcomed: {welcome:?}")));
        }
        m.nick = nick.to_owned();
        Ok((m, welcome))
    }

    /// Sends one line (a `\n` is added).
    pub fn send(&self, line: &str) -> io::Result<()> {
        (&self.conn).write_all(format!("{line}\n").as_bytes())
    }

    /// Sends raw bytes.
    pub fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        (&self.conn).write_all(bytes)
    }

    /// The next line, without its `\n`; an error at EOF or after the read
    /// timeout.
    pub fn line(&mut self) -> io::Result<String> {
        let mut buf = Vec::new();
        if self.reader.read_until(b'\n', &mut buf)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: the server closed the connection", self.nick),
            ));
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Reads lines until one satisfies `want` (returned), for at most
    /// `within`; `what` names it in the error.
    pub fn expect(
        &mut self,
        what: &str,
        within: Duration,
        want: impl Fn(&str) -> bool,
    ) -> io::Result<String> {
        let end = Instant::now() + within;
        let mut seen = Vec::new();
        while Instant::now() < end {
            match self.line() {
                Ok(l) if want(&l) => return Ok(l),
                Ok(l) => seen.push(l),
                Err(e) => {
                    return Err(fail(format!(
                        "{}: waiting for {what}: {e}; got {seen:?}",
                        self.nick
                    )))
                }
            }
        }
        Err(fail(format!(
            "{}: no {what} within {within:?}; got {seen:?}",
            self.nick
        )))
    }

    /// Whether the server has closed the connection (reads until EOF,
    /// skipping lines, for at most `within`).
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            match self.line() {
                Ok(_) => {}
                Err(e) => return e.kind() == io::ErrorKind::UnexpectedEof || is_reset(&e),
            }
        }
        false
    }

    /// A second handle to the connection, e.g. for a sending thread.
    pub fn conn(&self) -> io::Result<Conn> {
        self.conn.try_clone()
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

/// A UDP (or Unix datagram) chat peer.
#[derive(Debug)]
pub struct Peer {
    /// The nickname it registered.
    pub nick: String,
    sock: DatagramClient,
}

impl Peer {
    /// Registers with `/nick NAME` and expects `* welcome`.
    pub fn join(addr: &Address, nick: &str, timeout: Duration) -> io::Result<(Peer, String)> {
        let peer = Peer {
            nick: nick.to_owned(),
            sock: DatagramClient::connect(addr, timeout)?,
        };
        peer.send(&format!("/nick {nick}"))?;
        let welcome = peer.recv()?;
        if !welcome.starts_with("* welcome") {
            return Err(fail(format!("{nick} was not welcomed: {welcome:?}")));
        }
        Ok((peer, welcome))
    }

    /// An unregistered peer.
    pub fn anonymous(addr: &Address, timeout: Duration) -> io::Result<Peer> {
        Ok(Peer {
            nick: String::new(),
            sock: DatagramClient::connect(addr, timeout)?,
        })
    }

    /// Sends one message.
    pub fn send(&self, text: &str) -> io::Result<()> {
        self.sock.send(text.as_bytes()).map(drop)
    }

    /// The next datagram, as text (waits at most the timeout).
    pub fn recv(&self) -> io::Result<String> {
        let mut buf = vec![0u8; 65_536];
        let n = self.sock.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// How many lines a talker of [`chat_scenario`] may be ahead of the
/// slowest reader of its lines. A talker sends its next line only once
/// every other talker has read all but `TALK_WINDOW` of its earlier ones,
/// so a reader that stalls for a moment (a loaded machine, a thread not
/// scheduled for 100 ms) has at most 2 x `TALK_WINDOW` = 64 lines waiting
/// for it, in the room's outbox and the socket buffers together: a room
/// whose outbox holds more than that (the demos use 128 or 256) never drops
/// a talker, only a member that does not read at all. Without it, the
/// talkers' 2 lines a millisecond fill a 128-line outbox in 64 ms of a
/// stalled reader, and the room rightly drops it.
pub const TALK_WINDOW: usize = 32;

/// What [`chat_scenario`] does.
#[derive(Debug, Clone)]
pub struct ChatPlan {
    /// Lines each talker sends, at the same time as the others.
    pub messages: usize,
    /// Time between two lines of one talker (zero: as fast as possible),
    /// and never more than [`TALK_WINDOW`] lines ahead of the slowest
    /// reader.
    pub interval: Duration,
    /// Length of each line in bytes (at least 40, at most 4096).
    pub line_len: usize,
    /// Whether a fourth member, `dave`, joins and never reads.
    pub silent_member: bool,
    /// Bound on the whole scenario.
    pub deadline: Duration,
}

impl Default for ChatPlan {
    fn default() -> Self {
        ChatPlan {
            messages: 200,
            interval: Duration::from_millis(1),
            line_len: 100,
            silent_member: true,
            deadline: Duration::from_secs(10),
        }
    }
}

/// What [`chat_scenario`] saw, all checks passed.
#[derive(Debug, Clone)]
pub struct ChatOutcome {
    /// Messages delivered to talkers (each from another talker).
    pub delivered: usize,
    /// The longest time from sending a line to another talker reading it.
    pub max_latency: Duration,
    /// Whether the talkers were told that the silent member was dropped.
    pub silent_dropped: bool,
    /// How long the talking took.
    pub talk_time: Duration,
}

/// A whole TCP chat session against the server at `addr`, checking the
/// chat protocol (`docs/protocols.md`, "Chat") on the way:
///
/// 1. `alice`, `bob` and `carol` join; the earlier ones are told of the
///    later ones (`* NAME joined`);
/// 2. a fourth connection asking for `Alice` is refused with `* ` and
///    not admitted;
/// 3. `/who` lists exactly the three;
/// 4. with `silent_member`, `dave` joins and then never reads;
/// 5. the three talk at once, `messages` lines each, one every
///    `interval` (paced to stay within [`TALK_WINDOW`] lines of the
///    slowest reader); every talker gets
///    every line of the two others, in the order sent, and none of its own;
///    the largest send-to-read delay is measured;
/// 6. `carol` says `/quit`, gets `* bye` and the end of the connection;
///    `alice` and `bob` are told `* carol left`.
///
/// An `Err` says which step failed and what was seen.
pub fn chat_scenario(addr: &Address, plan: &ChatPlan) -> io::Result<ChatOutcome> {
    let step = STEP.min(plan.deadline);
    let (mut alice, _) = Member::join(addr, "alice", step)?;
    let (mut bob, _) = Member::join(addr, "bob", step)?;
    alice.expect("* bob joined", step, |l| l == "* bob joined")?;
    let (mut carol, _) = Member::join(addr, "carol", step)?;
    for m in [&mut alice, &mut bob] {
        m.expect("* carol joined", step, |l| l == "* carol joined")?;
    }
    let mut dup = Member::connect(addr, step)?;
    dup.nick = "(second alice)".into();
    dup.send("Alice")?;
    let refusal = dup.line()?;
    if !refusal.starts_with("* ") || !refusal.contains("taken") {
        return Err(fail(format!("duplicate nick not refused: {refusal:?}")));
    }
    drop(dup);
    alice.send("/who")?;
    let who = alice.expect("the /who answer", step, |l| l.starts_with("* members"))?;
    let mut listed: Vec<&str> = who
        .split_once(": ")
        .map_or(vec![], |(_, names)| names.split(", ").collect());
    listed.sort_unstable();
    if listed != ["alice", "bob", "carol"] {
        return Err(fail(format!(
            "/who: expected alice, bob, carol; got {who:?}"
        )));
    }
    let silent = if plan.silent_member {
        let dave = Member::connect(addr, step)?;
        dave.send("dave")?;
        for m in [&mut alice, &mut bob, &mut carol] {
            m.expect("* dave joined", step, |l| l == "* dave joined")?;
        }
        Some(dave)
    } else {
        None
    };

    let talkers = [alice, bob, carol];
    let nicks: Vec<String> = talkers.iter().map(|m| m.nick.clone()).collect();
    let pace = Pace::new(nicks.len(), plan.deadline);
    let start = Instant::now();
    let results: Vec<io::Result<(Duration, usize, bool, Member)>> = thread::scope(|s| {
        let handles: Vec<_> = talkers
            .into_iter()
            .enumerate()
            .map(|(me, member)| {
                let nicks = &nicks;
                let pace = &pace;
                s.spawn(move || talk(member, me, nicks, plan, pace))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(fail("a talker panicked"))))
            .collect()
    });
    let talk_time = start.elapsed();
    let mut outcome = ChatOutcome {
        delivered: 0,
        max_latency: Duration::ZERO,
        silent_dropped: false,
        talk_time,
    };
    let mut members = Vec::new();
    for r in results {
        let (latency, delivered, dropped, member) = r?;
        outcome.max_latency = outcome.max_latency.max(latency);
        outcome.delivered += delivered;
        outcome.silent_dropped |= dropped;
        members.push(member);
    }
    drop(silent);
    let [mut alice, mut bob, mut carol] =
        <[Member; 3]>::try_from(members).map_err(|_| fail("three talkers expected"))?;
    carol.send("/quit")?;
    carol.expect("* bye", step, |l| l == "* bye")?;
    if !carol.closed_within(step) {
        return Err(fail("carol: the server did not close after /quit"));
    }
    for m in [&mut alice, &mut bob] {
        m.expect("* carol left", step, |l| l == "* carol left")?;
    }
    Ok(outcome)
}

/// Flow control between the talkers of [`chat_scenario`]: how many lines
/// each talker has read from each other one, so that a talker waits before
/// it gets more than [`TALK_WINDOW`] lines ahead of a reader.
struct Pace {
    talkers: usize,
    /// `read[reader * talkers + sender]`: lines `reader` got from `sender`;
    /// `None` once a talker failed (the others stop waiting).
    read: parking_lot::Mutex<Option<Vec<usize>>>,
    changed: parking_lot::Condvar,
    end: Instant,
}

impl Pace {
    fn new(talkers: usize, deadline: Duration) -> Pace {
        Pace {
            talkers,
            read: parking_lot::Mutex::new(Some(vec![0; talkers * talkers])),
            changed: parking_lot::Condvar::new(),
            end: Instant::now() + deadline,
        }
    }

    /// `reader` read one more line from `sender`.
    fn got(&self, reader: usize, sender: usize) {
        if let Some(read) = self.read.lock().as_mut() {
            read[reader * self.talkers + sender] += 1;
        }
        self.changed.notify_all();
    }

    /// A talker failed: nobody waits for it any more.
    fn fail(&self) {
        *self.read.lock() = None;
        self.changed.notify_all();
    }

    /// Waits until every other talker has read all but [`TALK_WINDOW`] of
    /// `sender`'s first `seq` lines (at most until the scenario's deadline).
    fn before_sending(&self, sender: usize, seq: usize) -> io::Result<()> {
        let mut read = self.read.lock();
        loop {
            let Some(counts) = read.as_ref() else {
                return Err(fail("another talker failed"));
            };
            let behind = (0..self.talkers)
                .filter(|&r| r != sender)
                .any(|r| counts[r * self.talkers + sender] + TALK_WINDOW <= seq);
            if !behind {
                return Ok(());
            }
            if self.changed.wait_until(&mut read, self.end).timed_out() {
                return Err(fail(format!(
                    "line {seq}: a reader stayed {TALK_WINDOW} lines behind until the deadline"
                )));
            }
        }
    }
}

/// One talker: sends its lines from a second thread (paced by `pace`)
/// while reading all the others' lines here. Returns the largest delay
/// seen, the number of lines received, and whether `* dave was dropped`
/// was seen.
fn talk(
    mut me: Member,
    my_index: usize,
    nicks: &[String],
    plan: &ChatPlan,
    pace: &Pace,
) -> io::Result<(Duration, usize, bool, Member)> {
    let end = Instant::now() + plan.deadline;
    let sender = me.conn()?;
    let nick = me.nick.clone();
    let pad = "x".repeat(plan.line_len.clamp(40, 4096) - 40);
    let expected = plan.messages * (nicks.len() - 1);
    thread::scope(|s| {
        let writer = s.spawn(|| -> io::Result<()> {
            let start = Instant::now();
            let sent = (0..plan.messages).try_for_each(|seq| {
                let due = start + plan.interval * seq as u32;
                thread::sleep(due.saturating_duration_since(Instant::now()));
                pace.before_sending(my_index, seq)?;
                let line = format!("{seq} {} {pad}\n", now_micros());
                (&sender).write_all(line.as_bytes())
            });
            if sent.is_err() {
                // Nobody waits for lines that will not come.
                pace.fail();
                let _ = sender.shutdown(Shutdown::Both);
            }
            sent
        });
        let mut next: HashMap<&str, usize> = nicks.iter().map(|n| (n.as_str(), 0)).collect();
        let mut got = 0;
        let mut max_latency = Duration::ZERO;
        let mut dropped = false;
        let read = (|| {
            while got < expected {
                if Instant::now() > end {
                    return Err(fail(format!(
                        "{nick}: {got} of {expected} lines within {:?}",
                        plan.deadline
                    )));
                }
                let line = me.line()?;
                if let Some(notice) = line.strip_prefix("* ") {
                    dropped |= notice.starts_with("dave was dropped");
                    continue;
                }
                let (from, rest) = line
                    .split_once(": ")
                    .ok_or_else(|| fail(format!("{nick}: unexpected line {line:?}")))?;
                if from == nick {
                    return Err(fail(format!("{nick}: got its own line back: {line:?}")));
                }
                let mut fields = rest.split(' ');
                let seq: usize = fields
                    .next()
                    .and_then(|f| f.parse().ok())
                    .unwrap_or(usize::MAX);
                let sent: u64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
                let from_index = nicks
                    .iter()
                    .position(|n| n == from)
                    .ok_or_else(|| fail(format!("{nick}: line from a stranger: {line:?}")))?;
                let want = next
                    .get_mut(from)
                    .ok_or_else(|| fail(format!("{nick}: line from a stranger: {line:?}")))?;
                if seq != *want {
                    return Err(fail(format!(
                        "{nick}: from {from} expected line {want}, got {line:.60}"
                    )));
                }
                *want += 1;
                got += 1;
                pace.got(my_index, from_index);
                let latency = Duration::from_micros(now_micros().saturating_sub(sent));
                max_latency = max_latency.max(latency);
            }
            Ok(())
        })();
        if read.is_err() {
            pace.fail();
            let _ = sender.shutdown(Shutdown::Both);
        }
        let written = writer.join().map_err(|_| fail("a sender panicked"))?;
        match (read, written) {
            (Ok(()), Ok(())) => Ok((max_latency, got, dropped)),
            (Err(r), Ok(())) => Err(r),
            (Ok(()), Err(w)) => Err(fail(format!("{nick}: sending: {w}"))),
            // Whichever failed first made the other fail: say both.
            (Err(r), Err(w)) => Err(fail(format!("{r}; {nick}: sending: {w}"))),
        }
    })
    .map(|(l, g, d)| (l, g, d, me))
}

/// What [`udp_chat_scenario`] saw.
#[derive(Debug, Clone)]
pub struct UdpOutcome {
    /// Messages relayed to peers.
    pub delivered: usize,
}

/// A UDP chat session against `addr`: an unregistered sender gets the
/// `/nick` hint; `ann`, `ben` and `cat` register; each sends `messages`
/// messages, one after another (taking turns, so that loopback buffers
/// never overflow); every peer gets every message of the two others and
/// none of its own; with `ordered`, in the order sent (true when the server
/// handles datagrams one at a time); `/who` lists the three; `/quit` is
/// answered with `* bye` and announced.
pub fn udp_chat_scenario(addr: &Address, messages: usize, ordered: bool) -> io::Result<UdpOutcome> {
    let step = STEP;
    let stranger = Peer::anonymous(addr, step)?;
    stranger.send("hello?")?;
    let hint = stranger.recv()?;
    if !hint.contains("/nick") {
        return Err(fail(format!(
            "unregistered sender got {hint:?}, not the /nick hint"
        )));
    }
    let mut peers = Vec::new();
    for nick in ["ann", "ben", "cat"] {
        let (p, _) = Peer::join(addr, nick, step)?;
        for earlier in &peers {
            expect_datagram(earlier, &format!("* {nick} joined"))?;
        }
        peers.push(p);
    }
    peers[0].send("/who")?;
    expect_datagram(&peers[0], "* peers (3): ann, ben, cat")?;
    let mut delivered = 0;
    for seq in 0..messages {
        for (i, p) in peers.iter().enumerate() {
            p.send(&format!("message {seq}"))?;
            for (j, q) in peers.iter().enumerate() {
                if i != j {
                    let want = format!("{}: message {seq}", p.nick);
                    if ordered {
                        expect_datagram(q, &want)?;
                    } else {
                        let got = q.recv()?;
                        if !got.starts_with(&format!("{}: message ", p.nick)) {
                            return Err(fail(format!(
                                "{}: expected {want:?}, got {got:?}",
                                q.nick
                            )));
                        }
                    }
                    delivered += 1;
                }
            }
        }
    }
    peers[2].send("/quit")?;
    expect_datagram(&peers[2], "* bye")?;
    expect_datagram(&peers[0], "* cat left")?;
    expect_datagram(&peers[1], "* cat left")?;
    Ok(UdpOutcome { delivered })
}

fn expect_datagram(p: &Peer, want: &str) -> io::Result<()> {
    let got = p
        .recv()
        .map_err(|e| fail(format!("{}: waiting for {want:?}: {e}", p.nick)))?;
    if got != want {
        return Err(fail(format!("{}: expected {want:?}, got {got:?}", p.nick)));
    }
    Ok(())
}
