//! Errors at volume: 1,000 panicking requests under each in-process
//! strategy; the server keeps serving and leaks no thread and no fd.
//! (Forking at volume runs in `forking.rs`, from a single-threaded process.)

use std::io::{self, Read, Write};
use std::sync::Once;

use socketserver::{Pool, Server, Strategy, StreamRequest, Synchronous, Threading};
use socketserver_tests::*;

const REQUESTS: usize = 1000;

/// 1,000 panic messages on stderr help nobody: this binary's panic hook
/// stays quiet for the handler's own panics.
fn quiet_handler_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info.payload().downcast_ref::<&str>().copied().unwrap_or("");
            if msg != "handler asked to panic" {
                default(info);
            }
        }));
    });
}

fn panicky(req: &mut StreamRequest) -> io::Result<()> {
    let mut first = [0u8; 5];
    req.read_exact(&mut first)?;
    if &first == b"panic" {
        panic!("handler asked to panic");
    }
    req.write_all(&first)?;
    req.echo().map(drop)
}

fn panics_then_serving<S: Strategy>(strategy: S) {
    quiet_handler_panics();
    let name = strategy.name();
    let server = Server::builder()
        .strategy(strategy)
        .tcp("127.0.0.1:0", panicky)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    // Warm up (the pool starts its workers), then take the baseline.
    assert_eq!(
        stream_roundtrip(tcp_client(&addr), b"hello").unwrap(),
        b"hello"
    );
    wait_until(DEADLINE, "idle after warm-up", || {
        threads_named("conn ") == 0
    });
    let (fds, threads) = (fd_count(), thread_count());

    let a = addr.clone();
    within(
        std::time::Duration::from_secs(60),
        "1000 panicking requests",
        move || {
            for i in 0..REQUESTS {
                let mut c = tcp_client(&a);
                c.write_all(b"panic").unwrap();
                let mut buf = [0u8; 1];
                // The panic costs the connection: EOF or reset, never a hang.
                assert!(
                    matches!(c.read(&mut buf), Ok(0) | Err(_)),
                    "request {i} not closed"
                );
            }
        },
    );
    assert_eq!(
        stream_roundtrip(tcp_client(&addr), b"alive").unwrap(),
        b"alive"
    );
    // Generous: on a loaded machine, threads of an earlier test of this
    // file (kept-alive `Threading` threads let go at its close) may still
    // be on their way out.
    wait_until(
        std::time::Duration::from_secs(30),
        &format!("{name}: fds ({fds}) and threads ({threads}) back to the baseline"),
        || fd_count() <= fds && thread_count() <= threads,
    );
    eprintln!(
        "volume: {name}: {REQUESTS} panics: fds {fds} -> {}, threads {threads} -> {}",
        fd_count(),
        thread_count()
    );
    running.stop();
}

/// One test for the three strategies, one after the other: fd and thread
/// counts are per process, and the test harness starts a thread for each
/// test it runs, so a second test of this binary would move the baseline.
#[test]
fn a_thousand_panics_under_synchronous_threading_and_pool_leak_nothing() {
    panics_then_serving(Synchronous);
    // Threads kept for reuse leave after 200 ms, not the default 5 s: the
    // count returns to its baseline sooner, and a leak shows all the same.
    panics_then_serving(Threading::new().keep_alive(std::time::Duration::from_millis(200)));
    panics_then_serving(Pool::new(4));
}
