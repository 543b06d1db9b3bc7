//! File transfer: the textbook upload server (a JSON header with the file's
//! name and size, then the raw bytes, then an md5 check) made safe to
//! leave running.
//!
//! # Protocol (`docs/protocols.md`, "File transfer", says why each rule is there)
//!
//! With a key, authentication ([`socketserver::auth`]) comes first. Then
//! each request is one frame (4-byte big-endian length, then the payload)
//! holding a JSON [`Request`]; a `put` is followed by exactly `size` raw
//! bytes on the stream, not framed:
//!
//! ```text
//! {"op": "put", "name": "notes.txt", "size": 5, "sha256": "2cf2...9824"}  + 5 bytes
//! {"op": "get", "name": "notes.txt"}
//! {"op": "list"}
//! ```
//!
//! The reply is one frame holding a JSON [`Response`]: `{"ok": true, ...}`
//! (a put: `name`, `size`, `sha256`; a get: the same, then `size` raw bytes;
//! a list: `"files": [{"name": ..., "size": ...}, ...]`) or `{"ok": false,
//! "error": "..."}`. The connection stays open for more requests until the
//! client closes it.
//!
//! # What the server guarantees
//!
//! * **Names** are plain file names ([`check_name`]): no path, no `..`, at
//!   most 255 bytes, not starting with [`TEMP_PREFIX`], and only letters,
//!   digits (any script), space and ASCII punctuation: no control,
//!   invisible or bidirectional character, no lookalike of `/` or `.`
//!   (`∕etc∕passwd`, `．．`). A refused name writes nothing anywhere; a
//!   file in the root with another name is neither listed nor served.
//! * **Uploads are atomic**: a put writes `.upload-<random>.part` in the
//!   root, checks the size and the sha256, flushes it to disk, then renames
//!   it over the name. A broken (disconnected, timed out), refused or
//!   corrupted upload deletes its temp file on every path out (a guard
//!   removes it on drop), so the root holds only finished files once no
//!   upload runs; temp files a crash left behind are removed when the
//!   server starts. `list` never shows temp files. A put replaces an
//!   existing file of that name (a symlink is replaced, not followed).
//! * **Step**: a put refused for its name or hash still reads and discards
//!   its `size` bytes, so the stream stays in step and the next request
//!   works; a put over `--max-size` is answered and the connection closed
//!   without reading the bytes, and so is a header that is not one of the
//!   three [`Request`]s (an unknown `op`, a missing field).
//! * **Reads stay in the root**: a get opens the name with `O_NOFOLLOW`
//!   and serves regular files only, so a symlink in the root (to
//!   `/etc/passwd`, say) cannot be read through, nor a FIFO or device.
//! * **The root is a directory descriptor**, opened once at the start;
//!   every operation is relative to it (`openat`, `renameat`, `unlinkat`,
//!   `fstatat`), so moving the root away and putting a symlink in its place
//!   redirects nothing. After the rename of an upload the directory itself
//!   is flushed (`fsync`), so the new name survives a crash.
//! * **Downloads** (the client) go to `.NAME.RANDOM.part` next to the
//!   output (NAME shortened to keep the whole within 255 bytes), renamed
//!   into place once the sha256 matched; the temp file is removed on every
//!   error and, in `demos files get`, on SIGINT, SIGTERM and SIGHUP.
//! * **Integrity both ways**: the server checks a put's sha256 before
//!   keeping it; a get's header carries the sha256 (the server reads the
//!   file twice: once to hash, once to send, streaming in chunks), and the
//!   client checks it before renaming its own temp file into place.
//!
//! Limits: no encryption without TLS (`--tls-cert`/`--tls-key`); without
//! `--key-file` anyone who can connect may read and write the root; a hard
//! link placed in the root by a local user is served like any file.

pub mod cli;
pub mod client;
pub mod server;

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use socketserver::framing::Framing;

pub use server::{FileServer, FilesConfig};

/// Names of upload temp files start with this; no client name may.
pub const TEMP_PREFIX: &str = ".upload-";

/// The longest name, in bytes (the usual file-system limit).
pub const MAX_NAME: usize = 255;

/// The default `--max-size`: 1 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;

