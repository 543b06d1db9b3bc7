//! `close_gracefully`: running requests finish up to a deadline, then what
//! is left is cut; handlers can see that the server is stopping.

use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socketserver::transport::Tcp;
use socketserver::{Green, Pool, Server, Strategy, StreamHandler, StreamRequest, Threading};
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

fn requests_that_finish_before_the_deadline_are_not_cut(strategy: impl Strategy) {
    let serving = serve(strategy, |req: &mut StreamRequest| {
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

fn idle_clients_are_closed_at_once<S: Strategy>(strategy: S) {
    let serving = serve(strategy, echo);
    let mut clients: Vec<_> = (0..3).map(|_| tcp_client(&serving.addr)).collect();
    for c in &mut clients {
        assert_eq!(stream_roundtrip(&mut *c, b"x").unwrap(), b"x");
    }
    let server = serving.stop();
    let report = within(DEADLINE, "close_gracefully", move || {
        server.close_gracefully(Duration::from_secs(10))
    });
    assert_eq!(
        (
            report.running,
            report.idle_closed,
            report.cut,
            report.abandoned
        ),
        (3, 3, 0, 0),
        "{report:?}"
    );
    // The clients never close: the drain closes them, at once.
    eprintln!(
        "3 idle clients closed at once (10 s deadline) in {:?}",
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
fn idle_clients_are_closed_at_once_under_threading() {
    idle_clients_are_closed_at_once(Threading::new());
}

#[test]
fn idle_clients_are_closed_at_once_under_pool() {
    idle_clients_are_closed_at_once(Pool::new(4));
}

#[test]
fn idle_clients_are_closed_at_once_under_green() {
    idle_clients_are_closed_at_once(Green::new().threads(2));
}

/// Reads 4-byte records; a client that sent half of one is busy. Counts
/// in `begun` the records whose first byte it has read, so that a test
/// knows when a client is in the middle of one (rather than sleep and hope).
fn records(
    begun: &Arc<AtomicUsize>,
) -> impl Fn(&mut StreamRequest) -> io::Result<()> + Send + Sync + 'static + use<> {
    let begun = Arc::clone(begun);
    move |req: &mut StreamRequest| {
        let mut record = [0u8; 4];
        loop {
            match req.read_message(|r| {
                io::Read::read_exact(r, &mut record[..1])?;
                begun.fetch_add(1, Ordering::SeqCst);
                io::Read::read_exact(r, &mut record[1..])
            }) {
                Ok(()) => req.write_all(&record)?,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

fn a_client_in_the_middle_of_a_message_is_cut_at_the_deadline(strategy: impl Strategy) {
    let begun = Arc::new(AtomicUsize::new(0));
    let serving = serve(strategy, records(&begun));
    let mut idle = tcp_client(&serving.addr);
    assert_eq!(stream_roundtrip(&mut idle, b"abcd").unwrap(), b"abcd");
    let mut busy = tcp_client(&serving.addr);
    busy.write_all(b"ab").unwrap(); // half a record
                                    // Both handlers wait: the idle one for a record, the busy one in the
                                    // middle of its second.
    wait_until(DEADLINE, "the busy client's record is begun", || {
        begun.load(Ordering::SeqCst) == 2
    });
    let server = serving.stop();
    let report = within(DEADLINE, "close_gracefully", move || {
        server.close_gracefully(Duration::from_millis(300))
    });
    assert_eq!(
        (
            report.running,
            report.idle_closed,
            report.cut,
            report.abandoned
        ),
        (2, 1, 1, 0),
        "{report:?}"
    );
    assert!(
        report.elapsed >= Duration::from_millis(300),
        "the busy one got its deadline: {report:?}"
    );
    let mut buf = [0u8; 4];
    assert_eq!(io::Read::read(&mut busy, &mut buf).unwrap_or(0), 0);
}

fn with_1000_idle_clients_and_1_busy_the_busy_reply_arrives_and_close_is_quick(
    strategy: impl Strategy,
) {
    // The busy request answers 300 ms after its line arrived (and says
    // when it did).
    let slow_read = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::clone(&slow_read);
    let serving = serve(strategy, move |req: &mut StreamRequest| {
        let mut line = String::new();
        while req.read_line(&mut line)? > 0 {
            if line.trim() == "slow" {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
            }
            req.write_all(line.as_bytes())?;
            line.clear();
        }
        Ok(())
    });
    let n = 1000;
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = tcp_client(&serving.addr);
        c.write_all(b"hi\n").unwrap();
        idle.push(c);
    }
    for c in &mut idle {
        let mut buf = [0u8; 3];
        io::Read::read_exact(c, &mut buf).unwrap();
    }
    let mut busy = tcp_client(&serving.addr);
    busy.write_all(b"slow\n").unwrap();
    // The stop comes while the busy request runs (a line still unread
    // would make it an idle connection, closed at once).
    wait_until(DEADLINE, "the busy line is read", || {
        slow_read.load(std::sync::atomic::Ordering::SeqCst)
    });
    let server = serving.stop();
    let report = within(DEADLINE, "close_gracefully", move || {
        server.close_gracefully(Duration::from_secs(30))
    });
    let mut reply = String::new();
    io::BufReader::new(&mut busy).read_line(&mut reply).unwrap();
    assert_eq!(reply, "slow\n", "the busy reply arrived");
    assert_eq!(report.cut, 0, "{report:?}");
    // The busy one, too, closes idle once its reply is out.
    assert_eq!(report.idle_closed, n + 1, "{report:?}");
    eprintln!(
        "drain with {n} idle + 1 busy (300 ms) client: {} ms",
        report.elapsed.as_millis()
    );
    // Far below the 30 s deadline: nobody waited for it. Generous: ending
    // 1,000 connections (under Threading, 1,000 threads) took 2.5 s on two
    // saturated cores beside other tests.
    assert!(report.elapsed < Duration::from_secs(8), "{report:?}");
}

fn with_only_idle_clients_close_takes_milliseconds(strategy: impl Strategy) {
    let serving = serve(strategy, echo);
    let mut clients: Vec<_> = (0..200).map(|_| tcp_client(&serving.addr)).collect();
    for c in &mut clients {
        assert_eq!(stream_roundtrip(&mut *c, b"x").unwrap(), b"x");
    }
    let server = serving.stop();
    let report = within(DEADLINE, "close_gracefully", move || {
        server.close_gracefully(Duration::from_secs(10))
    });
    eprintln!(
        "drain with 200 idle clients: {} ms",
        report.elapsed.as_millis()
    );
    assert_eq!((report.idle_closed, report.cut), (200, 0), "{report:?}");
    assert!(report.elapsed < Duration::from_secs(1), "{report:?}");
}

fn new_clients_are_refused_once_the_drain_begins(strategy: impl Strategy) {
    let begun = Arc::new(AtomicUsize::new(0));
    let serving = serve(strategy, records(&begun));
    let mut busy = tcp_client(&serving.addr);
    busy.write_all(b"ab").unwrap();
    wait_until(DEADLINE, "the busy client's record is begun", || {
        begun.load(Ordering::SeqCst) == 1
    });
    let addr = serving.addr.as_inet().unwrap();
    let server = serving.stop();
    let closing = std::thread::spawn(move || server.close_gracefully(Duration::from_millis(500)));
    std::thread::sleep(Duration::from_millis(100)); // the drain has begun
    let refused = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    assert_eq!(
        refused.map(drop).map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionRefused),
        "a client connecting during the drain is refused, not accepted then reset"
    );
    let report = within(DEADLINE, "close", move || closing.join().unwrap());
    assert_eq!(report.cut, 1, "{report:?}");
}

fn close_gracefully_works_from_another_thread_while_serve_forever_runs(strategy: impl Strategy) {
    let server = std::sync::Arc::new(
        Server::builder()
            .strategy(strategy)
            .tcp("127.0.0.1:0", echo)
            .unwrap(),
    );
    let serving = std::sync::Arc::clone(&server);
    let thread = std::thread::spawn(move || serving.serve_forever());
    let mut c = tcp_client(server.server_address());
    assert_eq!(stream_roundtrip(&mut c, b"x").unwrap(), b"x");
    let report = within(DEADLINE, "close_gracefully", move || {
        server.close_gracefully(Duration::from_secs(5))
    });
    within(DEADLINE, "serve_forever returns", move || {
        thread.join().unwrap().unwrap()
    });
    assert_eq!((report.idle_closed, report.cut), (1, 0), "{report:?}");
}

fn a_huge_close_deadline_does_not_panic(strategy: impl Strategy) {
    let serving = serve(strategy, echo);
    let server = serving.stop();
    let report = within(DEADLINE, "close_gracefully", move || {
        server.close_gracefully(Duration::MAX)
    });
    assert_eq!(report.running, 0, "{report:?}");
}

fn dropping_with_idle_clients_returns_within_a_second<S: Strategy>(strategy: S) {
    let serving = serve(strategy, echo);
    let mut clients: Vec<_> = (0..20).map(|_| tcp_client(&serving.addr)).collect();
    for c in &mut clients {
        assert_eq!(stream_roundtrip(&mut *c, b"x").unwrap(), b"x");
    }
    let server = serving.stop();
    let took = within(DEADLINE, "drop", move || {
        let start = std::time::Instant::now();
        drop(server);
        start.elapsed()
    });
    assert!(took < Duration::from_secs(1), "drop took {took:?}");
}

#[test]
fn dropping_a_threading_server_with_idle_clients_returns_within_a_second() {
    dropping_with_idle_clients_returns_within_a_second(Threading::new());
}

#[test]
fn dropping_a_pool_server_with_idle_clients_returns_within_a_second() {
    dropping_with_idle_clients_returns_within_a_second(Pool::new(32));
}

#[test]
fn dropping_a_green_server_with_idle_clients_returns_within_a_second() {
    dropping_with_idle_clients_returns_within_a_second(Green::new().threads(2));
}

#[test]
fn a_synchronous_server_stops_while_a_client_is_connected_and_idle() {
    let server = Server::builder()
        .strategy(socketserver::Synchronous)
        .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut line = String::new();
            while req.read_line(&mut line)? > 0 {
                req.write_all(line.as_bytes())?;
                line.clear();
            }
            Ok(())
        })
        .unwrap();
    let addr = server.server_address().clone();
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || {
        server.serve_forever().unwrap();
        drop(server);
    });
    let mut c = tcp_client(&addr);
    assert_eq!(stream_roundtrip(&mut c, b"hi\n").unwrap(), b"hi\n");
    let start = std::time::Instant::now();
    handle.shutdown();
    within(
        DEADLINE,
        "serve_forever returns and the server closes",
        move || thread.join().unwrap(),
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let mut buf = [0u8; 1];
    assert_eq!(io::Read::read(&mut c, &mut buf).unwrap_or(0), 0);
}

fn a_handler_that_ignores_its_socket_is_abandoned_not_waited_for(strategy: impl Strategy) {
    let serving = serve(strategy, |req: &mut StreamRequest| {
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

fn handlers_see_the_server_stopping_and_can_finish_early(strategy: impl Strategy) {
    let serving = serve(strategy, |req: &mut StreamRequest| {
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

/// Echoes, counting the connections the server accepted (`verify_request`
/// runs in the loop, as it takes a connection).
#[derive(Clone, Default)]
struct CountingEcho(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl StreamHandler for CountingEcho {
    fn verify_request(&self, _peer: &socketserver::Address) -> bool {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        true
    }
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        echo(req)
    }
}

#[test]
fn a_queued_pool_request_whose_client_has_spoken_is_served_during_the_drain() {
    let handler = CountingEcho::default();
    let accepted = std::sync::Arc::clone(&handler.0);
    let serving = serve(Pool::new(1).queue(4), handler);
    let mut first = tcp_client(&serving.addr);
    assert_eq!(stream_roundtrip(&mut first, b"a").unwrap(), b"a");
    // The one worker serves `first`; this one waits in the queue, its
    // message already sent. (Taken by the loop before it stops: one still
    // in the listen backlog would be reset when the listener closes.)
    let mut queued = tcp_client(&serving.addr);
    queued.write_all(b"hello").unwrap();
    wait_until(DEADLINE, "the second connection accepted", || {
        accepted.load(std::sync::atomic::Ordering::SeqCst) == 2
    });
    let server = serving.stop();
    let report = within(DEADLINE, "close_gracefully", move || {
        server.close_gracefully(Duration::from_secs(5))
    });
    let mut got = Vec::new();
    io::Read::read_to_end(&mut queued, &mut got).unwrap();
    assert_eq!(got, b"hello", "answered, then closed: {report:?}");
    assert_eq!(report.cut, 0, "{report:?}");
}

socketserver_tests::per_strategy! {
    [
        requests_that_finish_before_the_deadline_are_not_cut,
        a_client_in_the_middle_of_a_message_is_cut_at_the_deadline,
        with_1000_idle_clients_and_1_busy_the_busy_reply_arrives_and_close_is_quick,
        with_only_idle_clients_close_takes_milliseconds,
        new_clients_are_refused_once_the_drain_begins,
        close_gracefully_works_from_another_thread_while_serve_forever_runs,
        a_huge_close_deadline_does_not_panic,
        a_handler_that_ignores_its_socket_is_abandoned_not_waited_for,
        handlers_see_the_server_stopping_and_can_finish_early,
    ]
    threading: Threading::new().stack_size(64 * 1024);
    green: Green::new().threads(2);
}
