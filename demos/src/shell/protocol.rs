//! The remote shell's wire format: the limits of a command frame and the
//! three frames of a reply (see the [module docs](super) and
//! `docs/protocols.md`).

use std::io::{self, Write};

use serde::{Deserialize, Serialize};
use socketserver::framing::{Framing, DEFAULT_MAX_FRAME_SIZE};

/// The largest `max_output`: one reply frame (16 MiB).
pub const MAX_OUTPUT_LIMIT: usize = DEFAULT_MAX_FRAME_SIZE;

/// The longest command line accepted, in bytes (a frame announcing more
/// closes the connection).
pub const MAX_COMMAND: usize = 64 * 1024;

/// The framing of command frames (server side): at most [`MAX_COMMAND`].
pub const COMMAND_FRAMING: Framing = Framing::new().with_max_frame_size(MAX_COMMAND);

/// The reply's first frame (exactly these fields; see `docs/protocols.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyHeader {
    /// The exit status; `None` (JSON null) if killed by a signal or timed out.
    pub exit_code: Option<i32>,
    /// Bytes of stdout in the second frame.
    pub stdout: u64,
    /// Bytes of stderr in the third frame.
    pub stderr: u64,
    /// Whether stdout or stderr was cut at the server's cap.
    pub truncated: bool,
    /// Whether the command was killed at the server's timeout.
    pub timed_out: bool,
}

/// A full reply: the header and both streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The JSON header.
    pub header: ReplyHeader,
    /// What the command wrote to stdout (up to the cap).
    pub stdout: Vec<u8>,
    /// What it wrote to stderr (up to the cap), plus the server's note if
    /// it was killed.
    pub stderr: Vec<u8>,
}

impl Reply {
    /// A reply from bytes; the header's counts follow the bytes.
    pub fn new(
        exit_code: Option<i32>,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        truncated: bool,
        timed_out: bool,
    ) -> Reply {
        Reply {
            header: ReplyHeader {
                exit_code,
                stdout: stdout.len() as u64,
                stderr: stderr.len() as u64,
                truncated,
                timed_out,
            },
            stdout,
            stderr,
        }
    }

    /// A failure that ran nothing: `exit_code`, and `message` as stderr.
    pub(crate) fn failure(exit_code: i32, message: String) -> Reply {
        Reply::new(
            Some(exit_code),
            Vec::new(),
            format!("{message}\n").into_bytes(),
            false,
            false,
        )
    }

    /// Writes the three frames and flushes.
    pub fn write_to<W: Write + ?Sized>(&self, w: &mut W) -> io::Result<()> {
        let framing = Framing::new();
        framing.write_json(w, &self.header)?;
        framing.write_frame(w, &self.stdout)?;
        framing.write_frame(w, &self.stderr)?;
        w.flush()
    }
}
