//! `Forking`, run in `fork_server` (a single-threaded process: forking from
//! the multi-threaded test harness would be exactly the hazard the strategy
//! warns about), driven by [`ServerProcess`]. Every wait on the server
//! process has a deadline, and a server that outlives its test is killed
//! with its process group.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use socketserver::Address;
use socketserver_tests::*;

const MSG: &[u8] = b"hello world\n";
const WARNING: &str = "forking a process with";

/// Starts `fork_server TRANSPORT ADDR MAX_CHILDREN MODE [extra]` and
/// waits (with a deadline) for its `listening on URL` line.
fn start(
    transport: &str,
    addr: &str,
    max_children: usize,
    mode: &str,
    extra: &[&str],
) -> ServerProcess {
    let max_children = max_children.to_string();
    let args: Vec<&str> = [transport, addr, &max_children, mode]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    ServerProcess::start(env!("CARGO_BIN_EXE_fork_server"), &args)
}

/// SIGTERM; asserts a clean exit 0 (within [`PROMPT`]); returns stderr.
fn stop(mut server: ServerProcess) -> String {
    let (status, took) = server.terminate(PROMPT);
    assert!(status.success(), "exit status {status}");
    eprintln!("fork_server exited {took:?} after SIGTERM");
    let stderr = server.final_stderr();
    assert!(
        !stderr.contains(WARNING),
        "fork_server must be single-threaded: {stderr}"
    );
    stderr
}

fn stream_echo(addr: &Address, msg: &[u8]) -> Vec<u8> {
    match addr {
        Address::Inet(_) => stream_roundtrip(tcp_client(addr), msg).unwrap(),
        Address::Unix(_) => stream_roundtrip(unix_client(addr), msg).unwrap(),
    }
}

// Echo matrix: Forking x every transport, 3 clients each.

#[test]
fn forking_tcp_echo_serves_3_clients() {
    let server = start("tcp", "127.0.0.1:0", 40, "echo", &[]);
    let addr = server.address();
    within(DEADLINE, "3 TCP clients", move || {
        let clients: Vec<_> = (0..3).map(|_| tcp_client(&addr)).collect();
        for c in clients {
            assert_eq!(stream_roundtrip(c, MSG).unwrap(), MSG);
        }
    });
    stop(server);
}

#[test]
fn forking_tcp_echo_works_over_ipv6() {
    let server = start("tcp", "[::1]:0", 40, "echo", &[]);
    let addr = server.address();
    assert!(addr.as_inet().unwrap().is_ipv6());
    within(DEADLINE, "an IPv6 client", move || {
        assert_eq!(stream_echo(&addr, MSG), MSG)
    });
    stop(server);
}

#[test]
fn forking_udp_echo_serves_3_clients() {
    let server = start("udp", "127.0.0.1:0", 40, "echo", &[]);
    let addr = server.address();
    within(DEADLINE, "3 UDP clients", move || {
        for _ in 0..3 {
            let c = udp_client(&addr);
            c.send(MSG).unwrap();
            let mut buf = [0u8; 64];
            let n = c.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], MSG);
        }
    });
    stop(server);
}

#[test]
fn forking_unix_stream_echo_serves_3_clients() {
    let dir = TempDir::new("fork-unix");
    let path = dir.join("echo.sock");
    let server = start("unix", path.to_str().unwrap(), 40, "echo", &[]);
    let addr = server.address();
    assert_eq!(addr.as_path(), Some(path.as_path()));
    within(DEADLINE, "3 Unix stream clients", move || {
        let clients: Vec<_> = (0..3).map(|_| unix_client(&addr)).collect();
        for c in clients {
            assert_eq!(stream_roundtrip(c, MSG).unwrap(), MSG);
        }
    });
    stop(server);
    assert!(!path.exists(), "socket file removed on exit");
}

#[test]
fn forking_unix_datagram_echo_serves_3_clients() {
    let dir = TempDir::new("fork-unixgram");
    let path = dir.join("echo.sock");
    let server = start("unixgram", path.to_str().unwrap(), 40, "echo", &[]);
    let addr = server.address();
    let client_dir = dir.path().to_path_buf();
    within(DEADLINE, "3 Unix datagram clients", move || {
        for i in 0..3 {
            let c = unixgram_client(&addr, &client_dir, &format!("client{i}"));
            c.send(MSG).unwrap();
            let mut buf = [0u8; 64];
            let n = c.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], MSG);
        }
    });
    stop(server);
    assert!(!path.exists(), "socket file removed on exit");
}

#[test]
fn a_thousand_requests_leave_no_zombie_children() {
    let server = start("tcp", "127.0.0.1:0", 40, "echo", &[]);
    let addr = server.address();
    within(Duration::from_secs(30), "1000 requests", move || {
        for i in 0..1000 {
            let back = stream_roundtrip(tcp_client(&addr), MSG)
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(back, MSG);
        }
    });
    // Children end when their client leaves; the server reaps them even
    // though it is idle now.
    wait_until(Duration::from_secs(2), "no zombie children", || {
        server.children().1 == 0
    });
    wait_until(DEADLINE, "no children at all", || {
        children_of(server.pid()).is_empty()
    });
    stop(server);
}

