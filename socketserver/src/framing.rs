//! Length-prefixed frames over any byte stream.
//!
//! TCP carries bytes, not messages: two `send`s may arrive as one `recv`, and one
//! `send` as several (the "sticky packets" of the Python originals). A frame fixes
//! that: a fixed-width length header, then exactly that many payload bytes. The
//! header layout is a [`Header`]:
//!
//! | header | bytes | layout | largest payload |
//! |---|---|---|---|
//! | [`Header::U32Be`] (default) | 4 | unsigned, big-endian (network order) | 4 GiB - 1 |
//! | [`Header::I32Le`] | 4 | signed, little-endian: Python's `struct.pack('i', n)` on x86 and ARM | 2 GiB - 1 |
//! | [`Header::U16Be`] | 2 | unsigned, big-endian | 65,535 |
//! | [`Header::U64Be`] | 8 | unsigned, big-endian | limited by the maximum frame size |
//!
//! A [`Framing`] pairs a header with a maximum frame size (default
//! [`DEFAULT_MAX_FRAME_SIZE`], 16 MiB). The free functions [`read_frame`],
//! [`write_frame`], `read_json` and `write_json` (feature `json`) use the default framing.
//!
//! # Errors
//!
//! Every failure is an [`io::Error`] whose message says what went wrong:
//!
//! | what | kind | message |
//! |---|---|---|
//! | end of stream inside a header | `UnexpectedEof` | `truncated frame header: got 2 of 4 header bytes` |
//! | end of stream inside a payload | `UnexpectedEof` | `truncated frame: got 10 of 100 payload bytes` |
//! | negative length ([`Header::I32Le`]) | `InvalidData` | `negative frame length -1 in an I32Le header` |
//! | length over the maximum | `InvalidData` | `frame of N bytes exceeds the maximum of M` |
//! | writing a payload over the maximum | `InvalidInput` | `frame of N bytes exceeds the maximum of M` |
//! | a frame that is not valid JSON (`read_json`) | `InvalidData` | `invalid JSON frame: ...` (serde's message) |
//!
//! End of stream exactly at a frame boundary is not an error: the readers return
//! `Ok(None)` (or `Ok(false)`).
//!
//! Reading never trusts the header: the length is checked against the maximum
//! before anything is allocated, and the payload buffer then grows only as bytes
//! actually arrive (at most 64 KiB, or the size received so far, ahead of the data),
//! so a hostile header announcing 2 GiB costs nothing unless 2 GiB are really sent.
//!
//! After an error the stream is out of step (part of a frame may have been
//! consumed): close the connection. This includes read timeouts (`WouldBlock` or
//! `TimedOut`) in the middle of a frame. The one exception is a frame read whole
//! whose JSON is invalid: [`FrameError::of`] tells them apart, so a server can
//! answer bad JSON and keep the connection.
//!
//! # On a server connection
//!
//! Read each frame as one message, so that a graceful close ends a connection
//! waiting for its next frame at once, and a client dribbling a frame is cut at
//! the message deadline: `req.read_message(|r| framing.read_json(r))` (see
//! [`StreamRequest::read_message`](crate::StreamRequest::read_message)).
//!
//! Writing sends header and payload with one vectored write (`writev`), resuming
//! correctly after partial writes. Nothing is flushed: wrap a stream in a
//! [`BufWriter`](std::io::BufWriter) to batch small frames, and flush it yourself.
//!
//! # Example
//!
//! ```
//! use socketserver::framing::{self, Framing, Header};
//!
//! // Default framing: a 4-byte big-endian length, then the payload.
//! let mut wire = Vec::new();
//! framing::write_frame(&mut wire, b"hello")?;
//! framing::write_frame(&mut wire, b"")?;
//! assert_eq!(wire[..9], *b"\0\0\0\x05hello");
//!
//! let mut input = &wire[..];
//! assert_eq!(framing::read_frame(&mut input)?, Some(b"hello".to_vec()));
//! assert_eq!(framing::read_frame(&mut input)?, Some(Vec::new()));
//! assert_eq!(framing::read_frame(&mut input)?, None); // clean end of stream
//!
//! // Talking to a Python peer that uses struct.pack('i', len(data)) + data.
//! let python = Framing::new().with_header(Header::I32Le).with_max_frame_size(1 << 20);
//! let mut wire = Vec::new();
//! python.write_frame(&mut wire, b"hi")?;
//! assert_eq!(wire, b"\x02\0\0\0hi");
//! # Ok::<(), std::io::Error>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::io::{self, IoSlice, Read, Write};