/// The framing of request headers (server side): at most 64 KiB.
pub const REQUEST_FRAMING: Framing = Framing::new().with_max_frame_size(64 * 1024);

/// Size of one chunk when streaming file data.
pub const CHUNK: usize = 256 * 1024;

/// A request header (the JSON of the request frame), told apart by its
/// `op` field.
///
/// ```
/// use demos::files::Request;
/// let put: Request = serde_json::from_str(
///     r#"{"op": "put", "name": "a.txt", "size": 5, "sha256": "00"}"#,
/// )?;
/// assert_eq!(put, Request::put("a.txt", 5, "00"));
/// assert_eq!(serde_json::to_string(&Request::list())?, r#"{"op":"list"}"#);
/// assert!(serde_json::from_str::<Request>(r#"{"op": "put", "name": "a"}"#).is_err());
/// assert!(serde_json::from_str::<Request>(r#"{"op": "delete"}"#).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Store `size` raw bytes, which follow the header, as `name`; their
    /// SHA-256 is `sha256` (64 hex digits).
    Put {
        /// The file name.
        name: String,
        /// The number of raw bytes that follow.
        size: u64,
        /// The SHA-256 of those bytes.
        sha256: String,
    },
    /// Send the file `name`.
    Get {
        /// The file name.
        name: String,
    },
    /// List the files.
    List,
}

impl Request {
    /// `{"op": "put", "name": ..., "size": ..., "sha256": ...}`
    pub fn put(name: &str, size: u64, sha256: &str) -> Request {
        Request::Put {
            name: name.into(),
            size,
            sha256: sha256.into(),
        }
    }

    /// `{"op": "get", "name": ...}`
    pub fn get(name: &str) -> Request {
        Request::Get { name: name.into() }
    }

    /// `{"op": "list"}`
    pub fn list() -> Request {
        Request::List
    }

    /// Reads a request header; the error is the reply's message: an
    /// unknown `op` is named as such, anything else (not JSON, a missing
    /// or mistyped field) is a bad header.
    pub fn parse(header: &[u8]) -> Result<Request, String> {
        serde_json::from_slice(header).map_err(|e| {
            #[derive(Deserialize)]
            struct Op {
                op: String,
            }
            match serde_json::from_slice::<Op>(header) {
                Ok(Op { op }) if !["put", "get", "list"].contains(&op.as_str()) => {
                    format!("unknown op {op:?} (put, get or list)")
                }
                _ => format!("bad request header: {e}"),
            }
        })
    }
}

/// A reply (the JSON of the reply frame).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The file (put, get).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its size; for a get, the raw bytes that follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Its SHA-256, 64 lowercase hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The files in the root (list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<Entry>>,
}

impl Response {
    /// `{"ok": false, "error": ...}`
    pub fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(message.into()),
            ..Response::default()
        }
    }

    /// `{"ok": true, "name": ..., "size": ..., "sha256": ...}`
    pub fn file(name: &str, size: u64, sha256: String) -> Response {
        Response {
            ok: true,
            name: Some(name.into()),
            size: Some(size),
            sha256: Some(sha256),
            ..Response::default()
        }
    }
}

