//! Failed TLS handshakes are client errors: each is counted, but logged at
//! most once a second (with the count of those not logged), so a scanner or
//! a flood of bad clients cannot fill the server's log.

use std::io::{Read, Write};
use std::time::Duration;

use socketserver::Threading;
use socketserver_tests::tls::{make_cert, TlsServer};
use socketserver_tests::*;

#[test]
fn a_hundred_failed_handshakes_log_a_few_lines_and_count_them_all() {
    let log = LogCapture::install();
    let dir = TempDir::new("tls-logs");
    let cert = make_cert(&dir, "server");
    let server = TlsServer::start(Threading::new(), &cert, Duration::from_secs(5));
    const BAD: u64 = 100;
    for _ in 0..BAD {
        // Not a TLS record: the handshake fails at once.
        let mut c = tcp_client(&server.address);
        let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut buf = [0u8; 64];
        let _ = c.read(&mut buf);
    }
    wait_until(DEADLINE, "every failure counted", || {
        server.stats().failed >= BAD
    });
    let lines = log.find(log::Level::Info, &["TLS handshake with", "failed"]);
    // One a second: the 100 fail within a few seconds even on a slow
    // machine; generous bound, far below one per failure.
    assert!(
        !lines.is_empty() && lines.len() <= 20,
        "{} info lines for {BAD} failures: {lines:?}",
        lines.len()
    );
    if lines.len() > 1 {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("more since the last report")),
            "{lines:?}"
        );
    }
}