#[cfg(feature = "json")]
use serde::de::DeserializeOwned;
#[cfg(feature = "json")]
use serde::Serialize;

/// The default maximum payload size of a frame: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// How far the payload buffer may grow ahead of the bytes received so far.
const READ_AHEAD: usize = 64 * 1024;

/// The layout of a frame's length header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Header {
    /// 4 bytes, unsigned, big-endian (network order). The default.
    #[default]
    U32Be,
    /// 4 bytes, signed, little-endian: the layout of Python's `struct.pack('i', n)`
    /// on little-endian machines (x86, ARM). Negative lengths are refused.
    I32Le,
    /// 2 bytes, unsigned, big-endian.
    U16Be,
    /// 8 bytes, unsigned, big-endian.
    U64Be,
}

impl Header {
    /// The size of the header in bytes: 2, 4 or 8.
    ///
    /// ```
    /// use socketserver::framing::Header;
    /// assert_eq!(Header::I32Le.width(), 4);
    /// assert_eq!(Header::U64Be.width(), 8);
    /// ```
    #[must_use]
    pub const fn width(self) -> usize {
        match self {
            Header::U16Be => 2,
            Header::U32Be | Header::I32Le => 4,
            Header::U64Be => 8,
        }
    }

    /// The largest payload length this header can express (before any
    /// [`Framing::max_frame_size`] limit).
    ///
    /// ```
    /// use socketserver::framing::Header;
    /// assert_eq!(Header::U16Be.max_payload(), 65_535);
    /// assert_eq!(Header::I32Le.max_payload(), i32::MAX as u64);
    /// ```
    #[must_use]
    pub const fn max_payload(self) -> u64 {
        match self {
            Header::U16Be => u16::MAX as u64,
            Header::U32Be => u32::MAX as u64,
            Header::I32Le => i32::MAX as u64,
            Header::U64Be => u64::MAX,
        }
    }

    /// Encodes `len`; returns the buffer and the number of bytes used.
    fn encode(self, len: usize) -> io::Result<([u8; 8], usize)> {
        let unfit = || {
            invalid_input(format!(
                "frame of {len} bytes does not fit a {self:?} header (at most {} bytes)",
                self.max_payload()
            ))
        };
        let mut out = [0u8; 8];
        match self {
            Header::U16Be => {
                let n = u16::try_from(len).map_err(|_| unfit())?;
                out[..2].copy_from_slice(&n.to_be_bytes());
            }
            Header::U32Be => {
                let n = u32::try_from(len).map_err(|_| unfit())?;
                out[..4].copy_from_slice(&n.to_be_bytes());
            }
            Header::I32Le => {
                let n = i32::try_from(len).map_err(|_| unfit())?;
                out[..4].copy_from_slice(&n.to_le_bytes());
            }
            Header::U64Be => {
                let n = u64::try_from(len).map_err(|_| unfit())?;
                out = n.to_be_bytes();
            }
        }
        Ok((out, self.width()))
    }

    /// Decodes the first [`width`](Self::width) bytes of `b`.
    fn decode(self, b: [u8; 8]) -> io::Result<u64> {
        Ok(match self {
            Header::U16Be => u16::from_be_bytes([b[0], b[1]]).into(),
            Header::U32Be => u32::from_be_bytes([b[0], b[1], b[2], b[3]]).into(),
            Header::I32Le => {
                let n = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                u64::try_from(n).map_err(|_| FrameError::NegativeLength(n).into_io())?
            }
            Header::U64Be => u64::from_be_bytes(b),
        })
    }
}

/// A frame format: a [`Header`] and a maximum payload size.
///
/// `Framing` is a small `Copy` value; build it once and share it freely.
///
/// ```
/// use socketserver::framing::{Framing, Header, DEFAULT_MAX_FRAME_SIZE};
///
/// let f = Framing::new();
/// assert_eq!(f.header(), Header::U32Be);
/// assert_eq!(f.max_frame_size(), DEFAULT_MAX_FRAME_SIZE);
///
/// let small = Framing::new().with_header(Header::U16Be).with_max_frame_size(1024);
/// let mut wire = Vec::new();
/// small.write_frame(&mut wire, b"abc")?;
/// assert_eq!(wire, b"\0\x03abc");
/// assert_eq!(small.read_frame(&mut &wire[..])?, Some(b"abc".to_vec()));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Framing {
    header: Header,
    max_frame_size: usize,
}

