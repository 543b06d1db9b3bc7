//! HMAC-SHA256 challenge-response authentication with a shared key.
//!
//! The protocol, on a fresh connection, before anything else is exchanged (each
//! message is one frame of the default [`framing`](crate::framing): a 4-byte
//! big-endian length, then the payload):
//!
//! 1. the server sends a challenge of [`CHALLENGE_LEN`] (32) random bytes;
//! 2. the client answers with HMAC-SHA256(key, challenge), [`RESPONSE_LEN`] (32)
//!    bytes;
//! 3. the server checks the answer in constant time and sends the frame `OK`; on a
//!    wrong answer it sends nothing and [`server_handshake`] returns an error, upon
//!    which the caller closes the connection.
//!
//! The key never crosses the wire, and a recorded answer is useless later: every
//! session gets a fresh challenge.
//!
//! # What this does not give
//!
//! - **No encryption and no integrity after the handshake.** Everything sent after
//!   `OK` is plain text that anyone on the path can read or change; a
//!   man-in-the-middle can let the handshake through and then take over the
//!   connection.
//! - **No mutual authentication.** Only the client proves it knows the key; the
//!   client learns nothing about the server (an impostor can simply reply `OK`).
//! - **Replay protection only through fresh challenges.** Nothing else ties a
//!   session to its handshake.
//! - **No protection for weak keys.** Whoever records one challenge and its answer
//!   can guess keys offline; use a long random key (e.g. 32 random bytes).
//!
//! On an untrusted network, run the protocol inside TLS or an SSH tunnel.
//!
//! Both sides block on the peer. The handshake frames are capped at 64 bytes, so
//! a hostile peer cannot make either side allocate more.
//!
//! # Slow and hostile clients
//!
//! A socket's read timeout is a per-read timer: a client that sends one byte
//! just before each timeout keeps [`server_handshake`] waiting for ever. A
//! server facing the network uses a [`Gatekeeper`] instead, which gives
//!
//! - **one total deadline** for the whole handshake
//!   ([`DEFAULT_HANDSHAKE_DEADLINE`], 5 s), however the client spreads its
//!   bytes ([`server_handshake_within`] is the same without the cap), and
//! - **a cap on handshakes in progress** ([`DEFAULT_MAX_PENDING`], 64): when
//!   that many clients have connected but not yet authenticated, a new one
//!   either takes the place of the one waiting longest, which is closed
//!   ([`WhenFull::CloseOldest`], the default), or is closed itself before
//!   anything is done for it ([`WhenFull::RefuseNew`]). An honest client
//!   answers within a round trip, so under `CloseOldest` it gets in as long as
//!   fewer than the cap of new connections arrive during its own handshake; a
//!   crowd of clients that connect and dribble cannot lock it out for the
//!   whole deadline, as they could under `RefuseNew`.
//!
//! # Example
//!
//! ```
//! use socketserver::auth::{self, Key};
//! use std::net::{TcpListener, TcpStream};
//! use std::time::Duration;
//!
//! let key = Key::new("a long random shared secret")?;
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//!
//! let server_key = key.clone();
//! let server = std::thread::spawn(move || -> std::io::Result<()> {
//!     let (mut conn, _) = listener.accept()?;
//!     conn.set_read_timeout(Some(Duration::from_secs(5)))?;
//!     auth::server_handshake(&mut conn, &server_key) // on Err, `conn` is dropped
//! });
//!
//! let mut conn = TcpStream::connect(addr)?;
//! conn.set_read_timeout(Some(Duration::from_secs(5)))?;
//! auth::client_handshake(&mut conn, &key)?;
//! server.join().unwrap()?;
//! # Ok::<(), std::io::Error>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::framing::Framing;

/// The length of the server's random challenge, in bytes.
pub const CHALLENGE_LEN: usize = 32;

/// The length of the client's answer (an HMAC-SHA256 tag), in bytes.
pub const RESPONSE_LEN: usize = 32;

/// The default total time a client gets for the whole handshake, from the
/// challenge to the `OK` ([`Gatekeeper`], [`server_handshake_within`]).
pub const DEFAULT_HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// The default cap on handshakes in progress at once ([`Gatekeeper`]).
pub const DEFAULT_MAX_PENDING: usize = 64;

/// The server's reply to a correct answer.
const ACCEPTED: &[u8] = b"OK";

/// The framing of the handshake: default header, frames of at most 64 bytes.
const HANDSHAKE: Framing = Framing::new().with_max_frame_size(64);

