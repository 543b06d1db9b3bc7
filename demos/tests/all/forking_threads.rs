//! A forking demos server forks from a single thread: `demos echo serve
//! --strategy forking` (or `prefork`) starts no upgrade watcher thread, so
//! its process has one thread while it serves and never warns about
//! forking a multi-threaded process (the forking chapter's exercises, in
//! docs/forking.md); with `--udp` its two servers run on two threads and
//! the warning is back, as that chapter says.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use socketserver_tests::{group_members, wait_until, ServerProcess, DEADLINE};

/// Threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

/// One line echoed by the server.
fn echo(server: &ServerProcess) {
    let stream = TcpStream::connect(server.inet()).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(stream);
    reader.get_mut().write_all(b"hello\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n");
}

fn serve(strategy: &str, extra: &[&str]) -> ServerProcess {
    let mut args = vec![
        "echo",
        "serve",
        "--strategy",
        strategy,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    ServerProcess::start(env!("CARGO_BIN_EXE_demos"), &args)
}

fn finish(mut server: ServerProcess) -> String {
    let (status, _) = server.terminate(DEADLINE);
    assert!(status.success(), "exit {status}");
    wait_until(DEADLINE, "no process left", || {
        group_members(server.pid()).is_empty()
    });
    server.final_stderr()
}

fn one_thread_and_no_warning(strategy: &str) {
    let server = serve(strategy, &[]);
    for _ in 0..3 {
        echo(&server);
    }
    assert_eq!(
        threads(server.pid()),
        1,
        "{strategy}: the serving process has other threads"
    );
    let stderr = finish(server);
    assert!(
        !stderr.contains("forking a process with"),
        "{strategy}: warned about threads: {stderr}"
    );
}

#[test]
fn a_forking_demos_server_has_one_thread_and_does_not_warn() {
    one_thread_and_no_warning("forking");
}

#[test]
fn a_prefork_demos_server_has_one_thread_and_does_not_warn() {
    one_thread_and_no_warning("prefork");
}

#[test]
fn a_prefork_demos_server_with_threading_inside_serves() {
    let server = serve("prefork-threading", &[]);
    for _ in 0..3 {
        echo(&server);
    }
    finish(server);
}

#[test]
fn a_forking_demos_server_with_udp_warns_once_about_its_two_threads() {
    let server = serve("forking", &["--udp", "127.0.0.1:0"]);
    // The warning is logged before the first fork, so before the echo.
    echo(&server);
    let stderr = finish(server);
    assert_eq!(
        stderr.matches("forking a process with 2 threads").count(),
        1,
        "{stderr}"
    );
}