impl Default for Framing {
    fn default() -> Self {
        Self::new()
    }
}

impl Framing {
    /// The default framing: [`Header::U32Be`] and a maximum of
    /// [`DEFAULT_MAX_FRAME_SIZE`] bytes.
    #[must_use]
    pub const fn new() -> Self {
        Framing {
            header: Header::U32Be,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }

    /// Returns this framing with another header layout.
    #[must_use]
    pub const fn with_header(mut self, header: Header) -> Self {
        self.header = header;
        self
    }

    /// Returns this framing with another maximum payload size, in bytes.
    ///
    /// Frames whose header announces more are refused before anything is
    /// allocated; writing a larger payload is refused before anything is written.
    /// The header's own limit ([`Header::max_payload`]) applies as well.
    #[must_use]
    pub const fn with_max_frame_size(mut self, max: usize) -> Self {
        self.max_frame_size = max;
        self
    }

    /// The header layout.
    #[must_use]
    pub const fn header(&self) -> Header {
        self.header
    }

    /// The maximum payload size, in bytes.
    #[must_use]
    pub const fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Writes `payload` as one frame: header and payload go out together in one
    /// vectored write (more only if the writer accepts part of it). Does not flush.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the payload is larger than the maximum frame size or than
    /// the header can express (nothing is written then); otherwise the writer's
    /// errors, and `WriteZero` if it stops accepting bytes.
    pub fn write_frame<W: Write + ?Sized>(&self, w: &mut W, payload: &[u8]) -> io::Result<()> {
        if payload.len() > self.max_frame_size {
            return Err(invalid_input(too_big(
                payload.len() as u64,
                self.max_frame_size,
            )));
        }
        let (head, width) = self.header.encode(payload.len())?;
        write_all_vectored(w, &head[..width], payload)
    }

    /// Reads one frame. Returns `Ok(None)` if the stream ends cleanly before the
    /// first header byte.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` if the stream ends inside a frame, `InvalidData` for a
    /// negative or oversized length, and the reader's own errors. See the
    /// [module docs](self#errors).
    pub fn read_frame<R: Read + ?Sized>(&self, r: &mut R) -> io::Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        Ok(self.read_frame_into(r, &mut buf)?.then_some(buf))
    }

