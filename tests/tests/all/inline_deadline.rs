//! Under `Synchronous` the request runs in the loop's own thread, so nothing
//! else runs while it does. A stop asked meanwhile still obeys the close
//! deadline: the running request gets `close_timeout`, then its connection
//! is cut, and `serve_forever` returns, however long the handler meant to
//! wait.

use std::io::{self, BufRead, Read, Write};
use std::time::{Duration, Instant};

use socketserver::{Server, StreamRequest, Synchronous};
use socketserver_tests::*;

const CLOSE: Duration = Duration::from_secs(1);

/// Reads a line, then waits for more bytes outside any message (so no
/// message boundary lets a stop in): only a cut ends that wait before its
/// minute is up.
fn stubborn(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    req.read_line(&mut line)?;
    req.write_all(b"working\n")?;
    req.flush()?;
    let mut buf = [0u8; 1];
    let _ = req.stream().read(&mut buf);
    Ok(())
}

#[test]
fn a_stop_cuts_the_inline_request_at_the_close_deadline() {
    let server = Server::builder()
        .strategy(Synchronous)
        .close_timeout(CLOSE)
        .read_timeout(Some(Duration::from_secs(60)))
        .tcp("127.0.0.1:0", stubborn)
        .unwrap();
    let running = Running::start(server);
    let mut c = tcp_client(&running.address);
    c.write_all(b"go\n").unwrap();
    let mut line = String::new();
    io::BufReader::new(&c).read_line(&mut line).unwrap();
    assert_eq!(line, "working\n");
    let asked = Instant::now();
    running.handle.shutdown();
    running.wait(CLOSE + PROMPT).unwrap();
    let took = asked.elapsed();
    assert!(
        took >= CLOSE.mul_f32(0.9),
        "cut before the deadline: {took:?}"
    );
    eprintln!(
        "stop with a stubborn inline request: returned after {took:?} (close_timeout {CLOSE:?})"
    );
    // The client saw its connection end.
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
}

#[test]
fn an_idle_synchronous_server_stops_at_once() {
    let server = Server::builder()
        .strategy(Synchronous)
        .close_timeout(CLOSE)
        .tcp("127.0.0.1:0", stubborn)
        .unwrap();
    let running = Running::start(server);
    let took = running.stop();
    assert!(took < PROMPT, "{took:?}");
}
