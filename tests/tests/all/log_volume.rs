//! No client can flood the log: repeated events caused from outside are
//! counted and logged about once a second, or once per connection.

use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socketserver::{
    Address, DatagramHandler, DatagramRequest, RequestError, Server, StreamRequest, Threading,
};
use socketserver_tests::*;

/// Echoes datagrams; counts what `handle_error` receives.
#[derive(Default, Clone)]
struct Counting {
    reports: Arc<AtomicUsize>,
}

impl DatagramHandler for Counting {
    fn handle(&self, req: &mut DatagramRequest) -> io::Result<()> {
        let data = req.take_data();
        req.reply(&data)
    }
    fn handle_error(&self, _peer: &Address, _error: &RequestError) {
        self.reports.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn oversized_datagrams_are_all_counted_and_reported_about_once_a_second() {
    let handler = Counting::default();
    let reports = Arc::clone(&handler.reports);
    let server = Server::builder()
        .max_datagram_size(100)
        .udp("127.0.0.1:0", handler)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    let c = udp_client(&addr);
    for _ in 0..2000 {
        c.send(&[b'x'; 200]).unwrap();
    }
    // A normal datagram after the flood is served (sent again if the flood
    // filled the socket buffer and the kernel dropped it).
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let answered = within(DEADLINE, "the ping answered", move || {
        (0..25).any(|_| {
            c.send(b"ping").unwrap();
            let mut buf = [0u8; 16];
            c.recv(&mut buf).is_ok_and(|n| &buf[..n] == b"ping")
        })
    });
    assert!(answered, "no answer to 25 pings after the flood");
    let reports = reports.load(Ordering::SeqCst);
    eprintln!("2000 oversized datagrams: {reports} reports to handle_error");
    assert!(
        (1..=5).contains(&reports),
        "{reports} reports for 2000 datagrams sent within about a second"
    );
    running.stop();
}

#[test]
fn oversized_datagrams_show_in_stats() {
    let server = Server::builder()
        .max_datagram_size(10)
        .udp("127.0.0.1:0", |req: &mut DatagramRequest| {
            // Answers with the server's count of oversized datagrams.
            let n = req.stats().oversized;
            req.reply(n.to_string().as_bytes())
        })
        .unwrap();
    let running = Running::start(server);
    let c = udp_client(&running.address);
    for _ in 0..7 {
        c.send(&[0u8; 11]).unwrap();
    }
    let answer = within(DEADLINE, "the count", move || {
        let mut last = String::new();
        for _ in 0..50 {
            c.send(b"count?").unwrap();
            let mut buf = [0u8; 16];
            let n = c.recv(&mut buf).unwrap();
            last = String::from_utf8_lossy(&buf[..n]).into_owned();
            if last == "7" {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        last
    });
    assert_eq!(answer, "7");
    running.stop();
}

#[test]
fn a_connection_past_its_max_lifetime_is_cut_and_logged_once() {
    let log = LogCapture::install();
    let server = Server::builder()
        .strategy(Threading::new())
        .max_lifetime(Some(Duration::from_millis(100)))
        // The handler ignores its socket for a second: the cut connection
        // stays registered all that time, checked again and again.
        .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
            req.write_all(b"hi\n")?;
            req.flush()?;
            std::thread::sleep(Duration::from_secs(1));
            Ok(())
        })
        .unwrap();
    let running = Running::start(server);
    let url = format!("tcp://{}", running.address);
    let _c = tcp_client(&running.address);
    log.wait_for(log::Level::Info, &[&url, "older than"]);
    std::thread::sleep(Duration::from_millis(1200));
    let lines = log.find(log::Level::Info, &[&url, "older than"]);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    running.stop();
}

#[test]
fn bad_input_from_a_client_is_logged_at_warn_and_a_timeout_at_info_saying_so() {
    let log = LogCapture::install();
    let server = Server::builder()
        .strategy(Threading::new())
        .read_timeout(Some(Duration::from_millis(200)))
        .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut line = String::new();
            req.read_line(&mut line)?;
            if line.starts_with("bad") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a command of this protocol",
                ));
            }
            // Anything else: wait for a second line, which never comes.
            req.read_line(&mut line).map(drop)
        })
        .unwrap();
    let running = Running::start(server);
    let mut bad = tcp_client(&running.address);
    bad.write_all(b"bad input\n").unwrap();
    let me = bad.local_addr().unwrap().to_string();
    let warning = log.wait_for(log::Level::Warn, &[&me, "not a command"]);
    assert!(warning.starts_with("bad request from"), "{warning}");
    assert!(log.find(log::Level::Error, &[&me]).is_empty());

    let mut quiet = tcp_client(&running.address);
    quiet.write_all(b"hello\n").unwrap();
    let me = quiet.local_addr().unwrap().to_string();
    let info = log.wait_for(
        log::Level::Info,
        &[&me, "read timed out after 200ms (read_timeout)"],
    );
    assert!(info.contains("timed out"), "{info}");
    running.stop();
}