type HmacSha256 = Hmac<Sha256>;

/// A shared secret key. Never empty. Its `Debug` output does not show the key.
///
/// ```
/// use socketserver::auth::Key;
///
/// let key = Key::new("s3cret")?;
/// assert_eq!(format!("{key:?}"), "Key(<redacted>)");
/// assert!(Key::new("").is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl Key {
    /// Makes a key from its bytes.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `bytes` is empty.
    pub fn new(bytes: impl Into<Vec<u8>>) -> io::Result<Key> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the authentication key is empty",
            ));
        }
        Ok(Key(bytes))
    }

    /// Reads a key file: the key is the file's bytes, less one trailing newline
    /// (`\n` or `\r\n`) if there is one, so that `echo SECRET > key` works.
    ///
    /// # Errors
    ///
    /// The read error (same kind, the message naming the file), or
    /// `InvalidData` if the key is empty (`key file PATH is empty`).
    pub fn from_file(path: impl AsRef<Path>) -> io::Result<Key> {
        let path = path.as_ref();
        let mut bytes = fs::read(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot read key file {}: {e}", path.display()),
            )
        })?;
        if bytes.ends_with(b"\r\n") {
            bytes.truncate(bytes.len() - 2);
        } else if bytes.ends_with(b"\n") {
            bytes.truncate(bytes.len() - 1);
        }
        if bytes.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("key file {} is empty", path.display()),
            ));
        }
        Ok(Key(bytes))
    }

    /// The key's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// An HMAC-SHA256 instance keyed with this key, fed with `challenge`.
    fn mac(&self, challenge: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(challenge);
        mac
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Runs the server side of the handshake: sends a fresh challenge, checks the
/// answer, and sends `OK` if it is right. On `Ok(())` the client is authenticated
/// and the stream carries on with the application protocol; on any error, close
/// the connection.
///
/// # Errors
///
/// `PermissionDenied` (`authentication failed: ...`) for whatever the client did
/// wrong: a wrong answer (wrong key, replayed answer), an answer of the wrong
/// length, a truncated or oversized frame, or closing without answering. Other
/// errors (timeouts, resets) are the stream's own.
pub fn server_handshake<S: Read + Write + ?Sized>(stream: &mut S, key: &Key) -> io::Result<()> {
    handshake(stream, key, || Ok(()))
}

/// The server side of the handshake, then `admit` (which may still refuse)
/// just before the `OK` goes out.
fn handshake<S: Read + Write + ?Sized>(
    stream: &mut S,
    key: &Key,
    admit: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    let mut challenge = [0u8; CHALLENGE_LEN];
    getrandom::fill(&mut challenge)
        .map_err(|e| io::Error::other(format!("cannot draw a random challenge: {e}")))?;
    HANDSHAKE.write_frame(stream, &challenge)?;
    stream.flush()?;

    let answer = match HANDSHAKE.read_frame(stream) {
        Ok(Some(answer)) => answer,
        Ok(None) => return Err(denied("the client closed the connection without answering")),
        Err(e) if is_malformed(&e) => return Err(denied(&format!("bad answer frame: {e}"))),
        Err(e) => return Err(e),
    };
    if answer.len() != RESPONSE_LEN {
        return Err(denied(&format!(
            "answer of {} bytes, expected {RESPONSE_LEN}",
            answer.len()
        )));
    }
    key.mac(&challenge)
        .verify_slice(&answer)
        .map_err(|_| denied("wrong answer to the challenge (wrong key?)"))?;
    admit()?;

    HANDSHAKE.write_frame(stream, ACCEPTED)?;
    stream.flush()
}

/// [`server_handshake`] within one total `deadline` on a socket: before each
/// read and write, the socket's timeout is set to the time left, so a client
/// that sends its answer one byte at a time is cut at the deadline all the
/// same. The socket's read and write timeouts are left as the handshake set
/// them: set your own afterwards.
///
/// # Errors
///
/// Those of [`server_handshake`]; `TimedOut` (`the authentication handshake
/// did not finish within ...`) at the deadline.
///
/// ```
/// use socketserver::auth::{self, Key};
/// use std::io::Read;
/// use std::net::{TcpListener, TcpStream};
/// use std::time::{Duration, Instant};
///
/// let key = Key::new("k")?;
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// // A client that connects and never answers.
/// let _silent = TcpStream::connect(listener.local_addr()?)?;
/// let (mut conn, _) = listener.accept()?;
/// let t = Instant::now();
/// let e = auth::server_handshake_within(&mut conn, &key, Duration::from_millis(200))
///     .unwrap_err();
/// assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
/// assert!(t.elapsed() < Duration::from_secs(5));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn server_handshake_within<S: Read + Write + AsFd>(
    stream: &mut S,
    key: &Key,
    deadline: Duration,
) -> io::Result<()> {
    let mut timed = Deadline::new(stream, deadline);
    handshake(&mut timed, key, || Ok(()))
}