/// Samples the server's live children until every client thread is done
/// (at most `limit`), asserting there are never more than `max`; returns
/// the most seen at once. A scan of /proc is not atomic: a child can exit,
/// be reaped and be replaced while a scan runs, so a scan with more than
/// `max` live children is checked again: only children live in both scans
/// count.
fn most_children_until_done<T>(
    server: &ServerProcess,
    clients: &[thread::JoinHandle<T>],
    max: usize,
    limit: Duration,
) -> usize {
    let end = Instant::now() + limit;
    let mut most = 0;
    while !clients.iter().all(thread::JoinHandle::is_finished) {
        assert!(
            Instant::now() < end,
            "{} clients not done within {limit:?}",
            clients.len()
        );
        let mut live = server.live_children();
        if live.len() > max {
            let again: HashSet<u32> = server.live_children().into_iter().collect();
            live.retain(|p| again.contains(p));
        }
        assert!(
            live.len() <= max,
            "{} children alive at once: {live:?}",
            live.len()
        );
        most = most.max(live.len());
        thread::sleep(Duration::from_millis(1));
    }
    most
}

#[test]
fn max_children_is_respected_and_every_client_is_served() {
    const MAX: usize = 3;
    let server = start("tcp", "127.0.0.1:0", MAX, "sleep:200", &[]);
    let addr = server.address();
    let clients: Vec<_> = (0..10)
        .map(|i| {
            let addr = addr.clone();
            thread::spawn(move || {
                let msg = format!("client {i}\n");
                stream_roundtrip(tcp_client(&addr), msg.as_bytes())
                    .map(|back| back == msg.as_bytes())
            })
        })
        .collect();
    let most = most_children_until_done(&server, &clients, MAX, DEADLINE);
    for (i, c) in clients.into_iter().enumerate() {
        assert!(
            c.join().unwrap().expect("served"),
            "client {i} got its echo"
        );
    }
    assert_eq!(most, MAX, "the server did run {MAX} children at once");
    stop(server);
}

#[test]
fn a_panicking_handler_in_a_child_does_not_stop_the_next_client() {
    let server = start("tcp", "127.0.0.1:0", 40, "panic", &[]);
    let addr = server.address();
    within(DEADLINE, "a panic, then an echo", move || {
        let mut c = tcp_client(&addr);
        c.write_all(b"panic\n").unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).expect("EOF");
        assert!(got.is_empty(), "the panicking child closed the connection");
        assert_eq!(stream_echo(&addr, MSG), MSG);
    });
    let stderr = stop(server);
    assert!(
        stderr.contains("handler panicked: asked to panic"),
        "{stderr}"
    );
}

#[test]
fn a_child_that_exits_early_does_not_stop_the_next_client() {
    let server = start("udp", "127.0.0.1:0", 40, "exit:7", &[]);
    let addr = server.address();
    within(DEADLINE, "an early exit, then an echo", move || {
        let c = udp_client(&addr);
        c.send(b"exit").unwrap();
        c.send(MSG).unwrap();
        let mut buf = [0u8; 64];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], MSG, "the only reply is to the second datagram");
    });
    wait_until(Duration::from_secs(2), "the children reaped", || {
        children_of(server.pid()).is_empty()
    });
    stop(server);
}

#[test]
fn sigterm_exits_0_after_the_running_child_finishes() {
    let mut server = start("tcp", "127.0.0.1:0", 40, "sleep:300", &[]);
    let addr = server.address();
    let mut c = tcp_client(&addr);
    c.write_all(MSG).unwrap();
    // The child echoes until the client closes its side: its request ends
    // after the sleep and the echo.
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut live = Vec::new();
    wait_until(DEADLINE, "a child serving the client", || {
        live = server.live_children();
        !live.is_empty()
    });
    let (status, took) = server.terminate(PROMPT);
    assert!(status.success(), "exit status {status}");
    eprintln!("fork_server exited {took:?} after SIGTERM, its child's 300 ms request included");
    // The child finished its request before the server exited...
    let mut back = vec![0; MSG.len()];
    c.read_exact(&mut back).unwrap();
    assert_eq!(back, MSG);
    // ...and none is left behind.
    for pid in live {
        assert!(
            !PathBuf::from(format!("/proc/{pid}")).exists(),
            "child {pid} outlived the server"
        );
    }
}

#[test]
fn sigterm_stops_an_idle_server_within_a_second() {
    for transport in ["tcp", "udp"] {
        let server = start(transport, "127.0.0.1:0", 40, "echo", &[]);
        stop(server);
    }
}

#[test]
fn forking_from_a_threaded_process_logs_a_warning() {
    let server = start("tcp", "127.0.0.1:0", 40, "echo", &["--spawn-thread"]);
    let addr = server.address();
    within(DEADLINE, "an echo", move || {
        assert_eq!(stream_echo(&addr, MSG), MSG)
    });
    let mut server = server;
    let (status, _) = server.terminate(PROMPT);
    assert!(status.success(), "exit status {status}");
    let stderr = server.final_stderr();
    assert!(
        stderr.contains("forking a process with 2 threads"),
        "stderr: {stderr}"
    );
}

