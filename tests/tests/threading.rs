//! `Threading` and `Pool`: threads never accumulate, `active()` is exact,
//! thread names carry the peer, `block_on_close(false)` does not wait, a
//! full pool queue pauses accepting without losing anyone.

use std::io::{self, BufRead, BufReader, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use socketserver::{Address, Pool, Server, StreamHandler, StreamRequest, Threading};
use socketserver_tests::*;

const MSG: &[u8] = b"hello world\n";

/// Tests that count this process's threads take it exclusively; every
/// other test shares it.
static PROCESS: RwLock<()> = parking_lot::const_rwlock(());

/// `n` connections one after another, each one echo round trip.
fn short_connections(addr: &Address, n: usize) {
    for i in 0..n {
        let back = stream_roundtrip(tcp_client(addr), MSG)
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(back, MSG);
    }
}

// Every thread the library starts is named (`conn PEER`, `pool worker N`),
// so counting threads by name is exact, whatever the test harness's own
// threads do meanwhile. A test that counts them first waits until the
// connection threads of the tests before it are gone: their servers are
// closed, and closing lets kept-alive threads go, but a thread may still be
// on its way out (its request counted as ended just before it exits).

/// Waits until no connection thread of an earlier test is left.
fn no_connection_thread_left() {
    wait_until(DEADLINE, "connection threads of earlier tests gone", || {
        threads_named("conn ") == 0
    });
}

#[test]
fn after_200_short_connections_live_threads_return_to_the_baseline() {
    let _exclusive = PROCESS.write();
    // Threads kept for reuse leave after 200 ms (the default is 5 s).
    let server = Server::builder()
        .strategy(Threading::new().keep_alive(Duration::from_millis(200)))
        .tcp("127.0.0.1:0", echo_stream)
        .unwrap();
    let running = Running::start(server);
    no_connection_thread_left();
    // In this thread, not under `within`, which would start one more; every
    // client has 5 s timeouts, so this cannot hang.
    short_connections(&running.address, 200);
    wait_until(DEADLINE, "no request running", || running.active() == 0);
    wait_until(DEADLINE, "no connection thread left", || {
        threads_named("conn ") == 0
    });
    running.stop();
}

#[test]
fn a_pool_keeps_its_worker_count_and_closing_joins_the_workers() {
    let _exclusive = PROCESS.write();
    no_connection_thread_left();
    let server = Server::builder()
        .strategy(Pool::new(3))
        .tcp("127.0.0.1:0", echo_stream)
        .unwrap();
    let running = Running::start(server);
    assert_eq!(threads_named("pool worker"), 0, "workers start on demand");
    short_connections(&running.address, 200);
    // 3 workers, however many connections came, and no other thread.
    assert_eq!(threads_named("pool worker"), 3);
    assert_eq!(threads_named("conn "), 0);
    running.stop();
    assert_eq!(threads_named("pool worker"), 0, "close joins the workers");
}

#[test]
fn active_counts_running_requests_and_returns_to_zero() {
    let _shared = PROCESS.read();
    let server = Server::builder()
        .strategy(Threading::new())
        .tcp("127.0.0.1:0", echo_stream)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    assert_eq!(running.active(), 0);
    let clients: Vec<_> = (0..5).map(|_| tcp_client(&addr)).collect();
    wait_until(DEADLINE, "5 requests running", || running.active() == 5);
    drop(clients);
    wait_until(DEADLINE, "no request running", || running.active() == 0);
    running.stop();
}

/// Sends back the name of the thread it runs on.
fn thread_name(req: &mut StreamRequest) -> io::Result<()> {
    let name = thread::current().name().unwrap_or("(unnamed)").to_owned();
    writeln!(req, "{name}")
}

#[test]
fn thread_names_carry_the_peer_address() {
    let _shared = PROCESS.read();
    for host in ["127.0.0.1:0", "[::1]:0"] {
        let server = Server::builder()
            .strategy(Threading::new())
            .tcp(host, thread_name)
            .unwrap();
        let running = Running::start(server);
        let addr = running.address.clone();
        within(DEADLINE, "the thread name", move || {
            let c = tcp_client(&addr);
            let me = c.local_addr().unwrap().to_string();
            let mut name = String::new();
            BufReader::new(c).read_line(&mut name).unwrap();
            assert!(
                name.trim_end().ends_with(&me),
                "thread {name:?} should name the peer {me}"
            );
        });
        running.stop();
    }
}

#[test]
fn block_on_close_false_returns_from_close_without_waiting_for_a_stuck_handler() {
    let _shared = PROCESS.read();
    let server = Server::builder()
        .strategy(Threading::new().block_on_close(false))
        .tcp("127.0.0.1:0", echo_stream)
        .unwrap();
    let running = Running::start(server);
    // A client that never sends nor closes: its handler waits in `read`.
    let stuck = tcp_client(&running.address);
    wait_until(DEADLINE, "the handler running", || running.active() == 1);
    let took = running.stop(); // shutdown, serve_forever returns, close
    eprintln!("block_on_close(false): close returned in {took:?} with a handler stuck");
    assert!(took < PROMPT, "close waited {took:?} for a handler");
    // The handler still runs on its own: it serves its client after close.
    let stuck = within(DEADLINE, "the stuck client is still served", move || {
        let mut stuck = stuck;
        assert_eq!(stream_roundtrip(&mut stuck, MSG).unwrap(), MSG);
        stuck
    });
    drop(stuck);
}

/// Counts verified (accepted) connections; serves one line each, recording
/// the order.
#[derive(Default)]
struct Ordered {
    accepted: AtomicUsize,
    order: Mutex<Vec<usize>>,
}

#[derive(Clone, Default)]
struct OrderedHandler(Arc<Ordered>);

impl StreamHandler for OrderedHandler {
    fn verify_request(&self, _peer: &Address) -> bool {
        self.0.accepted.fetch_add(1, Ordering::SeqCst);
        true
    }
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let mut line = String::new();
        req.read_line(&mut line)?;
        let i: usize = line.trim_end().parse().unwrap();
        self.0.order.lock().push(i);
        writeln!(req, "served {i}")
    }
}

