//! Under `Green` the server loop is a coroutine on a worker, next to the
//! requests it starts there: a loop that finds work every time it looks
//! (a zero service interval, a flood of connections) must still let them
//! run.

use std::time::Duration;

use socketserver::{Green, Server};
use socketserver_tests::*;

/// A zero service interval makes the loop look without waiting, every
/// time: on a single worker the requests still run.
#[test]
fn a_loop_that_never_waits_lets_the_requests_of_its_worker_run() {
    let server = Server::builder()
        .strategy(Green::new().threads(1))
        .service_interval(Some(Duration::ZERO))
        .tcp("127.0.0.1:0", echo_stream)
        .unwrap();
    let running = Running::start(server);
    let address = running.address.clone();
    let reply = within(Duration::from_secs(10), "an echo", move || {
        let mut c = tcp_client(&address);
        stream_roundtrip(&mut c, b"hello\n").map_err(|e| e.to_string())
    });
    assert_eq!(reply.as_deref(), Ok(&b"hello\n"[..]));
    running.stop();
}