/// One file of a list reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Checks that `name` is a plain file name the server may use; the error
/// says why not. A name is at most [`MAX_NAME`] bytes of letters and
/// digits (any script, with combining accents), space and ASCII
/// punctuation; not `.` or `..`, no `/` or `\\`, not starting with
/// [`TEMP_PREFIX`]. Every other character is refused (see the list at
/// `is_name_char` in the source): in particular control characters,
/// invisible and bidirectional format characters, and the lookalikes of
/// `/` and `.`, so that no name can pass for a path or for another name.
///
/// ```
/// use demos::files::check_name;
/// assert!(check_name("report-2024.pdf").is_ok());
/// assert!(check_name(".bashrc").is_ok());
/// assert!(check_name("café au lait.txt").is_ok());
/// for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "a\0b", ".upload-1.part"] {
///     assert!(check_name(bad).is_err(), "{bad:?}");
/// }
/// for lookalike in ["\u{2215}etc\u{2215}passwd", "\u{ff0e}\u{ff0e}", "a\u{ff0f}b", "a\u{2024}txt"] {
///     assert!(check_name(lookalike).is_err(), "{lookalike:?}");
/// }
/// assert!(check_name("invoice\u{202e}fdp.exe").is_err());
/// assert!(check_name(&"x".repeat(256)).is_err());
/// ```
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a file name"));
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "the name is {} bytes long (at most {MAX_NAME})",
            name.len()
        ));
    }
    if name.contains(['/', '\\']) {
        return Err(format!(
            "{name:?} is a path; give a plain file name (no / or \\)"
        ));
    }
    if name.contains('\0') {
        return Err("the name holds a NUL byte".into());
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} holds a control character"));
    }
    if let Some(c) = name.chars().find(|&c| !is_name_char(c)) {
        let what = if crate::text::is_hidden(c) {
            "an invisible or bidirectional format character"
        } else {
            "a character outside the allowed set (letters, digits, space and ASCII punctuation)"
        };
        return Err(format!(
            "{} holds {} ({what})",
            crate::text::escape_for_terminal(&format!("{name:?}")),
            crate::text::code_point(c)
        ));
    }
    if let Some(c) = name
        .chars()
        .next()
        .filter(|c| matches!(c, '\u{0300}'..='\u{036f}'))
    {
        return Err(format!(
            "the name starts with {}, a combining mark",
            crate::text::code_point(c)
        ));
    }
    if name.starts_with(TEMP_PREFIX) {
        return Err(format!(
            "names starting with {TEMP_PREFIX:?} are reserved for uploads in progress"
        ));
    }
    Ok(())
}

/// Whether `c` may appear in a file name: ASCII letters, digits, space and
/// punctuation (but `/` and `\`, refused before as path separators),
/// letters and digits of any script (`café`, `日本語`), and combining
/// accents. Everything else is refused: control characters, invisible and
/// bidirectional format characters (a U+202E makes `txt.exe` read
/// `exe.txt`), and every other symbol or punctuation, among them the
/// lookalikes of `/` and `.` (U+2215 `∕`, U+2044 `⁄`, U+FF0F `／`, U+FF0E
/// `．`, U+2024 `․`, U+3002 `。`), letters that render as blank (U+3164),
/// and emoji.
fn is_name_char(c: char) -> bool {
    if c.is_ascii() {
        return c == ' ' || c.is_ascii_graphic();
    }
    (c.is_alphanumeric() && !crate::text::is_blank_letter(c))
        || matches!(c, '\u{0300}'..='\u{036f}')
}

/// Whether `s` looks like a SHA-256: 64 hex digits (either case).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Reads `r` to its end; returns the byte count and the SHA-256 in hex.
pub fn sha256_of(r: &mut dyn Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex(&hasher.finalize())))
}

/// Copies exactly `n` bytes from `r` to `w` in chunks of [`CHUNK`],
/// feeding each chunk to `hasher` (if any) and reporting progress; nothing
/// beyond `n` is read.
///
/// # Errors
///
/// `UnexpectedEof` (`stream ended after K of N bytes`) if `r` ends early,
/// and the reader's and writer's errors.
pub fn copy_n(
    r: &mut dyn Read,
    w: &mut dyn Write,
    n: u64,
    mut hasher: Option<&mut Sha256>,
    progress: &mut dyn Progress,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK.min(usize::try_from(n).unwrap_or(CHUNK)).max(1)];
    let mut done = 0u64;
    while done < n {
        let want = buf
            .len()
            .min(usize::try_from(n - done).unwrap_or(usize::MAX));
        let got = match r.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended after {done} of {n} bytes"),
                ))
            }
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&buf[..got]);
        }
        w.write_all(&buf[..got])?;
        done += got as u64;
        progress.advance(got as u64);
    }
    Ok(())
}

/// Progress of one transfer (the CLI draws a bar; the tests use `()`).
pub trait Progress {
    /// The transfer of `total` bytes starts.
    fn start(&mut self, _total: u64) {}
    /// `n` more bytes went through.
    fn advance(&mut self, _n: u64) {}
    /// The transfer ended (either way).
    fn finish(&mut self) {}
}

impl Progress for () {}