#[test]
fn a_full_pool_queue_pauses_accepting_and_loses_nobody() {
    let _shared = PROCESS.read();
    let handler = OrderedHandler::default();
    let state = Arc::clone(&handler.0);
    let server = Server::builder()
        .strategy(Pool::new(1).queue(1))
        .tcp("127.0.0.1:0", handler)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    within(DEADLINE, "5 clients through one worker", move || {
        // Connected in order 0..5; nobody has sent anything yet, so the
        // worker waits on client 0.
        let mut clients: Vec<_> = (0..5).map(|_| tcp_client(&addr)).collect();
        // Client 0 runs, 1 is queued, 2 is accepted and waits for a queue
        // slot in the loop; 3 and 4 are left in the listen backlog.
        wait_until(DEADLINE, "3 accepted", || {
            state.accepted.load(Ordering::SeqCst) >= 3
        });
        thread::sleep(Duration::from_millis(100)); // nothing to wait for: a pause
        assert_eq!(
            state.accepted.load(Ordering::SeqCst),
            3,
            "with the queue full the server stops accepting"
        );
        // They send in reverse order, yet are served in arrival order.
        for (i, c) in clients.iter_mut().enumerate().rev() {
            writeln!(c, "{i}").unwrap();
        }
        for (i, c) in clients.into_iter().enumerate() {
            let mut reply = String::new();
            BufReader::new(c).read_line(&mut reply).unwrap();
            assert_eq!(reply, format!("served {i}\n"));
        }
        assert_eq!(*state.order.lock(), [0, 1, 2, 3, 4]);
        assert_eq!(state.accepted.load(Ordering::SeqCst), 5);
    });
    running.stop();
}
