//! Remote shell: the textbook remote command runner (`subprocess.Popen(cmd,
//! shell=True)` behind a socket), made safe to leave running.
//!
//! # Protocol (`docs/protocols.md`, "The remote shell", says why each rule is there)
//!
//! Every message is a frame of [`socketserver::framing`]: a 4-byte
//! big-endian length, then the payload.
//!
//! 1. Authentication first ([`socketserver::auth`]): the server sends a
//!    32-byte challenge, the client answers with HMAC-SHA256(key,
//!    challenge), the server sends `OK` or closes.
//! 2. Then each request is one frame holding a UTF-8 command line; the
//!    reply is three frames: the JSON header [`ReplyHeader`]
//!    (`{"exit_code": int or null, "stdout": N, "stderr": M, "truncated":
//!    bool, "timed_out": bool}`), then N bytes of stdout, then M bytes of
//!    stderr, as the command wrote them (not necessarily UTF-8).
//! 3. The connection stays open for more commands until the client closes
//!    it.
//!
//! # What the server does with a command
//!
//! * `cd DIR` is a builtin that changes the session's directory (each
//!   connection has its own, starting in [`ShellConfig::start_dir`]); see
//!   [`cd_request`] for exactly which lines count as `cd`.
//! * Everything else runs as `/bin/sh -c COMMAND` in the session's
//!   directory, in a process group of its own, stdin from `/dev/null`,
//!   stdout and stderr captured separately and concurrently (see
//!   [`exec`]).
//! * At [`ShellConfig::timeout`] the whole process group is killed:
//!   `timed_out` is true, `exit_code` null.
//! * Each stream keeps its first [`ShellConfig::max_output`] bytes; the
//!   rest is read and discarded (the command runs on, so its exit code
//!   still means something) and `truncated` is true.
//! * `exit_code` is null when the command was killed by a signal or timed
//!   out; the server then appends one line saying which to the stderr
//!   bytes (`demos shell: killed by signal 9 (SIGKILL)`), after the
//!   command's own output and the cap.
//! * A command line that is not UTF-8, or holds a NUL byte, is not run:
//!   exit code 2 and a line on stderr, as a shell does for a syntax error.
//! * When the client goes away while a command runs (it closes or
//!   half-closes the connection, its process dies, the connection is reset
//!   or cut by the server's shutdown), the command's process group is
//!   killed at once. A client keeps its sending side open until the reply
//!   has come.
//! * The stderr frame always fits the frame limit (16 MiB): when the
//!   command's own stderr fills it, it is cut to leave room for the
//!   server's note, and `truncated` is true.
//!
//! # Security
//!
//! Commands run as the server's user with its environment: whoever holds
//! the key can do anything that user can. The key never crosses the wire,
//! but without TLS (`--tls-cert`/`--tls-key`) nothing after the handshake is
//! encrypted or protected: on a network you do not trust, serve it with TLS.
//! The CLI refuses a non-loopback address unless TLS is on with client
//! certificates or the key required, or `--allow-remote` is given.
//!
//! # Limits
//!
//! * A process that leaves the command's process group on purpose
//!   (`setsid`, `setpgid`) escapes the timeout and the cleanup.
//! * Under the `Forking` strategy, the server's shutdown ends a session
//!   process still running at the drain deadline with SIGTERM (a ^C in
//!   the server's terminal, with SIGINT); the session process then kills
//!   its running command's group first. Under `Threading` and `Pool`, the
//!   drain's cut of the connection kills it. A SIGKILL to the server or a
//!   session process leaves the command running.
//! * `truncated` and the cap apply to each stream separately; a command
//!   that writes forever runs until its timeout.

pub mod cli;
pub mod client;
pub mod exec;
mod protocol;
mod server;
mod session;

pub use protocol::{Reply, ReplyHeader, COMMAND_FRAMING, MAX_COMMAND, MAX_OUTPUT_LIMIT};
pub use server::{
    needs_allow_remote, Shell, ShellConfig, AUTH_TIMEOUT, DEFAULT_IDLE, DEFAULT_MAX_OUTPUT,
    DEFAULT_MAX_UNAUTHENTICATED, DEFAULT_TIMEOUT,
};
pub use session::{cd_request, CdTarget};
