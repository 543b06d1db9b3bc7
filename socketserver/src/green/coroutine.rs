//! What a green coroutine is to its worker: why it suspends, why it is
//! resumed, how it ended, and whom it serves (for logs).

use std::os::fd::RawFd;
use std::time::Instant;

use corosensei::Coroutine;

use super::stacks::SlabStack;

/// Why a coroutine suspends itself.
pub(crate) enum Suspend {
    /// Until `fd` is readable (or writable, `write`), `also` (if any) is
    /// readable, or `deadline` passes.
    Io {
        fd: RawFd,
        write: bool,
        also: Option<RawFd>,
        deadline: Option<Instant>,
    },
    /// Until `Instant`.
    Sleep(Instant),
    /// Until this closure has run on a helper thread.
    Blocking(Box<dyn FnOnce() + Send>),
    /// Until another coroutine of this worker wakes it (a companion it
    /// joins ends).
    Park,
}

/// Why a coroutine was resumed.
#[derive(Debug)]
pub(crate) enum Resume {
    /// What it waited for may have happened (wake-ups can be spurious: retry).
    Ready,
    /// Its deadline passed.
    TimedOut,
    /// It is a companion whose request ended: it is to stop waiting (and
    /// end).
    Cancelled,
}

/// How a coroutine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Its body returned.
    Returned,
    /// It ran into the guard below its stack: its body was abandoned where
    /// it stood, its stack reset (see `overflow`).
    Overflowed,
}

/// The yielder of a worker's coroutines.
pub(crate) type Yielder = corosensei::Yielder<Resume, Suspend>;

/// A worker's coroutine, on a stack of its slabs.
pub(crate) type Co = Coroutine<Resume, Suspend, Ended, SlabStack>;

/// Whom a coroutine serves, for logs.
pub(crate) enum Who {
    /// A request from this peer.
    Peer(crate::Address),
    /// The loop of the server at this URL.
    Loop(String),
    /// A companion of this request (see `companion`).
    Companion(String),
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::Peer(a) => write!(f, "request for {a}"),
            Who::Loop(url) => write!(f, "server loop of {url}"),
            Who::Companion(of) => write!(f, "companion of the {of}"),
        }
    }
}
