//! What only the `Green` strategy has: requests as coroutines on a few
//! threads, the escapes for blocking work (`green::blocking`, `green::sleep`),
//! the warning for a coroutine that holds its thread, configurable stacks.
//! (The behaviour every strategy shares runs under `Green` in the other test
//! files.)

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use socketserver::{green, Green, Server, StreamRequest};
use socketserver_tests::*;

/// Sends `line` and reads one line back.
fn ask(c: &mut TcpStream, line: &str) -> String {
    c.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(c).read_line(&mut reply).unwrap();
    reply
}

/// A server of one worker thread whose handler answers `wait` once another
/// connection said `go` (giving up after about 5 s), and echoes anything
/// else. `wait` waits in the way `how` says.
fn one_thread_server(how: fn(&Arc<AtomicBool>) -> bool) -> Running {
    let go = Arc::new(AtomicBool::new(false));
    let server = Server::builder()
        .strategy(Green::new().threads(1))
        .tcp("127.0.0.1:0", move |req: &mut StreamRequest| {
            let mut line = String::new();
            while req.read_line(&mut line)? > 0 {
                match line.trim() {
                    "wait" => {
                        let seen = how(&go);
                        writeln!(req, "{}", if seen { "saw go" } else { "gave up" })?;
                    }
                    "go" => {
                        go.store(true, Ordering::SeqCst);
                        writeln!(req, "went")?;
                    }
                    other => writeln!(req, "{other}")?,
                }
                line.clear();
            }
            Ok(())
        })
        .unwrap();
    Running::start(server)
}

/// Asks one client to `wait` and another to `go`, on a server of one
/// thread: the waiting one sees `go` only if its wait let the other run.
fn the_waiting_client_sees_the_other(how: fn(&Arc<AtomicBool>) -> bool) {
    let running = one_thread_server(how);
    let mut waiting = tcp_client(&running.address);
    waiting.write_all(b"wait\n").unwrap();
    let mut other = tcp_client(&running.address);
    assert_eq!(ask(&mut other, "go"), "went\n");
    let mut reply = String::new();
    BufReader::new(&mut waiting).read_line(&mut reply).unwrap();
    assert_eq!(reply, "saw go\n");
    running.stop();
}

#[test]
fn green_sleep_lets_other_connections_on_the_same_thread_run() {
    the_waiting_client_sees_the_other(|go| {
        for _ in 0..500 {
            if go.load(Ordering::SeqCst) {
                return true;
            }
            green::sleep(Duration::from_millis(10));
        }
        false
    });
}

#[test]
fn green_sleep_zero_yields_to_the_other_connections_as_gevents_sleep_0_does() {
    the_waiting_client_sees_the_other(|go| {
        // Without a yield this loop would hold the only thread for 5 s and
        // the other client could not say `go`.
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < end {
            if go.load(Ordering::SeqCst) {
                return true;
            }
            green::sleep(Duration::ZERO);
        }
        false
    });
}

#[test]
fn green_blocking_runs_the_call_elsewhere_while_other_connections_run() {
    the_waiting_client_sees_the_other(|go| {
        let go = Arc::clone(go);
        // A plain blocking wait: on the worker itself it would stall the
        // only thread, and the other client could never say `go`.
        green::blocking(move || {
            for _ in 0..500 {
                if go.load(Ordering::SeqCst) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        })
    });
}

#[test]
fn a_panic_in_a_blocking_call_costs_its_connection_only() {
    let server = Server::builder()
        .strategy(Green::new().threads(1))
        .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut line = String::new();
            while req.read_line(&mut line)? > 0 {
                if line.trim() == "panic" {
                    green::blocking(|| panic!("a blocking call failed"));
                }
                req.write_all(line.as_bytes())?;
                line.clear();
            }
            Ok(())
        })
        .unwrap();
    let running = Running::start(server);
    let mut doomed = tcp_client(&running.address);
    doomed.write_all(b"panic\n").unwrap();
    let mut rest = String::new();
    assert_eq!(
        BufReader::new(&mut doomed)
            .read_line(&mut rest)
            .unwrap_or(0),
        0
    );
    let mut next = tcp_client(&running.address);
    assert_eq!(ask(&mut next, "still here"), "still here\n");
    running.stop();
}

#[test]
fn requests_run_on_the_configured_number_of_threads_and_stay_on_theirs() {
    let seen: Arc<parking_lot::Mutex<HashSet<ThreadId>>> = Arc::default();
    let threads = Arc::clone(&seen);
    let server = Server::builder()
        .strategy(Green::new().threads(2))
        .tcp("127.0.0.1:0", move |req: &mut StreamRequest| {
            let home = std::thread::current().id();
            threads.lock().insert(home);
            let mut line = String::new();
            while req.read_line(&mut line)? > 0 {
                // A coroutine never moves: thread-locals stay its own.
                let here = std::thread::current().id();
                let answer = if here == home { "home" } else { "moved" };
                writeln!(req, "{answer}")?;
                line.clear();
            }
            Ok(())
        })
        .unwrap();
    let running = Running::start(server);
    let mut clients: Vec<TcpStream> = (0..50).map(|_| tcp_client(&running.address)).collect();
    for round in 0..5 {
        for c in &mut clients {
            assert_eq!(ask(c, &format!("round {round}")), "home\n");
        }
    }
    assert_eq!(seen.lock().len(), 2, "50 connections served by 2 threads");
    drop(clients);
    running.stop();
}