/// A stream whose every read and write must end by one instant. The
/// socket's own read and write timeouts, which it shortens meanwhile, are
/// put back when it drops: the connection goes on with the server's.
struct Deadline<'a, S: Read + Write + AsFd> {
    stream: &'a mut S,
    until: Option<Instant>,
    total: Duration,
    /// The socket's timeouts before (`None` if they could not be read).
    before: Option<(Option<Duration>, Option<Duration>)>,
}

impl<'a, S: Read + Write + AsFd> Deadline<'a, S> {
    fn new(stream: &'a mut S, total: Duration) -> Self {
        let socket = socket2::SockRef::from(&*stream);
        let before = socket.read_timeout().ok().zip(socket.write_timeout().ok());
        Deadline {
            stream,
            // An unrepresentable instant (a deadline of centuries) is none.
            until: Instant::now().checked_add(total),
            total,
            before,
        }
    }

    /// Sets the socket's read (`write`: write) timeout, and tells a green
    /// coroutine's cache of it.
    fn set_timeout(&self, write: bool, t: Option<Duration>) -> io::Result<()> {
        let socket = socket2::SockRef::from(&*self.stream);
        if write {
            socket.set_write_timeout(t)?;
        } else {
            socket.set_read_timeout(t)?;
        }
        crate::green::timeout_set(
            std::os::fd::AsRawFd::as_raw_fd(&self.stream.as_fd()),
            write,
            t,
        );
        Ok(())
    }

    /// The time left, as a socket timeout, or `TimedOut` if none is.
    fn left(&self) -> io::Result<Option<Duration>> {
        let Some(until) = self.until else {
            return Ok(None);
        };
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timed_out());
        }
        Ok(Some(left))
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the authentication handshake did not finish within {:?}",
                self.total
            ),
        )
    }

    /// A timeout of the socket is the deadline's.
    fn map(&self, e: io::Error) -> io::Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timed_out(),
            _ => e,
        }
    }
}

impl<S: Read + Write + AsFd> Drop for Deadline<'_, S> {
    fn drop(&mut self) {
        if let Some((read, write)) = self.before {
            // Best effort: a socket that cannot take options is broken, and
            // its next call says so.
            let _ = self.set_timeout(false, read);
            let _ = self.set_timeout(true, write);
        }
    }
}

impl<S: Read + Write + AsFd> Read for Deadline<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.set_timeout(false, left)?;
        self.stream.read(buf).map_err(|e| self.map(e))
    }
}

impl<S: Read + Write + AsFd> Write for Deadline<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.set_timeout(true, left)?;
        self.stream.write(buf).map_err(|e| self.map(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush().map_err(|e| self.map(e))
    }
}

/// What a [`Gatekeeper`] does with a new connection when
/// [`max_pending`](Gatekeeper::with_max_pending) handshakes are already in
/// progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Close the handshake that has been waiting longest (its socket is shut
    /// down, its [`Gatekeeper::server_handshake`] returns
    /// `ConnectionAborted`) and serve the new connection.
    #[default]
    CloseOldest,
    /// Refuse the new connection: [`Gatekeeper::server_handshake`] returns
    /// `ConnectionRefused` at once, having sent nothing, allocated nothing
    /// and made no system call; the caller closes it.
    RefuseNew,
}

/// The server side of the handshake for a server facing untrusted clients:
/// one total deadline per handshake and a cap on handshakes in progress (see
/// the [module docs](self#slow-and-hostile-clients)). Cloning shares the cap.
///
/// ```
/// use socketserver::auth::{self, Gatekeeper, Key};
/// use std::net::{TcpListener, TcpStream};
/// use std::time::Duration;
///
/// let key = Key::new("a long random shared secret")?;
/// let gate = Gatekeeper::new(key.clone())
///     .with_deadline(Duration::from_secs(2))
///     .with_max_pending(16);
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let addr = listener.local_addr()?;
/// let server = std::thread::spawn(move || -> std::io::Result<()> {
///     let (mut conn, _) = listener.accept()?;
///     gate.server_handshake(&mut conn) // on Err, `conn` is dropped
/// });
/// let mut conn = TcpStream::connect(addr)?;
/// conn.set_read_timeout(Some(Duration::from_secs(5)))?;
/// auth::client_handshake(&mut conn, &key)?;
/// server.join().unwrap()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Gatekeeper {
    shared: Arc<Gate>,
}

