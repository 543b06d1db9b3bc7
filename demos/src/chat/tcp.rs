//! The TCP chat room: one [`Room`] value shared by every connection.
//!
//! Each member's connection is served by the server's strategy (a thread,
//! a pool worker, or a green coroutine) that reads the member's lines; what
//! the member receives goes through a bounded outbox drained by a writer of
//! its own, started with `socketserver::green::spawn`: a companion
//! coroutine on the member's worker under `Green` (a room of thousands of
//! members runs on the workers' few threads), a thread elsewhere.
//! Broadcasting only `try_send`s into outboxes and rings the writer's
//! doorbell (a byte on a socket pair, which the writer waits on as it would
//! on its connection), under one lock, so every member sees messages in
//! the same order and a slow or stuck member never blocks the room: when
//! its outbox is full, it is dropped.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use parking_lot::Mutex;
use socketserver::green::{self, JoinHandle};
use socketserver::{Address, Conn, StreamHandler, StreamRequest};

use super::{check_nick, read_line_capped, Line, MAX_LINE};
use crate::text::skeleton;

/// What members are told when the server stops.
const CLOSING: &str = "* server is shutting down";

/// Settings of a [`Room`].
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// Longest line accepted, in bytes (default [`MAX_LINE`]).
    pub max_line: usize,
    /// Lines that may wait for one member before it is dropped as too slow
    /// (default 256).
    pub outbox: usize,
    /// Nicknames a connection may try before it is closed (default 5).
    pub nick_attempts: usize,
    /// How long a leaving member's writer may take to send what is still
    /// queued for it before the connection is cut (default 2 s).
    pub linger: Duration,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            max_line: MAX_LINE,
            outbox: 256,
            nick_attempts: 5,
            linger: Duration::from_secs(2),
        }
    }
}

/// A chat room: the [`StreamHandler`] of the chat server. Cloning gives
/// another handle to the same room (for [`close`](Room::close) after the
/// server stops).
#[derive(Debug, Clone, Default)]
pub struct Room {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    config: RoomConfig,
    state: Mutex<State>,
    next_id: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Every connection being served, joined or not (to cut them on close).
    conns: HashMap<u64, Conn>,
    /// The members, in the order they joined.
    members: BTreeMap<u64, Member>,
    closing: bool,
}

#[derive(Debug)]
struct Member {
    nick: String,
    /// What the nickname looks like ([`skeleton`]), to tell lookalikes.
    look: String,
    peer: Address,
    outbox: Outbox,
}

/// A member's outbox: a bounded queue, and the doorbell its writer waits
/// on. When every copy is gone the queue is closed and the doorbell reads
/// end-of-file: the writer sends what is left and ends.
#[derive(Debug, Clone)]
struct Outbox {
    queue: Sender<Arc<str>>,
    bell: Arc<UnixStream>,
}

impl Outbox {
    /// Queues `msg` without blocking and rings the doorbell.
    fn try_send(&self, msg: Arc<str>) -> Result<(), TrySendError<Arc<str>>> {
        self.queue.try_send(msg)?;
        // Non-blocking: a full doorbell already holds a ring.
        let _ = (&*self.bell).write(&[1]);
        Ok(())
    }
}

impl StreamHandler for Room {
    fn handle_error(&self, peer: &socketserver::Address, error: &socketserver::RequestError) {
        crate::logging::log_client_error("chat", peer, error);
    }

    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let peer = req.peer_addr().clone();
        log::info!("chat: {peer} connected");
        let Some(registered) = self.register(req)? else {
            return Ok(());
        };
        let Some(me) = self.join(req, registered.id)? else {
            log::info!("chat: {peer} left without joining");
            return Ok(());
        };
        log::info!("chat: {peer} joined as {}", me.nick);
        let max = self.inner.config.max_line;
        loop {
            // One line is one message: a member waiting between lines is
            // idle (a graceful close ends it at once), and a line must come
            // whole within the server's message deadline.
            match req.read_message(|r| read_line_capped(r, max))? {
                Line::Eof => break,
                Line::TooLong => me.tell(&format!(
                    "* line too long (over {} bytes), not sent",
                    self.inner.config.max_line
                )),
                Line::Text(text) => match text.trim_end() {
                    "" => {}
                    "/quit" => {
                        me.tell("* bye");
                        break;
                    }
                    "/who" => me.tell(&self.who()),
                    cmd if cmd.starts_with('/') => {
                        me.tell(&format!("* unknown command {cmd}; try /who or /quit"))
                    }
                    _ => self.broadcast(Some(me.id), &format!("{}: {text}", me.nick)),
                },
            }
        }
        Ok(())
    }
}