/// Records where `verify_request` and `handle` ran.
#[derive(Default, Clone)]
struct WhereItRuns {
    verify: Arc<parking_lot::Mutex<Option<(bool, ThreadId)>>>,
    handle: Arc<parking_lot::Mutex<Option<ThreadId>>>,
}

impl socketserver::StreamHandler for WhereItRuns {
    fn verify_request(&self, _peer: &socketserver::Address) -> bool {
        *self.verify.lock() = Some((green::is_green(), std::thread::current().id()));
        true
    }

    fn handle(&self, req: &mut StreamRequest) -> std::io::Result<()> {
        *self.handle.lock() = Some(std::thread::current().id());
        req.echo().map(drop)
    }
}

#[test]
fn the_server_loop_runs_as_a_coroutine_on_the_worker_that_serves_what_it_accepts() {
    let seen = WhereItRuns::default();
    let server = Server::builder()
        .strategy(Green::new().threads(1))
        .tcp("127.0.0.1:0", seen.clone())
        .unwrap();
    let running = Running::start(server);
    let mut c = tcp_client(&running.address);
    assert_eq!(ask(&mut c, "hello"), "hello\n");
    let verify = *seen.verify.lock();
    let handle = *seen.handle.lock();
    let (in_coroutine, loop_thread) = verify.expect("verify_request ran");
    assert!(in_coroutine, "verify_request runs in the loop's coroutine");
    assert_eq!(
        Some(loop_thread),
        handle,
        "one worker: the loop and the request share its thread"
    );
    assert_ne!(loop_thread, std::thread::current().id());
    drop(c);
    running.stop();
}

#[test]
fn serve_forever_called_from_a_green_handler_runs_that_loop_without_blocking_its_worker() {
    // The outer server has one worker. While one of its handlers runs an
    // inner server's serve_forever (and then closes it), another client of
    // the outer server is still served on that same worker.
    let server = Server::builder()
        .strategy(Green::new().threads(1))
        .tcp("127.0.0.1:0", move |req: &mut StreamRequest| {
            let mut line = String::new();
            while req.read_line(&mut line)? > 0 {
                if line.trim() != "serve" {
                    write!(req, "{line}")?;
                    line.clear();
                    continue;
                }
                let inner = Server::builder().strategy(Green::new().threads(1)).tcp(
                    "127.0.0.1:0",
                    |r: &mut StreamRequest| {
                        let mut line = String::new();
                        r.read_line(&mut line)?;
                        if line.trim() == "stop" {
                            r.shutdown_handle().shutdown();
                        }
                        write!(r, "{line}")
                    },
                )?;
                writeln!(req, "{}", inner.port().unwrap_or(0))?;
                req.flush()?;
                inner.serve_forever()?;
                drop(inner);
                writeln!(req, "inner server closed")?;
                line.clear();
            }
            Ok(())
        })
        .unwrap();
    let running = Running::start(server);
    let mut outer = tcp_client(&running.address);
    let port = ask(&mut outer, "serve");
    let mut other = tcp_client(&running.address);
    assert_eq!(
        ask(&mut other, "still served"),
        "still served\n",
        "the worker goes on while a handler runs an inner loop"
    );
    let inner_addr = format!("127.0.0.1:{}", port.trim());
    let mut inner = TcpStream::connect(&inner_addr).unwrap();
    inner.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(ask(&mut inner, "stop"), "stop\n");
    outer.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut last = String::new();
    BufReader::new(&mut outer).read_line(&mut last).unwrap();
    assert_eq!(last, "inner server closed\n");
    assert_eq!(ask(&mut other, "again"), "again\n");
    drop((inner, outer, other));
    running.stop();
}

#[test]
fn a_coroutine_that_holds_its_thread_is_reported_with_its_peer() {
    let server = Server::builder()
        .strategy(Green::new().threads(1))
        .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
            // What not to do under Green: a plain sleep stalls the thread.
            std::thread::sleep(Duration::from_millis(150));
            req.write_all(b"late\n")
        })
        .unwrap();
    let logs = LogCapture::install();
    let running = Running::start(server);
    let mut c = tcp_client(&running.address);
    let port = c.local_addr().unwrap().port().to_string();
    let mut reply = String::new();
    BufReader::new(&mut c).read_line(&mut reply).unwrap();
    assert_eq!(reply, "late\n");
    logs.wait_for(log::Level::Warn, &[&port, "without yielding"]);
    running.stop();
}