struct Gate {
    key: Key,
    deadline: Duration,
    max_pending: usize,
    when_full: WhenFull,
    table: Mutex<Table>,
}

/// The handshakes in progress, oldest first.
struct Table {
    pending: VecDeque<Pending>,
    next_id: u64,
    closed_oldest: u64,
    refused: u64,
}

struct Pending {
    id: u64,
    /// A duplicate of the connection's descriptor, to shut it down.
    socket: OwnedFd,
}

impl Gatekeeper {
    /// A gatekeeper for `key` with [`DEFAULT_HANDSHAKE_DEADLINE`],
    /// [`DEFAULT_MAX_PENDING`] and [`WhenFull::CloseOldest`].
    #[must_use]
    pub fn new(key: Key) -> Gatekeeper {
        Gatekeeper::build(
            key,
            DEFAULT_HANDSHAKE_DEADLINE,
            DEFAULT_MAX_PENDING,
            WhenFull::default(),
        )
    }

    fn build(key: Key, deadline: Duration, max_pending: usize, when_full: WhenFull) -> Gatekeeper {
        let max_pending = max_pending.max(1);
        Gatekeeper {
            shared: Arc::new(Gate {
                key,
                deadline,
                max_pending,
                when_full,
                table: Mutex::new(Table {
                    // Allocated once here, never per connection.
                    pending: VecDeque::with_capacity(max_pending.min(1 << 16)),
                    next_id: 0,
                    closed_oldest: 0,
                    refused: 0,
                }),
            }),
        }
    }

    /// The total time a client gets for the handshake.
    #[must_use]
    pub fn with_deadline(self, deadline: Duration) -> Gatekeeper {
        let g = &self.shared;
        Gatekeeper::build(g.key.clone(), deadline, g.max_pending, g.when_full)
    }

    /// At most `n` handshakes at once (at least 1).
    #[must_use]
    pub fn with_max_pending(self, n: usize) -> Gatekeeper {
        let g = &self.shared;
        Gatekeeper::build(g.key.clone(), g.deadline, n, g.when_full)
    }

    /// What to do with a new connection when the cap is reached.
    #[must_use]
    pub fn when_full(self, policy: WhenFull) -> Gatekeeper {
        let g = &self.shared;
        Gatekeeper::build(g.key.clone(), g.deadline, g.max_pending, policy)
    }

    /// The key.
    #[must_use]
    pub fn key(&self) -> &Key {
        &self.shared.key
    }

    /// The total time a client gets for the handshake.
    #[must_use]
    pub fn deadline(&self) -> Duration {
        self.shared.deadline
    }

    /// The cap on handshakes in progress.
    #[must_use]
    pub fn max_pending(&self) -> usize {
        self.shared.max_pending
    }

    /// Handshakes in progress now.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// How many handshakes were closed to make room for a newer one
    /// ([`WhenFull::CloseOldest`]), and how many connections were refused
    /// ([`WhenFull::RefuseNew`]), since the start.
    #[must_use]
    pub fn turned_away(&self) -> (u64, u64) {
        let t = self.shared.lock();
        (t.closed_oldest, t.refused)
    }

    /// Runs the server side of the handshake on `stream` within the
    /// deadline, holding one of the `max_pending` places meanwhile. The
    /// stream's read and write timeouts are left as the handshake set them:
    /// set your own afterwards.
    ///
    /// # Errors
    ///
    /// Those of [`server_handshake_within`]; `ConnectionRefused` when the
    /// cap is reached under [`WhenFull::RefuseNew`] (the error carries no
    /// message: nothing is allocated for a refused connection);
    /// `ConnectionAborted` when this handshake was closed to make room for a
    /// newer one; the error of duplicating the descriptor.
    pub fn server_handshake<S: Read + Write + AsFd>(&self, stream: &mut S) -> io::Result<()> {
        let id = self.enter(stream)?;
        let mut left = Some(Leave {
            gate: &self.shared,
            id,
            done: false,
        });
        let mut timed = Deadline::new(stream, self.shared.deadline);
        let result = handshake(&mut timed, &self.shared.key, || {
            // Leave the table before the OK goes out: once it is sent,
            // nobody may shut the connection down to make room.
            left.take().map_or(Ok(()), Leave::now)
        });
        match (result, left.map(Leave::now)) {
            // Closed to make room: that is why the handshake failed.
            (Err(_), Some(Err(e))) => Err(e),
            (r, _) => r,
        }
    }