impl Room {
    /// An empty room.
    pub fn new(config: RoomConfig) -> Room {
        Room {
            inner: Arc::new(Inner {
                config,
                ..Inner::default()
            }),
        }
    }

    /// The nicknames of the members, in the order they joined.
    pub fn members(&self) -> Vec<String> {
        let state = self.inner.state.lock();
        state.members.values().map(|m| m.nick.clone()).collect()
    }

    /// How many members were dropped because their outbox overflowed.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Closes the room (for server shutdown): tells every member
    /// `* server is shutting down`, refuses new members, and shuts down the
    /// read side of every connection so that each handler sees the end of
    /// its input, lets its writer send what is queued, and returns.
    pub fn close(&self) {
        let mut state = self.inner.state.lock();
        state.closing = true;
        self.deliver(&mut state, None, CLOSING);
        for conn in state.conns.values() {
            let _ = conn.shutdown(Shutdown::Read);
        }
    }

    /// `* members (N): a, b, c`.
    fn who(&self) -> String {
        let names = self.members();
        format!("* members ({}): {}", names.len(), names.join(", "))
    }

    /// Sends `line` to every member but `except`.
    fn broadcast(&self, except: Option<u64>, line: &str) {
        let mut state = self.inner.state.lock();
        self.deliver(&mut state, except, line);
    }

    /// Queues `line` for every member but `except`, without blocking; drops
    /// members whose outbox is full.
    fn deliver(&self, state: &mut State, except: Option<u64>, line: &str) {
        let msg: Arc<str> = format!("{line}\n").into();
        let full: Vec<u64> = state
            .members
            .iter()
            .filter(|&(&id, _)| Some(id) != except)
            .filter(|(_, m)| matches!(m.outbox.try_send(msg.clone()), Err(TrySendError::Full(_))))
            .map(|(&id, _)| id)
            .collect();
        for id in full {
            self.drop_member(state, id);
        }
    }

    /// Removes a member that does not read: its connection is shut down
    /// (which ends its handler and its writer) and the others are told.
    fn drop_member(&self, state: &mut State, id: u64) {
        let Some(m) = state.members.remove(&id) else {
            return;
        };
        log::warn!(
            "chat: dropping {} ({}): {} lines are waiting for it, it is not reading",
            m.nick,
            m.peer,
            self.inner.config.outbox
        );
        self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(conn) = state.conns.get(&id) {
            let _ = conn.shutdown(Shutdown::Both);
        }
        self.deliver(
            state,
            None,
            &format!("* {} was dropped (not reading)", m.nick),
        );
    }

    /// Records the connection (so that `close` can reach it); refuses it
    /// if the room is closing. The guard forgets it again.
    fn register(&self, req: &mut StreamRequest) -> io::Result<Option<Registered<'_>>> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = req.stream().try_clone()?;
        let mut state = self.inner.state.lock();
        if state.closing {
            drop(state);
            writeln!(req, "{CLOSING}")?;
            return Ok(None);
        }
        state.conns.insert(id, conn);
        Ok(Some(Registered { room: self, id }))
    }

    /// Reads nicknames until one is accepted, then makes the connection a
    /// member with its own outbox and writer. `None`: the peer left or gave
    /// up.
    fn join(&self, req: &mut StreamRequest, id: u64) -> io::Result<Option<Membership<'_>>> {
        for _ in 0..self.inner.config.nick_attempts {
            let max = self.inner.config.max_line;
            let problem = match req.read_message(|r| read_line_capped(r, max))? {
                Line::Eof => return Ok(None),
                Line::TooLong => "nickname too long".to_owned(),
                Line::Text(nick) => {
                    let nick = nick.trim();
                    match check_nick(nick) {
                        Ok(()) => match self.add_member(id, nick, req) {
                            Ok(me) => return Ok(Some(me)),
                            Err(why) if why == CLOSING => {
                                writeln!(req, "{CLOSING}")?;
                                return Ok(None);
                            }
                            Err(why) => why,
                        },
                        Err(why) => why,
                    }
                }
            };
            writeln!(req, "* {problem}; send another nickname")?;
        }
        writeln!(req, "* too many attempts, goodbye")?;
        Ok(None)
    }

    fn add_member(
        &self,
        id: u64,
        nick: &str,
        req: &StreamRequest,
    ) -> Result<Membership<'_>, String> {
        let (queue, queued) = crossbeam_channel::bounded(self.inner.config.outbox.max(2));
        let (bell, doorbell) = UnixStream::pair().map_err(|e| e.to_string())?;
        bell.set_nonblocking(true).map_err(|e| e.to_string())?;
        let outbox = Outbox {
            queue,
            bell: Arc::new(bell),
        };
        let doorbell = Conn::Unix(doorbell);
        let conn = req.stream().try_clone().map_err(|e| e.to_string())?;
        let mut state = self.inner.state.lock();
        if state.closing {
            return Err(CLOSING.into());
        }
        let look = skeleton(nick);
        if let Some(m) = state.members.values().find(|m| m.look == look) {
            return Err(format!("nickname {} is taken", m.nick));
        }
        let writer = green::spawn(move || write_loop(&conn, &queued, &doorbell));
        let mut names: Vec<&str> = state.members.values().map(|m| m.nick.as_str()).collect();
        names.push(nick);
        let welcome = format!(
            "* welcome {nick}; online: {} (/who lists members, /quit leaves)\n",
            names.join(", ")
        );
        let _ = outbox.try_send(welcome.into());
        self.deliver(&mut state, None, &format!("* {nick} joined"));
        let member = Member {
            nick: nick.to_owned(),
            look,
            peer: req.peer_addr().clone(),
            outbox: outbox.clone(),
        };
        state.members.insert(id, member);
        Ok(Membership {
            room: self,
            id,
            nick: nick.to_owned(),
            outbox: Some(outbox),
            writer: Some(writer),
        })
    }
}

