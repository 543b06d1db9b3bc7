//! `close_gracefully`: running requests finish up to a deadline, then what
//! is left is cut; handlers can see that the server is stopping.

use std::io::{self, BufRead, Write};
use std::time::Duration;

use socketserver::transport::Tcp;
use socketserver::{Pool, Server, Strategy, StreamHandler, StreamRequest, Threading};
use socketserver_tests::*;

fn echo(req: &mut StreamRequest) -> io::Result<()> {
    req.echo().map(drop)
}

/// A server whose `serve_forever` runs on a thread; stopping it gives the
/// server back, for closing.
struct Serving<S: Strategy, H: StreamHandler> {
    addr: socketserver::Address,
    handle: socketserver::ShutdownHandle,
    thread: std::thread::JoinHandle<Server<Tcp, S, H>>,
}

fn serve<S: Strategy, H: StreamHandler>(strategy: S, handler: H) -> Serving<S, H> {
    let server = Server::builder()
        .strategy(strategy)
        .tcp("127.0.0.1:0", handler)
        .unwrap();
    let addr = server.server_address().clone();
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || {
        server.serve_forever().unwrap();
        server
    });
    Serving {
        addr,
        handle,
        thread,
    }
}

impl<S: Strategy, H: StreamHandler> Serving<S, H> {
    fn stop(self) -> Server<Tcp, S, H> {
        self.handle.shutdown();
        let thread = self.thread;
        within(DEADLINE, "serve_forever returns", move || {
            thread.join().unwrap()
        })
    }
}

#[test]
fn requests_that_finish_before_the_deadline_are_not_cut() {
    let serving = serve(Threading::new(), |req: &mut StreamRequest| {
        req.write_all(b"started\n")?;
        req.flush()?;
        std::thread::sleep(Duration::from_millis(150));
        req.write_all(b"done\n")
    });
    let mut lines = io::BufReader::new(tcp_client(&serving.addr)).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    let server = serving.stop();
    let report = within(DEADLINE, "close_gracefully", move || {
        server.close_gracefully(Duration::from_secs(2))
    });
    assert_eq!(
        (report.running, report.finished, report.cut),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(lines.next().unwrap().unwrap(), "done");
}

fn idle_clients_are_cut_at_the_deadline<S: Strategy>(strategy: S) {
    let serving = serve(strategy, echo);
    let mut clients: Vec<_> = (0..3).map(|_| tcp_client(&serving.addr)).collect();
    for c in &mut clients {
        assert_eq!(stream_roundtrip(&mut *c, b"x").unwrap(), b"x");
    }
    let server = serving.stop();
    let report = within(DEADLINE, "close_gracefully", move || {
        server.close_gracefully(Duration::from_millis(200))
    });
    assert_eq!(
        (report.running, report.cut, report.abandoned),
        (3, 3, 0),
        "{report:?}"
    );
    // The clients never close: only the cut ends their handlers.
    eprintln!(
        "3 idle clients cut at a 200 ms deadline in {:?}",
        report.elapsed
    );
    assert!(report.elapsed < PROMPT, "{report:?}");
    for c in clients {
        let mut c = c;
        let mut buf = [0u8; 1];
        assert_eq!(
            io::Read::read(&mut c, &mut buf).unwrap_or(0),
            0,
            "connection closed"
        );
    }
}

#[test]
fn idle_clients_are_cut_at_the_deadline_under_threading() {
    idle_clients_are_cut_at_the_deadline(Threading::new());
}

#[test]
fn idle_clients_are_cut_at_the_deadline_under_pool() {
    idle_clients_are_cut_at_the_deadline(Pool::new(4));
}

#[test]
fn a_handler_that_ignores_its_socket_is_abandoned_not_waited_for() {
    let serving = serve(Threading::new(), |req: &mut StreamRequest| {
        req.write_all(b"started\n")?;
        req.flush()?;
        // Far longer than PROMPT: waiting for it would fail the test.
        std::thread::sleep(Duration::from_secs(30));
        Ok(())
    });
    let mut lines = io::BufReader::new(tcp_client(&serving.addr)).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    let server = serving.stop();
    let report = within(DEADLINE, "close_gracefully", move || {
        server.close_gracefully(Duration::from_millis(100))
    });
    assert_eq!((report.cut, report.abandoned), (1, 1), "{report:?}");
    eprintln!(
        "a handler sleeping 30 s abandoned at a 100 ms deadline in {:?}",
        report.elapsed
    );
    assert!(report.elapsed < PROMPT, "{report:?}");
}

#[test]
fn handlers_see_the_server_stopping_and_can_finish_early() {
    let serving = serve(Threading::new(), |req: &mut StreamRequest| {
        req.write_all(b"working\n")?;
        req.flush()?;
        for _ in 0..500 {
            if req.shutdown_handle().is_shutdown_requested() {
                return req.write_all(b"stopping early\n");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        req.write_all(b"finished\n")
    });
    let c = tcp_client(&serving.addr);
    let mut lines = io::BufReader::new(c).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "working");
    let server = serving.stop();
    let report = within(DEADLINE, "close_gracefully", move || {
        server.close_gracefully(Duration::from_secs(2))
    });
    // The handler may see the flag and finish before the drain even starts
    // counting (running 0), or during it (running 1, finished 1); it is
    // never cut, and it ends early rather than after its 5 s of work.
    assert_eq!(report.finished, report.running, "{report:?}");
    assert_eq!(report.cut, 0, "{report:?}");
    assert_eq!(lines.next().unwrap().unwrap(), "stopping early");
}
