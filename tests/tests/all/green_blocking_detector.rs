//! `Green`'s blocking detector: a handler that blocks its worker a little
//! on every request (here `std::thread::sleep(5 ms)`, no single stall long
//! enough for the 100 ms warning) is reported within 2 s, by peer, and
//! counted in `Stats::green_blocked_ms`; a handler that never blocks is not.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socketserver::{Green, Server, StreamRequest};
use socketserver_tests::*;

/// A line echo server of one worker; each line first sleeps `nap` (the
/// thread, not the coroutine) when `nap` is not zero.
fn server(
    nap: Duration,
) -> Arc<Server<socketserver::transport::Tcp, Green, impl socketserver::StreamHandler>> {
    let server = Server::builder()
        .strategy(Green::new().threads(1))
        .tcp("127.0.0.1:0", move |req: &mut StreamRequest| {
            let mut line = String::new();
            while req.read_line(&mut line)? > 0 {
                if !nap.is_zero() {
                    std::thread::sleep(nap);
                }
                req.write_all(line.as_bytes())?;
                line.clear();
            }
            Ok(())
        })
        .unwrap();
    Arc::new(server)
}

fn ask(c: &mut TcpStream) {
    c.write_all(b"ping\n").unwrap();
    let mut reply = String::new();
    BufReader::new(c).read_line(&mut reply).unwrap();
    assert_eq!(reply, "ping\n");
}

/// Twenty requests at once, then their replies: the worker has the next
/// one at hand however slowly this client runs (on a busy machine a
/// request at a time would leave the worker waiting for the client more
/// than blocking).
fn ask_twenty(c: &mut TcpStream) {
    c.write_all(&b"ping\n".repeat(20)).unwrap();
    let mut reader = BufReader::new(c);
    for _ in 0..20 {
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        assert_eq!(reply, "ping\n");
    }
}

#[test]
fn a_handler_sleeping_5_ms_per_request_is_reported_within_2_s() {
    let logs = LogCapture::install();
    let server = server(Duration::from_millis(5));
    let address = server.server_address().clone();
    let serving = Arc::clone(&server);
    let thread = std::thread::spawn(move || serving.serve_forever());
    let mut c = tcp_client(&address);
    let peer = c.local_addr().unwrap().to_string();
    let started = Instant::now();
    let report = loop {
        ask_twenty(&mut c);
        if let Some(line) = logs
            .find(log::Level::Warn, &["was blocked", "did not yield", &peer])
            .into_iter()
            .next()
        {
            break line;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no report naming {peer} within 2 s"
        );
    };
    println!("reported after {:?}: {report}", started.elapsed());
    assert!(
        server.stats().green_blocked_ms >= 100,
        "{:?}",
        server.stats()
    );
    drop(c);
    server.shutdown_handle().shutdown();
    within(DEADLINE, "serve_forever returns", move || thread.join())
        .expect("serve_forever thread")
        .expect("serve_forever");
}

#[test]
fn a_handler_that_never_blocks_is_not_reported() {
    let logs = LogCapture::install();
    let server = server(Duration::ZERO);
    let address = server.server_address().clone();
    let serving = Arc::clone(&server);
    let thread = std::thread::spawn(move || serving.serve_forever());
    let mut c = tcp_client(&address);
    let peer = c.local_addr().unwrap().to_string();
    // Two of the detector's windows of back-to-back requests.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2_200) {
        ask(&mut c);
    }
    assert!(
        logs.find(log::Level::Warn, &["was blocked", &peer])
            .is_empty(),
        "a non-blocking handler was reported"
    );
    drop(c);
    server.shutdown_handle().shutdown();
    within(DEADLINE, "serve_forever returns", move || thread.join())
        .expect("serve_forever thread")
        .expect("serve_forever");
}
