//! Echo: the first server every socket tutorial writes, under any strategy
//! and over TCP, UDP or Unix sockets.
//!
//! TCP (or Unix stream) echoes bytes back as they arrive, in any chunking,
//! binary safe; UDP (or Unix datagram) answers each datagram with itself.
//! With `upper`, ASCII letters come back uppercased, the classic
//! `conn.send(data.upper())` of a first Python echo server.
//!
//! The whole server is [`Echo`]: one short handler for each transport kind.

use std::io::{self, BufRead, Read, Write};
use std::time::Duration;

use socketserver::{Address, DatagramHandler, DatagramRequest, StreamHandler, StreamRequest};

use crate::net::{self, DatagramClient};

/// The echo handler, for streams and datagrams alike.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo {
    /// Uppercase ASCII letters on the way back (`--upper`).
    pub upper: bool,
}

impl StreamHandler for Echo {
    fn handle_error(&self, peer: &socketserver::Address, error: &socketserver::RequestError) {
        crate::logging::log_client_error("echo", peer, error);
    }

    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let peer = req.peer_addr().clone();
        log::info!("echo: {peer} connected");
        let bytes = if self.upper {
            // On the heap: a 16 KiB array in this frame would be touched
            // page by page by the stack probe on every call, upper or not,
            // costing 16 KiB of RSS per idle connection (`demos compare`,
            // idle cells).
            let mut buf = vec![0u8; 16 * 1024];
            let mut total = 0u64;
            loop {
                // One message per chunk, as `echo` does: idle in between,
                // so a graceful close ends a silent client at once.
                let n = req.read_message(|r| r.read(&mut buf))?;
                if n == 0 {
                    break total;
                }
                buf[..n].make_ascii_uppercase();
                req.write_all(&buf[..n])?;
                total += n as u64;
            }
        } else {
            req.echo()?
        };
        log::info!("echo: {peer} closed after {bytes} bytes");
        Ok(())
    }
}

impl DatagramHandler for Echo {
    fn handle_error(&self, peer: &socketserver::Address, error: &socketserver::RequestError) {
        crate::logging::log_client_error("echo", peer, error);
    }

    fn handle(&self, req: &mut DatagramRequest) -> io::Result<()> {
        let mut data = req.take_data();
        log::debug!("echo: {} bytes from {}", data.len(), req.peer_addr());
        if self.upper {
            data.make_ascii_uppercase();
        }
        req.reply(&data)
    }
}

/// What `demos echo client` does: sends each message (a line over a stream,
/// a datagram over UDP), reads the echo and prints it, one line per reply.
/// `messages` empty means: the lines of `input`. Every wait is bounded by
/// `timeout`; the error says which server and what went wrong, in one line.
/// With `tls` (stream only), the connection is a TLS session.
pub fn client(
    addr: &Address,
    udp: bool,
    tls: Option<&crate::tls::ClientTls>,
    messages: &[String],
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    timeout: Duration,
) -> io::Result<()> {
    let url = net::url(addr, udp);
    let context = |what: &str, e: io::Error| {
        let hint = match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                format!("no reply within {timeout:?}")
            }
            io::ErrorKind::ConnectionRefused if udp => {
                "connection refused (is an echo server listening there with --udp?)".into()
            }
            _ => e.to_string(),
        };
        io::Error::new(e.kind(), format!("{what} {url}: {hint}"))
    };
    let mut next_message = {
        let mut given = messages.iter();
        let from_args = !messages.is_empty();
        move || -> io::Result<Option<String>> {
            if from_args {
                return Ok(given.next().cloned());
            }
            let mut line = String::new();
            Ok((input.read_line(&mut line)? > 0)
                .then(|| line.trim_end_matches(['\r', '\n']).to_owned()))
        }
    };
    if udp {
        let sock = DatagramClient::connect(addr, timeout).map_err(|e| context("connect", e))?;
        let mut buf = vec![0u8; 65_536];
        while let Some(msg) = next_message()? {
            sock.send(msg.as_bytes())
                .map_err(|e| context("send to", e))?;
            let n = sock
                .recv(&mut buf)
                .map_err(|e| context("receive from", e))?;
            writeln!(out, "{}", String::from_utf8_lossy(&buf[..n]))?;
            out.flush()?;
        }
    } else {
        let conn = crate::tls::connect(addr, tls, timeout).map_err(|e| context("connect", e))?;
        let mut reader = io::BufReader::new(&conn);
        while let Some(msg) = next_message()? {
            (&conn)
                .write_all(format!("{msg}\n").as_bytes())
                .map_err(|e| context("send to", e))?;
            // The echo has exactly as many bytes as were sent.
            let mut back = vec![0u8; msg.len() + 1];
            reader.read_exact(&mut back).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => io::Error::new(
                    e.kind(),
                    format!("receive from {url}: the server closed the connection"),
                ),
                _ => context("receive from", e),
            })?;
            back.pop();
            writeln!(out, "{}", String::from_utf8_lossy(&back))?;
            out.flush()?;
        }
        conn.close_notify();
    }
    Ok(())
}
