//! Clients that drive the demo servers and check what they answer: used by
//! `demos showcase` and by the tests, in-process or against the binary.
//! Echo clients, chat members and whole chat sessions ([`Member`],
//! [`chat_scenario`]), and a demo server run as a child process
//! ([`ServerProcess`]).
//!
//! Every wait here is bounded: sockets get read and write timeouts, loops
//! check a deadline, and errors say what was expected.

mod chat;
mod process;

pub use chat::{
    chat_scenario, udp_chat_scenario, ChatOutcome, ChatPlan, Member, Peer, UdpOutcome, TALK_WINDOW,
};
pub use process::{wait_child, ServerProcess};

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socketserver::Address;

use crate::net::{connect_stream, DatagramClient};

/// Default bound on one blocking step (a connect, a read, a reply).
pub const STEP: Duration = Duration::from_secs(5);

pub(crate) fn fail(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// `len` pseudo-random bytes (every byte value occurs, no line structure),
/// the same for the same `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sends `data` over a new stream connection (from a second thread) while
/// reading the echo on this one; closes its sending side at the end and
/// returns everything received until the server closed. At most
/// `deadline` in all.
pub fn stream_echo(addr: &Address, data: &[u8], deadline: Duration) -> io::Result<Vec<u8>> {
    let end = Instant::now() + deadline;
    let conn = connect_stream(addr, deadline.min(STEP))?;
    let sender = conn.try_clone()?;
    thread::scope(|s| {
        let writer = s.spawn(|| {
            (&sender).write_all(data)?;
            sender.shutdown(Shutdown::Write)
        });
        let mut back = Vec::with_capacity(data.len());
        let mut buf = vec![0u8; 64 * 1024];
        let read = loop {
            if Instant::now() > end {
                break Err(fail(format!(
                    "echo from {addr}: {} of {} bytes after {deadline:?}",
                    back.len(),
                    data.len()
                )));
            }
            match (&conn).read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => back.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if read.is_err() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        let written = writer.join().map_err(|_| fail("writer thread panicked"))?;
        read?;
        written?;
        Ok(back)
    })
}

/// Sends one datagram and returns the reply (waits at most `timeout`).
pub fn datagram_echo(addr: &Address, data: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let sock = DatagramClient::connect(addr, timeout)?;
    sock.send(data)?;
    let mut buf = vec![0u8; 65_536];
    let n = sock.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Microseconds since the Unix epoch: a timestamp that two processes on
/// one machine agree on.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
