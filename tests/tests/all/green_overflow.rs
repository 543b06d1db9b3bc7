//! A handler that overflows its coroutine's stack under `Green` costs its
//! own connection only, as a panic does: the fault on the stack's guard is
//! caught, that coroutine alone ends, its connection is closed and counted
//! (`Stats::stack_overflows`), and its worker goes on serving the others.
//! A fault anywhere else still ends the process.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use socketserver::{Green, Server, StreamRequest};
use socketserver_tests::*;

/// A line echo server of one worker; the line `deep` recurses without bound.
fn server() -> Arc<Server<socketserver::transport::Tcp, Green, impl socketserver::StreamHandler>> {
    let server = Server::builder()
        .strategy(Green::new().threads(1))
        .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut line = String::new();
            loop {
                line.clear();
                if req.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line.trim() == "deep" {
                    let n = bottomless(0);
                    writeln!(req, "{n}")?;
                } else {
                    req.write_all(line.as_bytes())?;
                }
            }
        })
        .unwrap();
    Arc::new(server)
}

fn ask(c: &mut TcpStream, line: &str) -> String {
    c.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(c).read_line(&mut reply).unwrap();
    reply
}

/// Sends `deep` and expects the connection to end without a reply.
fn overflow(address: &socketserver::Address) {
    let mut c = tcp_client(address);
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c.write_all(b"deep\n").unwrap();
    let mut rest = Vec::new();
    match c.read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest.is_empty(),
            "a reply from a bottomless handler: {rest:?}"
        ),
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::ConnectionReset),
            "the overflowing connection must be closed: {e}"
        ),
    }
}

#[test]
fn a_stack_overflow_costs_only_its_connection_twice_on_the_same_worker() {
    let logs = LogCapture::install();
    let server = server();
    let address = server.server_address().clone();
    let serving = Arc::clone(&server);
    let thread = std::thread::spawn(move || serving.serve_forever());
    let mut others: Vec<TcpStream> = (0..20).map(|_| tcp_client(&address)).collect();
    for (i, c) in others.iter_mut().enumerate() {
        assert_eq!(ask(c, &format!("hello {i}")), format!("hello {i}\n"));
    }
    for round in 1..=2u64 {
        overflow(&address);
        for (i, c) in others.iter_mut().enumerate() {
            let line = format!("round {round} client {i}");
            assert_eq!(ask(c, &line), format!("{line}\n"));
        }
        wait_until(DEADLINE, "the overflow is counted", || {
            server.stats().stack_overflows == round
        });
    }
    logs.wait_for(
        log::Level::Error,
        &["stack overflow (stack_size 2097152)", "127.0.0.1"],
    );
    let stats = server.stats();
    assert_eq!(stats.stack_overflows, 2);
    assert!(stats.failed >= 2, "{stats:?}");
    assert_eq!(
        stats.connections, 20,
        "the two overflowed connections left: {stats:?}"
    );
    drop(others);
    server.shutdown_handle().shutdown();
    within(DEADLINE, "serve_forever returns", move || thread.join())
        .expect("serve_forever thread")
        .expect("serve_forever");
}

/// Set in the child process of the test below.
const CHILD: &str = "SOCKETSERVER_TEST_GREEN_OTHER_FAULT";

#[test]
fn a_fault_outside_a_coroutine_guard_still_ends_the_process() {
    if std::env::var_os(CHILD).is_some() {
        // Green's fault handler is installed (a worker ran a request)...
        let server = server();
        let address = server.server_address().clone();
        let serving = Arc::clone(&server);
        std::thread::spawn(move || serving.serve_forever());
        assert_eq!(ask(&mut tcp_client(&address), "hi"), "hi\n");
        // ...and a fault that is no coroutine's overflow kills the process.
        // SAFETY: not safe at all: this is the fault under test.
        unsafe {
            std::ptr::write_volatile(std::ptr::dangling_mut::<u64>().wrapping_add(1 << 20), 1)
        };
        std::process::exit(0);
    }
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &test_name!("a_fault_outside_a_coroutine_guard_still_ends_the_process"),
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = None;
    wait_until(DEADLINE, "the child process ends", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}");
}

#[test]
fn a_deep_handler_under_a_small_stack_loses_its_connection_not_the_process() {
    let server = Server::builder()
        .strategy(Green::new().threads(1).stack_size(64 * 1024))
        .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut line = String::new();
            req.read_line(&mut line)?;
            let n = bottomless(0);
            writeln!(req, "{n}")
        })
        .unwrap();
    let running = Running::start(server);
    overflow(&running.address);
    overflow(&running.address);
    running.stop();
}

#[test]
fn a_datagram_handler_that_overflows_costs_that_datagram_only() {
    let server = Server::builder()
        .strategy(Green::new().threads(1))
        .udp("127.0.0.1:0", |req: &mut socketserver::DatagramRequest| {
            let data = req.take_data();
            if data == b"deep" {
                let n = bottomless(0);
                return req.reply(&n.to_be_bytes());
            }
            req.reply(&data)
        })
        .unwrap();
    let server = Arc::new(server);
    let address = server.server_address().clone();
    let serving = Arc::clone(&server);
    let thread = std::thread::spawn(move || serving.serve_forever());
    let client = udp_client(&address);
    client.send(b"deep").unwrap();
    wait_until(DEADLINE, "the overflow is counted", || {
        server.stats().stack_overflows == 1
    });
    client.send(b"still here").unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"still here",
        "no reply to the overflowing datagram"
    );
    wait_until(DEADLINE, "nothing runs any more", || {
        server.stats().active == 0
    });
    server.shutdown_handle().shutdown();
    within(DEADLINE, "serve_forever returns", move || thread.join())
        .expect("serve_forever thread")
        .expect("serve_forever");
}
