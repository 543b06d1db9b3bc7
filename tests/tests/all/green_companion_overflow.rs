//! A companion coroutine (`green::spawn`) that overflows its stack under
//! `Green` costs its own request's connection only, as the handler's own
//! overflow does: the companion is abandoned, its request is cancelled (a
//! join fails, a wait fails, the next read or write shuts the connection
//! down), the overflow is counted, and the worker goes on serving the
//! other connections. Run in a child process, so that a regression (the
//! process killed by the fault) fails the test instead of the test binary.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use socketserver::{green, Green, Server, StreamRequest};
use socketserver_tests::*;

/// Set in the child process.
const CHILD: &str = "SOCKETSERVER_TEST_GREEN_COMPANION_OVERFLOW";

/// A line echo server of one worker: `joined` runs a bottomless companion
/// and joins it (then tries to reply); `detached` starts one and goes on
/// reading lines.
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
                match line.trim() {
                    "joined" => {
                        let joined = green::spawn(|| bottomless(0));
                        let reply = match joined.join() {
                            Ok(n) => format!("{n}\n"),
                            Err(_) => "survived the companion\n".to_string(),
                        };
                        // Must not reach the client: the connection is lost.
                        req.write_all(reply.as_bytes())?;
                    }
                    "detached" => drop(green::spawn(|| bottomless(0))),
                    _ => req.write_all(line.as_bytes())?,
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

/// Sends `line` and expects the connection to end without a reply.
fn loses_its_connection(address: &socketserver::Address, line: &str) {
    let mut c = tcp_client(address);
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut rest = Vec::new();
    match c.read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest.is_empty(),
            "{line}: a reply after the companion overflowed: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::ConnectionReset),
            "{line}: the connection must be closed: {e}"
        ),
    }
}

/// The scenario, in the child process.
fn companions_overflow() {
    let logs = LogCapture::install();
    let server = server();
    let address = server.server_address().clone();
    let serving = Arc::clone(&server);
    let thread = std::thread::spawn(move || serving.serve_forever());
    let mut others: Vec<TcpStream> = (0..20).map(|_| tcp_client(&address)).collect();
    for (i, c) in others.iter_mut().enumerate() {
        assert_eq!(ask(c, &format!("hello {i}")), format!("hello {i}\n"));
    }
    for (round, line) in [(1, "joined"), (2, "detached"), (3, "joined")] {
        loses_its_connection(&address, line);
        for (i, c) in others.iter_mut().enumerate() {
            let line = format!("round {round} client {i}");
            assert_eq!(ask(c, &line), format!("{line}\n"), "the others go on");
        }
        wait_until(DEADLINE, "the overflow is counted", || {
            server.stats().stack_overflows == round
        });
    }
    logs.wait_for(
        log::Level::Error,
        &[
            "stack overflow (stack_size 2097152)",
            "companion of the request for 127.0.0.1",
        ],
    );
    wait_until(DEADLINE, "the lost connections leave", || {
        server.stats().connections == 20
    });
    let stats = server.stats();
    assert_eq!(stats.stack_overflows, 3, "{stats:?}");
    drop(others);
    wait_until(DEADLINE, "nothing runs any more", || {
        server.stats().active == 0
    });
    server.shutdown_handle().shutdown();
    within(DEADLINE, "serve_forever returns", move || thread.join())
        .expect("serve_forever thread")
        .expect("serve_forever");
}

#[test]
fn a_companion_that_overflows_costs_its_request_s_connection_only() {
    if std::env::var_os(CHILD).is_some() {
        companions_overflow();
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("child.log");
    let log = std::fs::File::create(&out).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &test_name!("a_companion_that_overflows_costs_its_request_s_connection_only"),
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut status = None;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while status.is_none() && std::time::Instant::now() < end {
        status = child.try_wait().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the child did not end within 120 s:\n{}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
    };
    assert!(
        status.success(),
        "the child failed ({status:?}, signal {:?}):\n{}",
        status.signal(),
        std::fs::read_to_string(&out).unwrap_or_default()
    );
}
