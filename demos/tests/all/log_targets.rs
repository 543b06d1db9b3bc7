//! `--log syslog` and `--log journald` on demos servers: the records reach
//! a Unix datagram socket the test binds in a temp dir in place of
//! /dev/log or the journal's socket (named by `DEMOS_SYSLOG_SOCKET`,
//! `DEMOS_JOURNAL_SOCKET`), with the priority of their level, the `demos`
//! identifier and the server's pid, and the message; a socket nobody
//! listens on stops the server before it serves, naming it.

use crate::common;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use common::{run_demos, ServerProcess, DEADLINE};
use demos::logging::{JOURNAL_SOCKET_VAR, SYSLOG_SOCKET_VAR};

/// Receives datagrams until one satisfies `want` (panics after DEADLINE).
fn receive_until(sock: &UnixDatagram, mut want: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let end = Instant::now() + DEADLINE;
    let mut buf = vec![0u8; 65536];
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no such record within {DEADLINE:?}; got {seen:#?}"
        );
        sock.set_read_timeout(Some(left)).unwrap();
        let Ok(n) = sock.recv(&mut buf) else { continue };
        if want(&buf[..n]) {
            return buf[..n].to_vec();
        }
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

/// Parses journal native protocol fields (plain `NAME=value` lines, and the
/// length-prefixed form).
fn journal_fields(mut data: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while !data.is_empty() {
        let nl = data.iter().position(|&b| b == b'\n').expect("a newline");
        let line = &data[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            data = &data[nl + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let rest = &data[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            fields.insert(
                name,
                String::from_utf8_lossy(&rest[8..8 + len]).into_owned(),
            );
            data = &rest[8 + len + 1..];
        }
    }
    fields
}

#[test]
fn syslog_records_carry_priority_identifier_pid_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let sock = UnixDatagram::bind(&path).unwrap();
    let server = ServerProcess::start(
        &["echo", "serve", "--log", "syslog"],
        &[(SYSLOG_SOCKET_VAR, path.to_str().unwrap())],
    );
    let addr = server.next_listening().to_string();
    let pid = server.child.id();
    // A client's visit is logged at info ("echo: PEER connected").
    let out = run_demos(&["echo", "client", "--connect", &addr, "hi"], b"", DEADLINE);
    assert!(out.status.success(), "{out:?}");
    let record = receive_until(&sock, |d| String::from_utf8_lossy(d).contains("connected"));
    let text = String::from_utf8(record).unwrap();
    // <PRI>: facility daemon (3) * 8 + severity info (6) = 30.
    assert!(text.starts_with("<30>"), "{text}");
    let tag = format!("demos[{pid}]: ");
    let message = text
        .split_once(&tag)
        .unwrap_or_else(|| panic!("no {tag:?} in {text:?}"))
        .1;
    assert!(
        message.starts_with("echo: 127.0.0.1:") && message.ends_with(" connected"),
        "{message}"
    );
    assert!(
        server.stderr().is_empty(),
        "records went to stderr too: {}",
        server.stderr()
    );
}

#[test]
fn journald_records_carry_priority_identifier_pid_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let sock = UnixDatagram::bind(&path).unwrap();
    let server = ServerProcess::start(
        &["echo", "serve", "--log", "journald"],
        &[(JOURNAL_SOCKET_VAR, path.to_str().unwrap())],
    );
    let addr = server.next_listening().to_string();
    let out = run_demos(&["echo", "client", "--connect", &addr, "hi"], b"", DEADLINE);
    assert!(out.status.success(), "{out:?}");
    let record = receive_until(&sock, |d| {
        !d.is_empty()
            && journal_fields(d)
                .get("MESSAGE")
                .is_some_and(|m| m.ends_with(" connected"))
    });
    let fields = journal_fields(&record);
    assert_eq!(fields["PRIORITY"], "6", "{fields:?}");
    assert_eq!(fields["SYSLOG_IDENTIFIER"], "demos", "{fields:?}");
    assert_eq!(
        fields["SYSLOG_PID"],
        server.child.id().to_string(),
        "{fields:?}"
    );
    assert_eq!(fields["RUST_TARGET"], "demos::echo", "{fields:?}");
    assert!(
        fields["MESSAGE"].starts_with("echo: 127.0.0.1:"),
        "{fields:?}"
    );
    // The stop is logged too, at info.
    ServerProcess::signal(server.child.id(), "TERM");
    let closing = receive_until(&sock, |d| {
        !d.is_empty()
            && journal_fields(d)
                .get("MESSAGE")
                .is_some_and(|m| m.contains("shutting down"))
    });
    assert_eq!(journal_fields(&closing)["PRIORITY"], "6");
}

#[test]
fn a_log_socket_nobody_listens_on_stops_the_server_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (target, var) in [
        ("syslog", SYSLOG_SOCKET_VAR),
        ("journald", JOURNAL_SOCKET_VAR),
    ] {
        let path = dir.path().join(format!("{target}-nobody"));
        let mut cmd = std::process::Command::new(common::exe());
        let out = cmd
            .args(["echo", "serve", "--log", target])
            .env(var, &path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{target}: {out:?}");
        assert!(out.stdout.is_empty(), "{target}: it must not listen");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "{target}: {stderr}"
        );
    }
}
