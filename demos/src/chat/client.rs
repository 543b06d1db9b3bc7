//! `demos chat client`: joins a room with a nickname, sends each line of
//! the input, and prints every line from the room as it comes.
//!
//! The calling thread reads from the server and prints; a second thread
//! reads the input and sends. At the end of the input (or after `/quit`) the
//! client says `/quit` and waits, at most `timeout`, for the server's
//! goodbye. When the server closes the connection, the client ends at once.
//! What the server sends is printed with control, invisible and
//! bidirectional characters shown as escapes
//! ([`crate::text::escape_for_terminal`]).

use std::io::{self, BufRead, BufReader, Write};
use std::thread;
use std::time::Duration;

use socketserver::Address;

use crate::net::{self, DatagramClient};
use crate::text::escape_for_terminal;

/// Runs the client until the room or the input ends. `Err` if the server
/// cannot be reached or refuses the nickname (one line, for the terminal).
pub fn run(
    addr: &Address,
    nick: &str,
    udp: bool,
    input: Box<dyn BufRead + Send>,
    out: &mut dyn Write,
    timeout: Duration,
) -> io::Result<()> {
    if udp {
        run_udp(addr, nick, input, out, timeout)
    } else {
        run_tcp(addr, nick, input, out, timeout)
    }
}

fn refused(url: &str, nick: &str, line: &str) -> io::Error {
    let why = line.trim_end().trim_start_matches("* ");
    let why = why.trim_end_matches("; send another nickname");
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{url} refused the nickname {nick:?}: {why}"),
    )
}

fn unreachable(url: &str, timeout: Duration, e: io::Error) -> io::Error {
    let why = if is_timeout(&e) {
        format!("no answer within {timeout:?}")
    } else {
        e.to_string()
    };
    io::Error::new(e.kind(), format!("cannot join the chat at {url}: {why}"))
}

/// Lines of `input`, sent one by one through `send`, then `/quit`.
fn pump(mut input: Box<dyn BufRead + Send>, mut send: impl FnMut(&str) -> io::Result<()>) {
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = line.trim_end_matches(['\r', '\n']);
        if send(text).is_err() || text == "/quit" {
            return;
        }
    }
    let _ = send("/quit");
}

fn run_tcp(
    addr: &Address,
    nick: &str,
    input: Box<dyn BufRead + Send>,
    out: &mut dyn Write,
    timeout: Duration,
) -> io::Result<()> {
    let url = net::url(addr, false);
    let conn = net::connect_stream(addr, timeout).map_err(|e| unreachable(&url, timeout, e))?;
    (&conn)
        .write_all(format!("{nick}\n").as_bytes())
        .map_err(|e| unreachable(&url, timeout, e))?;
    let mut from_server = BufReader::new(conn.try_clone()?);
    let mut welcome = String::new();
    from_server
        .read_line(&mut welcome)
        .map_err(|e| unreachable(&url, timeout, e))?;
    if !welcome.starts_with("* welcome") {
        return Err(refused(&url, nick, &welcome));
    }
    out.write_all(escape_for_terminal(&welcome).as_bytes())?;
    out.flush()?;
    conn.set_read_timeout(None)?;
    let sender = conn.try_clone()?;
    thread::Builder::new()
        .name("chat input".into())
        .spawn(move || {
            pump(input, |text| {
                (&sender).write_all(format!("{text}\n").as_bytes())
            });
            // From now on, wait for the goodbye only so long.
            let _ = sender.set_read_timeout(Some(timeout));
        })?;
    let mut line = String::new();
    loop {
        line.clear();
        match from_server.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                out.write_all(escape_for_terminal(&line).as_bytes())?;
                out.flush()?;
            }
            Err(e) if is_timeout(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn run_udp(
    addr: &Address,
    nick: &str,
    input: Box<dyn BufRead + Send>,
    out: &mut dyn Write,
    timeout: Duration,
) -> io::Result<()> {
    let url = net::url(addr, true);
    let sock = DatagramClient::connect(addr, timeout).map_err(|e| unreachable(&url, timeout, e))?;
    sock.send(format!("/nick {nick}").as_bytes())
        .map_err(|e| unreachable(&url, timeout, e))?;
    let mut buf = vec![0u8; 65_536];
    let n = sock
        .recv(&mut buf)
        .map_err(|e| unreachable(&url, timeout, e))?;
    let welcome = String::from_utf8_lossy(&buf[..n]).into_owned();
    if !welcome.starts_with("* welcome") {
        return Err(refused(&url, nick, &welcome));
    }
    writeln!(out, "{}", escape_for_terminal(&welcome))?;
    out.flush()?;
    sock.set_read_timeout(None)?;
    let sender = sock.try_clone()?;
    thread::Builder::new()
        .name("chat input".into())
        .spawn(move || {
            pump(input, |text| sender.send(text.as_bytes()).map(drop));
            let _ = sender.set_read_timeout(Some(timeout));
        })?;
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                writeln!(out, "{}", escape_for_terminal(&text))?;
                out.flush()?;
                if text == "* bye" {
                    return Ok(());
                }
            }
            Err(e) if is_timeout(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// A read that ran into its timeout (the server went quiet).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
