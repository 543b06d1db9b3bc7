//! Read (idle) and write timeouts on connections: slowloris clients are cut
//! off and cannot keep a new client from being served.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use socketserver::{Green, Server, Strategy, StreamRequest, Threading};
use socketserver_tests::*;

fn echo(req: &mut StreamRequest) -> io::Result<()> {
    req.echo().map(drop)
}

/// Reads until EOF or error; returns how long that took.
fn time_to_close(mut c: TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => {}
        }
    }
}

fn an_idle_connection_is_closed_after_the_read_timeout(strategy: impl Strategy) {
    let server = Server::builder()
        .strategy(strategy)
        .read_timeout(Some(Duration::from_millis(200)))
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let running = Running::start(server);
    let mut c = tcp_client(&running.address);
    assert_eq!(stream_roundtrip(&mut c, b"hi").unwrap(), b"hi");
    // Then silence: the server gives up on it.
    let took = time_to_close(c);
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    running.stop();
}

fn slowloris_clients_are_cut_off_and_do_not_block_a_new_client(strategy: impl Strategy) {
    let server = Server::builder()
        .strategy(strategy)
        .max_connections(Some(600))
        .read_timeout(Some(Duration::from_secs(2)))
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    // 500 clients that connect and send one byte, then nothing.
    let slow: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut c = tcp_client(&addr);
            c.write_all(b".").unwrap();
            c
        })
        .collect();
    // A new client is still served at once.
    let start = Instant::now();
    let mut c = tcp_client(&addr);
    assert_eq!(stream_roundtrip(&mut c, b"served").unwrap(), b"served");
    let took = start.elapsed();
    eprintln!("slowloris: with 500 slow clients connected, a new client was served in {took:?}");
    // Served before the read timeout cut the slow clients: the last 100 to
    // connect (the first ones may be cut already if connecting 500 took
    // the machine longer than the timeout) are still connected: their
    // echoed byte may be waiting, then a read would block; no EOF.
    let checked_from = slow.len() - 100;
    let slow: Vec<(TcpStream, bool)> = slow
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            if i < checked_from {
                return (s, false);
            }
            s.set_nonblocking(true).unwrap();
            let mut echoed = false;
            loop {
                match (&s).read(&mut [0u8; 1]) {
                    Ok(0) => {
                        panic!("a slow client was cut before the new one was served ({took:?})")
                    }
                    Ok(_) => echoed = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("a slow client: {e}"),
                }
            }
            s.set_nonblocking(false).unwrap();
            (s, echoed)
        })
        .collect();
    drop(c);
    // And every slow client is cut off by the read timeout.
    within(DEADLINE, "500 slow clients cut off", move || {
        for (s, echoed) in slow {
            let mut s = s;
            if !echoed {
                let mut dot = [0u8; 1];
                s.read_exact(&mut dot).unwrap(); // the echo of its byte
            }
            assert!(time_to_close(s) < Duration::from_secs(5));
        }
    });
    running.stop();
}

fn a_client_that_never_reads_is_cut_off_by_the_write_timeout(strategy: impl Strategy) {
    let server = Server::builder()
        .strategy(strategy)
        .write_timeout(Some(Duration::from_millis(300)))
        .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
            let chunk = vec![b'x'; 64 * 1024];
            loop {
                req.write_all(&chunk)?; // fails once the peer's window is full
            }
        })
        .unwrap();
    let logs = LogCapture::install();
    let running = Running::start(server);
    let c = tcp_client(&running.address);
    let port = c.local_addr().unwrap().port().to_string();
    // The handler's error names the peer and is logged at info level.
    logs.wait_for(log::Level::Info, &[&port, "timed out"]);
    drop(c);
    running.stop();
}

fn a_busy_connection_is_closed_at_its_max_lifetime(strategy: impl Strategy) {
    let server = Server::builder()
        .strategy(strategy)
        .max_lifetime(Some(Duration::from_millis(300)))
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let running = Running::start(server);
    let mut c = tcp_client(&running.address);
    let start = Instant::now();
    // Busy all the time: an echo every 20 ms, until the server ends it.
    let ended = loop {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still open after 5 s"
        );
        if stream_roundtrip(&mut c, b"ping").is_err() {
            break start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        ended >= Duration::from_millis(300),
        "closed early, after {ended:?}"
    );
    running.stop();
}

socketserver_tests::per_strategy! {
    [
        an_idle_connection_is_closed_after_the_read_timeout,
        slowloris_clients_are_cut_off_and_do_not_block_a_new_client,
        a_client_that_never_reads_is_cut_off_by_the_write_timeout,
        a_busy_connection_is_closed_at_its_max_lifetime,
    ]
    threading: Threading::new().stack_size(128 * 1024);
    green: Green::new().threads(2);
}