/// About 200 KiB of stack (100 frames of 2 KiB): more than a 64 KiB
/// stack holds.
#[inline(never)]
fn deep(n: u32) -> u64 {
    let frame = std::hint::black_box([n as u8; 2048]);
    if n == 0 {
        return u64::from(frame[0]);
    }
    deep(n - 1) + u64::from(frame[n as usize % 2048])
}

/// A server of one worker with `stack` bytes of stack per coroutine whose
/// handler answers with `deep(100)`.
fn deep_server(stack: usize) -> Running {
    let server = Server::builder()
        .strategy(Green::new().threads(1).stack_size(stack))
        .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
            let sum = deep(100);
            writeln!(req, "{sum}")
        })
        .unwrap();
    Running::start(server)
}

#[test]
fn a_larger_stack_size_serves_a_handler_with_a_deep_stack() {
    let running = deep_server(1024 * 1024);
    let mut c = tcp_client(&running.address);
    let mut reply = String::new();
    BufReader::new(&mut c).read_line(&mut reply).unwrap();
    let expected: u64 = (1..=100u64).map(|n| n % 256).sum();
    assert_eq!(reply.trim().parse::<u64>().unwrap(), expected);
    running.stop();
}

#[test]
fn blocking_and_sleep_outside_green_just_run() {
    assert!(!green::is_green());
    assert_eq!(green::blocking(|| 6 * 7), 42);
    green::sleep(Duration::from_millis(1));
    green::yield_now();
}

const PANIC_CHILD: &str = "SOCKETSERVER_TEST_GREEN_PANIC_CHILD";
const PANIC_MARKER: &str = "green handler panic marker";

#[test]
fn a_handler_panic_while_other_coroutines_are_mid_request_prints_nothing_to_stderr() {
    if std::env::var_os(PANIC_CHILD).is_some() {
        // The child: on one worker thread, connection A is inside its
        // handler (napping) when B's handler starts; A's handler ends,
        // then B's panics. Every panic must reach the log only.
        let server = Server::builder()
            .strategy(Green::new().threads(1))
            .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
                let mut line = String::new();
                while req.read_line(&mut line)? > 0 {
                    match line.trim() {
                        "nap" => green::sleep(Duration::from_millis(300)),
                        "panic" => panic!("{PANIC_MARKER}"),
                        _ => {}
                    }
                    writeln!(req, "done")?;
                    line.clear();
                }
                Ok(())
            })
            .unwrap();
        let running = Running::start(server);
        let mut a = tcp_client(&running.address);
        a.write_all(b"nap\n").unwrap();
        let mut b = tcp_client(&running.address);
        assert_eq!(ask(&mut b, "hello"), "done\n"); // B is in its handler
        let mut reply = String::new();
        BufReader::new(&mut a).read_line(&mut reply).unwrap();
        assert_eq!(reply, "done\n");
        drop(a); // A's handler ends while B's waits for its next line
        std::thread::sleep(Duration::from_millis(100));
        b.write_all(b"panic\n").unwrap();
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut b, &mut rest);
        assert!(
            rest.is_empty(),
            "the panicking handler's connection is closed"
        );
        running.stop();
        std::process::exit(0);
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &test_name!(
                "a_handler_panic_while_other_coroutines_are_mid_request_prints_nothing_to_stderr",
            ),
            "--test-threads=1",
            "--nocapture",
        ])
        .env(PANIC_CHILD, "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let output = within(DEADLINE, "the child process ends", move || {
        child.wait_with_output().unwrap()
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed: {stderr}");
    assert!(
        !stderr.contains(PANIC_MARKER),
        "a handler panic reached stderr: {stderr}"
    );
}

#[test]
fn data_then_a_half_close_is_echoed_to_the_end_every_time() {
    // The end-of-file often comes with the last bytes: a read that drains
    // them must not make the next read wait for an event that already came.
    let server = Server::builder()
        .strategy(Green::new().threads(1))
        .tcp("127.0.0.1:0", echo_stream)
        .unwrap();
    let running = Running::start(server);
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    for round in 0..30 {
        let mut c = tcp_client(&running.address);
        let back = within(DEADLINE, &format!("round {round}"), {
            let data = data.clone();
            move || {
                let mut sender = c.try_clone().unwrap();
                let writer = std::thread::spawn(move || {
                    sender.write_all(&data).unwrap();
                    sender.shutdown(std::net::Shutdown::Write).unwrap();
                });
                let mut back = Vec::new();
                std::io::Read::read_to_end(&mut c, &mut back).unwrap();
                writer.join().unwrap();
                back
            }
        });
        assert!(back == data, "round {round}: {} bytes back", back.len());
    }
    running.stop();
}