/// A thread of the server logs all the time, so it often holds the
/// logger's lock when the server forks: a child that logged would wait for
/// that lock forever. Children of a multi-threaded server do not log, so
/// every request is served and every child exits.
#[test]
fn children_of_a_server_with_a_logging_thread_never_hang_in_the_logger() {
    let server = start("tcp", "127.0.0.1:0", 40, "log", &["--noisy-thread"]);
    let addr = server.address();
    let pid = server.pid();
    within(
        DEADLINE,
        "300 echoes, each logged by its child",
        move || {
            for i in 0..300 {
                let msg = format!("request {i}\n");
                assert_eq!(stream_echo(&addr, msg.as_bytes()), msg.as_bytes());
            }
        },
    );
    wait_until(PROMPT, "every child exited", || children_of(pid).is_empty());
    let mut server = server;
    let (status, _) = server.terminate(PROMPT);
    assert!(status.success(), "exit status {status}");
    let stderr = server.final_stderr();
    assert!(
        !stderr.contains("a child serving"),
        "a child logged: {}",
        stderr
            .lines()
            .find(|l| l.contains("a child serving"))
            .unwrap_or("")
    );
}

/// A handler's panic is logged through `log` (with the peer and where it
/// happened), not printed by the default panic hook.
#[test]
fn a_handler_panic_is_logged_not_printed_by_the_panic_hook() {
    let server = start("tcp", "127.0.0.1:0", 40, "panic", &[]);
    let addr = server.address();
    within(DEADLINE, "a panic, then an echo", move || {
        let mut c = tcp_client(&addr);
        c.write_all(b"panic\n").unwrap();
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        assert_eq!(stream_echo(&addr, MSG), MSG);
    });
    let stderr = stop(server);
    assert!(
        stderr.contains("handler panicked: asked to panic (at "),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked at"),
        "the default hook printed: {stderr}"
    );
}

/// Forking at volume: 3,000 requests from 8 concurrent clients, ten of
/// which crash their child. `max_children` is never exceeded, every crash is
/// reaped and logged, and no zombie is left.
#[test]
fn three_thousand_requests_with_crashing_children_leave_no_zombie() {
    const MAX: usize = 8;
    const REQUESTS: usize = 3_000;
    const CLIENTS: usize = 8;
    const CRASH_EVERY: usize = 300;
    let server = start("tcp", "127.0.0.1:0", MAX, "abort", &[]);
    let addr = server.address();
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let addr = addr.clone();
            thread::spawn(move || {
                for i in (c..REQUESTS).step_by(CLIENTS) {
                    let mut s = tcp_client(&addr);
                    if i % CRASH_EVERY == 0 {
                        s.write_all(b"abort").unwrap();
                        let mut buf = [0u8; 1];
                        // The child dies: EOF or reset, never an echo.
                        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
                    } else {
                        assert_eq!(stream_roundtrip(s, MSG).unwrap(), MSG, "request {i}");
                    }
                }
            })
        })
        .collect();
    let most = most_children_until_done(&server, &clients, MAX, Duration::from_secs(120));
    for c in clients {
        c.join().expect("every request served or crashed as asked");
    }
    let took = start.elapsed();
    wait_until(Duration::from_secs(2), "no zombie children", || {
        server.children().1 == 0
    });
    wait_until(DEADLINE, "no children at all", || {
        children_of(server.pid()).is_empty()
    });
    let stderr = stop(server);
    let crashes = REQUESTS / CRASH_EVERY;
    let logged = stderr.matches("was killed by signal 6").count();
    assert_eq!(logged, crashes, "each crash reaped and logged: {stderr}");
    // Figures for docs/reliability.md (`-- --nocapture`).
    eprintln!("forking: {REQUESTS} requests in {took:?}, at most {most} children at once, {logged} crashes reaped, 0 zombies");
}

/// 1,000 panicking requests under `Forking`: each child logs its panic and
/// exits; the server keeps serving and is left with no child.
#[test]
fn a_thousand_panicking_children_leave_the_server_serving() {
    let server = start("tcp", "127.0.0.1:0", 40, "panic", &[]);
    let addr = server.address();
    let a = addr.clone();
    within(Duration::from_secs(60), "1000 panics", move || {
        for i in 0..1000 {
            let mut c = tcp_client(&a);
            c.write_all(b"panic\n").unwrap();
            let mut got = Vec::new();
            let _ = c.read_to_end(&mut got);
            assert!(
                got.is_empty(),
                "request {i}: the panicking child sent nothing"
            );
        }
    });
    assert_eq!(stream_echo(&addr, MSG), MSG);
    wait_until(DEADLINE, "no children left", || {
        children_of(server.pid()).is_empty()
    });
    let stderr = stop(server);
    assert_eq!(
        stderr.matches("handler panicked: asked to panic").count(),
        1000
    );
}
