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
//! Set read and write timeouts on the stream before the handshake: both functions
//! block on the peer. The handshake frames are capped at 64 bytes, so a hostile
//! peer cannot make either side allocate more.
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

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::framing::Framing;

/// The length of the server's random challenge, in bytes.
pub const CHALLENGE_LEN: usize = 32;

/// The length of the client's answer (an HMAC-SHA256 tag), in bytes.
pub const RESPONSE_LEN: usize = 32;

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

    HANDSHAKE.write_frame(stream, ACCEPTED)?;
    stream.flush()
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