    /// Takes a place in the table (closing the oldest handshake if needed).
    fn enter(&self, stream: &impl AsFd) -> io::Result<u64> {
        let gate = &self.shared;
        let mut table = gate.lock();
        if table.pending.len() >= gate.max_pending {
            match gate.when_full {
                WhenFull::RefuseNew => {
                    table.refused += 1;
                    return Err(io::ErrorKind::ConnectionRefused.into());
                }
                WhenFull::CloseOldest => {
                    while table.pending.len() >= gate.max_pending {
                        let Some(oldest) = table.pending.pop_front() else {
                            break;
                        };
                        // Its blocked read returns end of file at once.
                        let _ = socket2::SockRef::from(&oldest.socket).shutdown(Shutdown::Both);
                        table.closed_oldest += 1;
                    }
                }
            }
        }
        let socket = stream.as_fd().try_clone_to_owned()?;
        let id = table.next_id;
        table.next_id += 1;
        table.pending.push_back(Pending { id, socket });
        Ok(id)
    }
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table stays consistent whatever panicked while holding it.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A place in the table, given back by [`now`](Leave::now) or, on any other
/// way out (an early error, a panic), on drop.
struct Leave<'a> {
    gate: &'a Gate,
    id: u64,
    done: bool,
}

impl Leave<'_> {
    /// Gives the place back; `ConnectionAborted` if it was already taken
    /// away (closed to make room for a newer handshake).
    fn now(mut self) -> io::Result<()> {
        self.done = true;
        if self.remove() {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!(
                "authentication cut: {} other clients were authenticating and this one had \
                 waited longest",
                self.gate.max_pending
            ),
        ))
    }

    /// Removes the place; false if it was no longer there.
    fn remove(&self) -> bool {
        let mut table = self.gate.lock();
        match table.pending.iter().position(|p| p.id == self.id) {
            Some(i) => {
                table.pending.remove(i);
                true
            }
            None => false,
        }
    }
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.remove();
        }
    }
}

impl fmt::Debug for Gatekeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.shared;
        f.debug_struct("Gatekeeper")
            .field("key", &g.key)
            .field("deadline", &g.deadline)
            .field("max_pending", &g.max_pending)
            .field("when_full", &g.when_full)
            .finish_non_exhaustive()
    }
}

/// Runs the client side of the handshake: answers the server's challenge and
/// waits for its `OK`. On `Ok(())` the stream carries on with the application
/// protocol.
///
/// # Errors
///
/// `PermissionDenied` (`authentication refused by server ...`) if the server
/// closes the connection instead of accepting (a wrong key, usually);
/// `InvalidData` or `UnexpectedEof` if the server does not speak this protocol;
/// and the stream's own errors.
pub fn client_handshake<S: Read + Write + ?Sized>(stream: &mut S, key: &Key) -> io::Result<()> {
    let challenge = match HANDSHAKE.read_frame(stream) {
        Ok(Some(c)) if c.len() == CHALLENGE_LEN => c,
        Ok(Some(c)) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the server sent a {}-byte challenge, expected {CHALLENGE_LEN}",
                    c.len()
                ),
            ))
        }
        Ok(None) => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection before sending a challenge",
            ))
        }
        Err(e) if is_malformed(&e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("no valid challenge from the server: {e}"),
            ))
        }
        Err(e) => return Err(e),
    };
    let answer = key.mac(&challenge).finalize().into_bytes();
    HANDSHAKE.write_frame(stream, &answer)?;
    stream.flush()?;

    let refused = |detail: &str| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("authentication refused by server ({detail})"),
        )
    };
    match HANDSHAKE.read_frame(stream) {
        Ok(Some(reply)) if reply == ACCEPTED => Ok(()),
        Ok(Some(_)) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected reply from the server to the authentication answer",
        )),
        Ok(None) => Err(refused("connection closed; wrong key?")),
        Err(e) if is_closed(&e) => Err(refused(&e.to_string())),
        Err(e) => Err(e),
    }
}

/// A frame that the peer got wrong (as opposed to a transport error).
fn is_malformed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
    )
}

/// The peer closed or reset the connection.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

fn denied(msg: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("authentication failed: {msg}"),
    )
}