    /// Reads one frame into `buf`, replacing its contents and reusing its
    /// allocation. Returns `Ok(false)` if the stream ends cleanly before the first
    /// header byte (then `buf` is empty). On error `buf` is left empty.
    ///
    /// ```
    /// use socketserver::framing::Framing;
    ///
    /// let wire = b"\0\0\0\x01a\0\0\0\x02bc";
    /// let (framing, mut input, mut buf) = (Framing::new(), &wire[..], Vec::new());
    /// let mut frames = Vec::new();
    /// while framing.read_frame_into(&mut input, &mut buf)? {
    ///     frames.push(String::from_utf8_lossy(&buf).into_owned());
    /// }
    /// assert_eq!(frames, ["a", "bc"]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`read_frame`](Self::read_frame).
    pub fn read_frame_into<R: Read + ?Sized>(
        &self,
        r: &mut R,
        buf: &mut Vec<u8>,
    ) -> io::Result<bool> {
        buf.clear();
        let width = self.header.width();
        let mut head = [0u8; 8];
        let got = read_full(r, &mut head[..width])?;
        if got == 0 {
            return Ok(false);
        }
        if got < width {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("truncated frame header: got {got} of {width} header bytes"),
            ));
        }
        let announced = self.header.decode(head)?;
        let len = usize::try_from(announced)
            .ok()
            .filter(|&n| n <= self.max_frame_size)
            .ok_or_else(|| {
                FrameError::TooLarge {
                    announced,
                    max: self.max_frame_size,
                }
                .into_io()
            })?;
        read_payload(r, len, buf).inspect_err(|_| buf.clear())?;
        Ok(true)
    }

    /// Serializes `value` as JSON and writes it as one frame (feature
    /// `json`).
    ///
    /// ```
    /// use socketserver::framing::Framing;
    /// use std::collections::BTreeMap;
    ///
    /// let header = BTreeMap::from([("op", "list")]);
    /// let mut wire = Vec::new();
    /// Framing::new().write_json(&mut wire, &header)?;
    /// assert_eq!(wire, b"\0\0\0\x0d{\"op\":\"list\"}");
    ///
    /// let back: Option<BTreeMap<String, String>> = Framing::new().read_json(&mut &wire[..])?;
    /// assert_eq!(back.unwrap()["op"], "list");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `value` cannot be serialized (a map with non-string keys,
    /// say) or is too large for one frame; otherwise as for
    /// [`write_frame`](Self::write_frame).
    #[cfg(feature = "json")]
    pub fn write_json<W, T>(&self, w: &mut W, value: &T) -> io::Result<()>
    where
        W: Write + ?Sized,
        T: Serialize + ?Sized,
    {
        let json = serde_json::to_vec(value)
            .map_err(|e| invalid_input(format!("cannot encode JSON frame: {e}")))?;
        self.write_frame(w, &json)
    }

    /// Reads one frame and parses it as JSON into a `T`. Returns `Ok(None)` at a
    /// clean end of stream, as [`read_frame`](Self::read_frame) does.
    ///
    /// # Errors
    ///
    /// `InvalidData` with serde's message (`invalid JSON frame: ...`) if the frame
    /// is not valid JSON for `T`; otherwise as for [`read_frame`](Self::read_frame).
    #[cfg(feature = "json")]
    pub fn read_json<R, T>(&self, r: &mut R) -> io::Result<Option<T>>
    where
        R: Read + ?Sized,
        T: DeserializeOwned,
    {
        match self.read_frame(r)? {
            None => Ok(None),
            Some(json) => serde_json::from_slice(&json)
                .map(Some)
                .map_err(|e| FrameError::BadJson(e).into_io()),
        }
    }
}

/// Writes one frame with the default [`Framing`].
///
/// # Errors
///
/// As for [`Framing::write_frame`].
pub fn write_frame<W: Write + ?Sized>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    Framing::new().write_frame(w, payload)
}

/// Reads one frame with the default [`Framing`]; `Ok(None)` at a clean end of
/// stream.
///
/// # Errors
///
/// As for [`Framing::read_frame`].
pub fn read_frame<R: Read + ?Sized>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    Framing::new().read_frame(r)
}

/// Writes `value` as one JSON frame with the default [`Framing`].
///
/// # Errors
///
/// As for [`Framing::write_json`].
#[cfg(feature = "json")]
pub fn write_json<W, T>(w: &mut W, value: &T) -> io::Result<()>
where
    W: Write + ?Sized,
    T: Serialize + ?Sized,
{
    Framing::new().write_json(w, value)
}

/// Reads one JSON frame with the default [`Framing`]; `Ok(None)` at a clean end
/// of stream.
///
/// # Errors
///
/// As for [`Framing::read_json`].
#[cfg(feature = "json")]
pub fn read_json<R, T>(r: &mut R) -> io::Result<Option<T>>
where
    R: Read + ?Sized,
    T: DeserializeOwned,
{
    Framing::new().read_json(r)
}

/// Copies exactly `n` raw (unframed) bytes from `r` to `w`, as the file-transfer
/// protocol does after a `put` or `get` header. Nothing beyond the `n` bytes is
/// read. Does not flush `w`.
///
/// To skip `n` bytes (a refused upload, say), copy them to [`io::sink()`].
///
/// ```
/// use socketserver::framing::copy_exact;
///
/// let mut input = &b"0123456789rest"[..];
/// let mut file = Vec::new();
/// copy_exact(&mut input, &mut file, 10)?;
/// assert_eq!(file, b"0123456789");
/// assert_eq!(input, b"rest");
///
/// let err = copy_exact(&mut input, &mut std::io::sink(), 10).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
/// assert_eq!(err.to_string(), "stream ended after 4 of 10 bytes");
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// `UnexpectedEof` (`stream ended after K of N bytes`) if `r` ends early, and the
/// reader's and writer's own errors.
pub fn copy_exact<R, W>(r: &mut R, w: &mut W, n: u64) -> io::Result<()>
where
    R: Read + ?Sized,
    W: Write + ?Sized,
{
    let copied = io::copy(&mut r.take(n), w)?;
    if copied < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("stream ended after {copied} of {n} bytes"),
        ));
    }
    Ok(())
}

