//! `green::spawn`: a request's companion coroutines run beside it on its
//! worker (no thread of their own), can be joined, and end with the
//! request; outside `Green` a companion is a thread.

use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socketserver::{green, Green, Server, StreamRequest};
use socketserver_tests::*;

#[test]
fn a_companion_is_joined_with_its_result_and_a_detached_one_ends_with_its_request() {
    let ended = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&ended);
    let server = Server::builder()
        .strategy(Green::new().threads(1))
        .tcp("127.0.0.1:0", move |req: &mut StreamRequest| {
            let thread = std::thread::current().id();
            let joined = green::spawn(move || (6 * 7, std::thread::current().id() == thread));
            let (answer, same_thread) = joined.join().expect("the companion's result");
            writeln!(req, "{answer} {same_thread}")?;
            // Left running: it sleeps until its request ends.
            let ended = Arc::clone(&seen);
            let _detached = green::spawn(move || {
                for _ in 0..1000 {
                    green::sleep(Duration::from_millis(100));
                }
                ended.fetch_add(1, Ordering::SeqCst);
            });
            let mut line = String::new();
            req.read_line(&mut line)?; // until the client goes
            Ok(())
        })
        .unwrap();
    let running = Running::start(server);
    let mut c = tcp_client(&running.address);
    let mut reply = String::new();
    BufReader::new(&mut c).read_line(&mut reply).unwrap();
    assert_eq!(reply, "42 true\n", "joined, on the request's own thread");
    assert_eq!(ended.load(Ordering::SeqCst), 0);
    c.write_all(b"bye\n").unwrap();
    drop(c);
    wait_until(
        PROMPT,
        "the detached companion ends with its request",
        || ended.load(Ordering::SeqCst) == 1,
    );
    running.stop();
}