/// Writes what is queued for one member, in batches, waiting on its
/// doorbell in between, until the outbox is closed (then it sends what is
/// left) or the connection fails (then it shuts it down, which ends the
/// member's handler too).
fn write_loop(conn: &Conn, queued: &Receiver<Arc<str>>, doorbell: &Conn) {
    let mut out = io::BufWriter::with_capacity(16 * 1024, conn);
    let mut rings = [0u8; 256];
    loop {
        let mut result = Ok(());
        let mut closed = false;
        while result.is_ok() {
            match queued.try_recv() {
                Ok(msg) => result = out.write_all(msg.as_bytes()),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if let Err(e) = result.and_then(|()| out.flush()) {
            log::debug!("chat: writing to a member: {e}");
            let _ = conn.shutdown(Shutdown::Both);
            return;
        }
        if closed {
            return;
        }
        match (&*doorbell).read(&mut rings) {
            // A ring, or every bell gone (end-of-file): look at the queue.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("chat: a member's doorbell: {e}");
                return;
            }
        }
    }
}

/// A registered connection; unregisters on drop.
struct Registered<'a> {
    room: &'a Room,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.room.inner.state.lock().conns.remove(&self.id);
    }
}

/// A member, from joining to leaving: leaving (on drop, however the
/// handler ends) removes it, tells the others, and waits (at most the
/// room's `linger`, less when the room is closing) for its writer to send
/// what is queued.
struct Membership<'a> {
    room: &'a Room,
    id: u64,
    nick: String,
    outbox: Option<Outbox>,
    writer: Option<JoinHandle<()>>,
}

impl Membership<'_> {
    /// Queues a line for this member only.
    fn tell(&self, line: &str) {
        let Some(outbox) = &self.outbox else { return };
        if let Err(TrySendError::Full(_)) = outbox.try_send(format!("{line}\n").into()) {
            let mut state = self.room.inner.state.lock();
            self.room.drop_member(&mut state, self.id);
        }
    }
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        let closing = {
            let mut state = self.room.inner.state.lock();
            if let Some(m) = state.members.remove(&self.id) {
                log::info!("chat: {} ({}) left", m.nick, m.peer);
                self.room
                    .deliver(&mut state, None, &format!("* {} left", self.nick));
            }
            state.closing
        };
        // Closing the outbox lets the writer finish.
        drop(self.outbox.take());
        if let Some(writer) = self.writer.take() {
            let linger = if closing {
                Duration::from_millis(200)
            } else {
                self.room.inner.config.linger
            };
            // Under `Green` only this coroutine waits (a plain sleep
            // elsewhere).
            let until = Instant::now() + linger;
            while !writer.is_finished() && Instant::now() < until {
                green::sleep(Duration::from_millis(2));
            }
            if !writer.is_finished() {
                if let Some(conn) = self.room.inner.state.lock().conns.get(&self.id) {
                    let _ = conn.shutdown(Shutdown::Both);
                }
            }
            let _ = writer.join();
        }
    }
}