/// Writes `head` then `body` with vectored writes until both are gone. The usual
/// case is a single `write_vectored` call.
fn write_all_vectored<W: Write + ?Sized>(
    w: &mut W,
    mut head: &[u8],
    mut body: &[u8],
) -> io::Result<()> {
    while !head.is_empty() {
        match w.write_vectored(&[IoSlice::new(head), IoSlice::new(body)]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole frame",
                ))
            }
            Ok(n) if n < head.len() => head = &head[n..],
            Ok(n) => {
                body = body.get(n - head.len()..).ok_or_else(|| {
                    io::Error::other("writer reported more bytes written than it was given")
                })?;
                head = &[];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    w.write_all(body)
}

/// Reads until `buf` is full or the stream ends; returns the number of bytes read.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads exactly `len` payload bytes into the empty `buf`. The buffer grows with
/// the data: each step at most doubles it (by at least [`READ_AHEAD`]) and never
/// past `len`, so memory follows what the peer really sent, not what it announced.
fn read_payload<R: Read + ?Sized>(r: &mut R, len: usize, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut filled = 0;
    while filled < len {
        let target = len.min(filled.saturating_add(filled.max(READ_AHEAD)));
        buf.reserve_exact(target - filled);
        buf.resize(target, 0);
        filled += read_full(r, &mut buf[filled..])?;
        if filled < target {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("truncated frame: got {filled} of {len} payload bytes"),
            ));
        }
    }
    Ok(())
}

fn too_big(len: u64, max: usize) -> String {
    format!("frame of {len} bytes exceeds the maximum of {max}")
}

/// Why a frame could not be read, carried inside the `InvalidData`
/// [`io::Error`] the readers return; it says whether the stream is still in
/// step (see [`FrameError::of`]).
///
/// ```
/// use socketserver::framing::{self, FrameError};
///
/// // A whole frame whose JSON is bad (feature `json`): answer it and
/// // read the next one.
/// #[cfg(feature = "json")]
/// {
///     let mut wire = Vec::new();
///     framing::write_frame(&mut wire, b"{not json")?;
///     framing::write_json(&mut wire, &42)?;
///     let mut input = &wire[..];
///     let err = framing::read_json::<_, u32>(&mut input).unwrap_err();
///     let why = FrameError::of(&err).unwrap();
///     assert!(matches!(why, FrameError::BadJson(_)));
///     assert!(why.stream_in_step());
///     assert_eq!(framing::read_json::<_, u32>(&mut input)?, Some(42));
/// }
///
/// // A header announcing too much: the stream is out of step, close it.
/// let mut input = &b"\xff\xff\xff\xffpayload"[..];
/// let err = framing::read_frame(&mut input).unwrap_err();
/// assert!(!FrameError::of(&err).unwrap().stream_in_step());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame was read whole but is not valid JSON for the type asked
    /// for. The stream is in step: the connection can answer and go on.
    #[cfg(feature = "json")]
    BadJson(serde_json::Error),
    /// The header announced more than the maximum frame size; the payload
    /// was not read, so the stream is out of step.
    TooLarge {
        /// The length in the header.
        announced: u64,
        /// The maximum frame size.
        max: usize,
    },
    /// A negative length in an [`Header::I32Le`] header; out of step.
    NegativeLength(i32),
}

impl FrameError {
    /// The `FrameError` inside `error`, if it is one.
    pub fn of(error: &io::Error) -> Option<&FrameError> {
        error.get_ref()?.downcast_ref::<FrameError>()
    }

    /// Whether the stream is still at a frame boundary, so that the
    /// connection can report the error and read the next frame.
    pub fn stream_in_step(&self) -> bool {
        match self {
            #[cfg(feature = "json")]
            FrameError::BadJson(_) => true,
            _ => false,
        }
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "json")]
            FrameError::BadJson(e) => write!(f, "invalid JSON frame: {e}"),
            FrameError::TooLarge { announced, max } => f.write_str(&too_big(*announced, *max)),
            FrameError::NegativeLength(n) => {
                write!(f, "negative frame length {n} in an I32Le header")
            }
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "json")]
            FrameError::BadJson(e) => Some(e),
            _ => None,
        }
    }
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}
