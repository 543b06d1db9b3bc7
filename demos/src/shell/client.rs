//! The remote shell's client: [`Session`] (connect, authenticate, run
//! commands) and what `demos shell run` does with it ([`run_commands`],
//! [`interactive`]).

use std::io::{self, BufRead, Write};
use std::time::Duration;

use socketserver::auth::{self, Key};
use socketserver::framing::{self, Framing};
use socketserver::{Address, Conn};

use super::{Reply, ReplyHeader, MAX_OUTPUT_LIMIT};
use crate::net::url;
use crate::tls::{ClientTls, Stream};

/// An authenticated connection to a shell server.
///
/// While a session is open its TCP socket is set to reset the connection
/// if the process dies (`SO_LINGER` 0): a client killed with ^C in the
/// middle of a command resets the connection, and the server kills the
/// command's process group at once instead of letting it run to its
/// timeout. Dropping the session closes it normally.
#[derive(Debug)]
pub struct Session {
    conn: Stream,
    url: String,
}

impl Session {
    /// Connects to `addr` and authenticates with `key`; every wait (the
    /// connection, the handshake, each reply) is bounded by `timeout`.
    ///
    /// # Errors
    ///
    /// The connection's errors, or `PermissionDenied` (`authentication
    /// refused ...`) for a wrong key; the message names the server.
    pub fn connect(addr: &Address, key: &Key, timeout: Duration) -> io::Result<Session> {
        Session::connect_tls(addr, key, None, timeout)
    }

    /// [`connect`](Self::connect), over TLS when `tls` is given: the TLS
    /// handshake first (the server's certificate checked), then the HMAC
    /// authentication inside the session.
    ///
    /// # Errors
    ///
    /// Those of [`connect`](Self::connect), and `InvalidData` (`TLS: ...`,
    /// see [`describe`](crate::tls::describe)) when the TLS session fails.
    pub fn connect_tls(
        addr: &Address,
        key: &Key,
        tls: Option<&ClientTls>,
        timeout: Duration,
    ) -> io::Result<Session> {
        let url = url(addr, false);
        let context = |e: io::Error| io::Error::new(e.kind(), format!("{url}: {e}"));
        let mut conn = crate::tls::connect(addr, tls, timeout).map_err(context)?;
        auth::client_handshake(&mut conn, key)
            .map_err(|e| crate::tls::first_exchange_error(e, &url, tls.is_some()))?;
        set_linger_zero(conn.conn(), true);
        Ok(Session { conn, url })
    }

    /// How long to wait for a reply (`None`: as long as it takes; the
    /// server's own command timeout still applies).
    pub fn set_reply_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.conn.set_read_timeout(timeout)
    }

    /// Runs one command line on the server and returns its reply.
    ///
    /// # Errors
    ///
    /// The connection's errors (a reply that does not come within the
    /// timeout is `WouldBlock` or `TimedOut`), and `InvalidData` if the
    /// server does not speak the protocol.
    pub fn run(&mut self, command: &str) -> io::Result<Reply> {
        let context = |e: io::Error| {
            let hint = match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    "no reply in time".to_owned()
                }
                _ => e.to_string(),
            };
            io::Error::new(e.kind(), format!("{}: {hint}", self.url))
        };
        framing::write_frame(&mut &self.conn, command.as_bytes()).map_err(context)?;
        let mut r = io::BufReader::new(&self.conn);
        let header: ReplyHeader = framing::read_json(&mut r)
            .map_err(context)?
            .ok_or_else(|| closed(&self.url))?;
        let body = Framing::new().with_max_frame_size(MAX_OUTPUT_LIMIT + 4096);
        let stdout = body
            .read_frame(&mut r)
            .map_err(context)?
            .ok_or_else(|| closed(&self.url))?;
        let stderr = body
            .read_frame(&mut r)
            .map_err(context)?
            .ok_or_else(|| closed(&self.url))?;
        let extra = r.buffer().len();
        if extra == 0
            && stdout.len() as u64 == header.stdout
            && stderr.len() as u64 == header.stderr
        {
            return Ok(Reply {
                header,
                stdout,
                stderr,
            });
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: the reply does not match its header {header:?} ({} + {} bytes, {} extra)",
                self.url,
                stdout.len(),
                stderr.len(),
                extra
            ),
        ))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A normal close (FIN), not a reset; under TLS a close_notify
        // first.
        set_linger_zero(self.conn.conn(), false);
        self.conn.close_notify();
    }
}

fn closed(url: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("{url}: the server closed the connection"),
    )
}

/// `SO_LINGER` with a zero timeout (`on`) or off, on a TCP socket; a
/// failure only loses the early kill, so it is ignored.
fn set_linger_zero(conn: &Conn, on: bool) {
    if let Some(tcp) = conn.as_tcp() {
        // A Unix socket's peer sees a hang-up on close anyway.
        let _ = socket2::SockRef::from(tcp).set_linger(on.then_some(Duration::ZERO));
    }
}

/// The exit status `demos shell run` uses for a reply: the remote exit
/// code (0 to 255), or 1 when there is none (killed by a signal, timed
/// out) or it is out of range.
pub fn exit_status(header: &ReplyHeader) -> u8 {
    header
        .exit_code
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(1)
}

/// Writes a reply as `demos shell run` shows it: stdout bytes to `out`,
/// stderr bytes to `err`, both as they are (not decoded), then a line on
/// `err` if the server cut the output or there is no exit code. Returns
/// [`exit_status`].
pub fn show(reply: &Reply, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u8> {
    out.write_all(&reply.stdout)?;
    out.flush()?;
    err.write_all(&reply.stderr)?;
    let h = &reply.header;
    if h.truncated {
        writeln!(
            err,
            "demos: output truncated by the server (its --max-output cap)"
        )?;
    }
    if h.timed_out {
        writeln!(
            err,
            "demos: the command timed out on the server; exit status 1"
        )?;
    } else if h.exit_code.is_none() {
        writeln!(
            err,
            "demos: the command was killed by a signal; exit status 1"
        )?;
    }
    err.flush()?;
    Ok(exit_status(h))
}

/// Runs one command line and shows its reply; returns the exit status.
pub fn run_commands(
    session: &mut Session,
    command: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<u8> {
    let reply = session.run(command)?;
    show(&reply, out, err)
}

/// The interactive mode of `demos shell run`: each line of `input` is a
/// command; `exit` or `quit` alone, or the end of input, leaves. With a
/// `prompt` (stdin is a terminal), it is written to `err` before each line
/// and a non-zero exit status is shown as `[exit N]`. Returns the last
/// command's exit status.
pub fn interactive(
    session: &mut Session,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    prompt: Option<&str>,
) -> io::Result<u8> {
    let mut last = 0;
    let mut line = String::new();
    loop {
        if let Some(p) = prompt {
            write!(err, "{p}")?;
            err.flush()?;
        }
        line.clear();
        if input.read_line(&mut line)? == 0 {
            if prompt.is_some() {
                writeln!(err)?;
            }
            break;
        }
        let command = line.trim_end_matches(['\n', '\r']);
        match command.trim() {
            "" => continue,
            "exit" | "quit" => break,
            _ => {}
        }
        last = run_commands(session, command, out, err)?;
        if prompt.is_some() && last != 0 {
            writeln!(err, "[exit {last}]")?;
        }
    }
    Ok(last)
}
