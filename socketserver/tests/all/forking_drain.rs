//! `Forking` at `max_children` meets SIGTERM: the `echo_server` example
//! (a process of its own, so that no other thread exists when it forks)
//! with more clients than children. Every child learns of the drain,
//! however close to it it was forked, so the close takes no longer than
//! its idle connections need, and no child is left.

use crate::common;
use common::example;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `kill(2)` through the `kill` command, keeping this file free of unsafe.
fn send_signal(target: &str, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(target)
        .status()
        .unwrap();
    assert!(ok.success());
}

fn sigterm_with_more_clients_than_children(clients: usize, to_group: bool) -> (Duration, String) {
    let mut child = Command::new(example())
        .args(["127.0.0.1:0", "forking"])
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let url = common::listening_url(&common::stdout_lines(&mut child));
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    // Every client sends a byte at once; SIGTERM goes as soon as 8 have
    // their echo, while the server is still forking children for the
    // others (and 40, the default max_children, is less than `clients`).
    let mut held = Vec::new();
    for _ in 0..clients {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"x").unwrap();
        held.push(s);
    }
    for s in &mut held[..8] {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
    }
    let start = Instant::now();
    let target = if to_group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    send_signal(&target, "TERM");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no exit within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let took = start.elapsed();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "exit status {status}, stderr {err}");
    // Every child was reaped before the parent exited: none is left in
    // its process group, running or zombie.
    let left = common::group_members(pid);
    assert!(left.is_empty(), "processes left in the group: {left:?}");
    drop(held);
    (took, err)
}

fn sigterm_exits_at_once_and_kills_none(to_group: bool) {
    for round in 0..10 {
        let (took, err) = sigterm_with_more_clients_than_children(50, to_group);
        eprintln!("round {round}: exit {} ms after SIGTERM", took.as_millis());
        assert!(
            !err.contains("killing") && !err.contains("SIGKILL") && !err.contains("cut: 1"),
            "a child was killed: {err}"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}; stderr {err}");
    }
}

#[test]
fn sigterm_at_max_children_with_clients_waiting_exits_at_once_and_kills_none() {
    sigterm_exits_at_once_and_kills_none(false);
}

#[test]
fn sigterm_to_the_group_at_max_children_with_clients_waiting_exits_at_once_and_kills_none() {
    sigterm_exits_at_once_and_kills_none(true);
}
