//! `serve_forever` under `Green` hands its loop to a worker and waits for
//! it: when no worker can run the loop (a worker that died, or workers
//! stopped by the close of another server sharing the same `Green`), it
//! must return (with an error), not wait forever.

use std::time::Duration;

use socketserver::{Green, Handler, Server, StreamRequest, Transport};
use socketserver_tests::*;

/// Runs `serve_forever` with a shutdown asked 200 ms later; its result (the
/// error as text), or a failed test if it has not returned within 10 s.
fn serve_forever_shut_down_soon<T, H>(server: Server<T, Green, H>) -> Result<(), String>
where
    T: Transport,
    H: Handler<T::Request>,
{
    let handle = server.shutdown_handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        handle.shutdown();
    });
    let result = within(Duration::from_secs(10), "serve_forever", move || {
        server.serve_forever().map_err(|e| e.to_string())
    });
    stopper.join().unwrap();
    result
}

/// A stack size no slab can hold: the worker cannot make any stack.
#[test]
fn serve_forever_returns_when_no_stack_can_be_made() {
    let server = Server::builder()
        .strategy(Green::new().threads(1).stack_size(usize::MAX))
        .tcp("127.0.0.1:0", echo_stream)
        .unwrap();
    let result = serve_forever_shut_down_soon(server);
    assert!(result.is_err(), "the loop never ran: {result:?}");
}

/// Two servers on clones of one `Green` (against its docs): the first one's
/// close stops the workers; the second one's `serve_forever` then reports
/// it cannot run rather than hang.
#[test]
fn serve_forever_returns_when_the_workers_were_stopped() {
    let green = Green::new().threads(1);
    let first = Server::builder()
        .strategy(green.clone())
        .tcp("127.0.0.1:0", echo_stream)
        .unwrap();
    let running = Running::start(first);
    let mut c = tcp_client(&running.address);
    assert_eq!(stream_roundtrip(&mut c, b"hi\n").unwrap(), b"hi\n");
    drop(c);
    running.stop();
    let second = Server::builder()
        .strategy(green)
        .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))
        .unwrap();
    let result = serve_forever_shut_down_soon(second);
    assert!(result.is_err(), "the workers were stopped: {result:?}");
}
