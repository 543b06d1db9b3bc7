//! `--pid-file` on a demos server: the file holds the server's pid once it
//! listens, a second server with the same file exits 2 naming the path and
//! the running pid, a clean exit removes the file, and a SIGUSR2 upgrade's
//! new process rewrites it with its own pid (the old one, exiting after its
//! drain, leaves it alone).

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::{process_alive, run_demos, wait_until, ServerProcess, DEADLINE};

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn the_pid_file_holds_the_pid_and_a_clean_exit_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("echo.pid");
    let mut server = ServerProcess::start(
        &["echo", "serve", "--pid-file", pid_file.to_str().unwrap()],
        &[],
    );
    server.next_listening();
    assert_eq!(read_pid(&pid_file), Some(server.child.id()));
    ServerProcess::signal(server.child.id(), "TERM");
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}: {}", server.stderr());
    assert!(!pid_file.exists(), "the pid file outlived a clean exit");
}

#[test]
fn a_second_server_with_the_same_pid_file_exits_2_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("echo.pid");
    let path = pid_file.to_str().unwrap();
    let server = ServerProcess::start(&["echo", "serve", "--pid-file", path], &[]);
    server.next_listening();
    let second = run_demos(&["echo", "serve", "--pid-file", path], b"", DEADLINE);
    assert_eq!(second.status.code(), Some(2), "{second:?}");
    assert!(second.stdout.is_empty(), "it must not listen: {second:?}");
    let first = server.child.id().to_string();
    assert!(
        second.stderr.contains(path) && second.stderr.contains(&first),
        "the error names neither the path nor pid {first}: {}",
        second.stderr
    );
    // The first one's file is untouched.
    assert_eq!(read_pid(&pid_file), Some(server.child.id()));
}

#[test]
fn a_stale_pid_file_from_a_dead_server_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("echo.pid");
    std::fs::write(&pid_file, "999999999\n").unwrap();
    let server = ServerProcess::start(
        &["echo", "serve", "--pid-file", pid_file.to_str().unwrap()],
        &[],
    );
    server.next_listening();
    assert_eq!(read_pid(&pid_file), Some(server.child.id()));
}

#[test]
fn an_upgrade_rewrites_the_pid_file_with_the_new_process() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("echo.pid");
    let path = pid_file.to_str().unwrap();
    let mut server = ServerProcess::start(&["echo", "serve", "--pid-file", path], &[]);
    let addr = server.next_listening();
    let first = server.child.id();
    ServerProcess::signal(first, "USR2");
    // The new process prints its own `listening on` line (same address).
    assert_eq!(server.next_listening(), addr);
    wait_until(DEADLINE, "the pid file names the new process", || {
        read_pid(&pid_file).is_some_and(|p| p != first)
    });
    let second = read_pid(&pid_file).unwrap();
    assert!(
        process_alive(second),
        "pid {second} in the file is not running"
    );
    // The old process exits after its (empty) drain, leaving the file.
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}: {}", server.stderr());
    assert_eq!(read_pid(&pid_file), Some(second));
    // The lock went along: a third server is refused, naming the new one.
    let third = run_demos(&["echo", "serve", "--pid-file", path], b"", DEADLINE);
    assert_eq!(third.status.code(), Some(2), "{third:?}");
    assert!(
        third.stderr.contains(&second.to_string()),
        "{}",
        third.stderr
    );
    // The new process's clean exit removes the file.
    ServerProcess::signal(second, "TERM");
    wait_until(DEADLINE, "the new process exits", || !process_alive(second));
    wait_until(Duration::from_secs(2), "the pid file is removed", || {
        !pid_file.exists()
    });
}
