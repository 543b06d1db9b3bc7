//! SIGTERM with idle clients connected: every stream demo (echo, chat,
//! shell, files) run as the `demos` binary exits with status 0 at once,
//! under `synchronous` and `threading`, although its drain deadline is
//! 30 s. A client waiting between two messages is idle: the graceful close
//! ends it without waiting for the deadline; a connection still in its
//! authentication handshake is closed too (the figures are printed; run
//! with `--nocapture` to see them).

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::exe;
use demos::files::client::Client;
use demos::shell::client::Session;
use demos::showcase::drive::{self, Member, Peer, ServerProcess};
use socketserver::auth::Key;
use socketserver_tests::PROMPT;

/// Far longer than `PROMPT`: a server that waited for its idle clients
/// until the deadline would fail the test.
const DRAIN: &str = "30";

fn start(args: &[&str], lines: usize) -> ServerProcess {
    ServerProcess::start(exe(), args, lines).unwrap_or_else(|e| panic!("demos {args:?}: {e}"))
}

/// SIGTERM; exit status 0 within `PROMPT` (the drain is 30 s); returns how
/// long it took, and prints it.
fn terminate(mut server: ServerProcess, what: &str) -> Duration {
    let (took, status) = server
        .terminate(PROMPT)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what}: exit status {status}");
    eprintln!("{what}: SIGTERM -> exit 0 in {took:?}");
    took
}

fn key_file(dir: &Path) -> (std::path::PathBuf, Key) {
    let path = dir.join("test.key");
    std::fs::write(&path, "a key for the shutdown tests, long enough\n").unwrap();
    let key = Key::from_file(&path).unwrap();
    (path, key)
}

/// How many idle clients the server serves at once: one under
/// `synchronous` (a second one waits in the listen queue, never accepted).
fn served(strategy: &str) -> usize {
    if strategy == "synchronous" {
        1
    } else {
        3
    }
}

fn echo_with_idle_clients(strategy: &str, upper: bool) {
    let mut args = vec![
        "echo",
        "serve",
        "--udp",
        "127.0.0.1:0",
        "--strategy",
        strategy,
        "--drain-secs",
        DRAIN,
    ];
    if upper {
        args.push("--upper");
    }
    let server = start(&args, 2);
    let addr = server.address(0).clone();
    let mut clients = Vec::new();
    for i in 0..served(strategy) {
        let mut c = Member::connect(&addr, drive::STEP).unwrap();
        c.nick = format!("echo client {i}");
        c.send("ping").unwrap();
        let want = if upper { "PING" } else { "ping" };
        assert_eq!(c.line().unwrap(), want);
        clients.push(c);
    }
    // Connected, never served under synchronous.
    let _queued = Member::connect(&addr, drive::STEP).unwrap();
    let what = format!(
        "echo{} --strategy {strategy}, {} idle",
        if upper { " --upper" } else { "" },
        clients.len()
    );
    terminate(server, &what);
    for c in &mut clients {
        assert!(c.closed_within(drive::STEP), "{what}: {} open", c.nick);
    }
}

#[test]
fn echo_exits_at_once_with_idle_clients_under_synchronous() {
    echo_with_idle_clients("synchronous", false);
    echo_with_idle_clients("synchronous", true);
}

#[test]
fn echo_exits_at_once_with_idle_clients_under_threading() {
    echo_with_idle_clients("threading", false);
    echo_with_idle_clients("threading", true);
}

/// The TCP room needs threading or pool (synchronous is refused); the UDP
/// relay runs under `udp_strategy`.
fn chat_with_idle_members(strategy: &str, udp_strategy: &str) {
    let server = start(
        &[
            "chat",
            "serve",
            "--udp",
            "127.0.0.1:0",
            "--strategy",
            strategy,
            "--udp-strategy",
            udp_strategy,
            "--drain-secs",
            DRAIN,
        ],
        2,
    );
    let tcp = server.address(0).clone();
    let mut members: Vec<Member> = ["ann", "ben", "cat"]
        .iter()
        .map(|n| Member::join(&tcp, n, drive::STEP).unwrap().0)
        .collect();
    let _no_nick_yet = Member::connect(&tcp, drive::STEP).unwrap();
    let (_peer, _) = Peer::join(server.address(1), "udpeer", drive::STEP).unwrap();
    let what = format!("chat --strategy {strategy} --udp-strategy {udp_strategy}, 3 idle members");
    terminate(server, &what);
    for m in &mut members {
        assert!(m.closed_within(drive::STEP), "{what}: {} open", m.nick);
    }
}

#[test]
fn chat_exits_at_once_with_idle_members_and_a_synchronous_udp_relay() {
    chat_with_idle_members("threading", "synchronous");
    chat_with_idle_members("pool", "synchronous");
}

#[test]
fn chat_exits_at_once_with_idle_members_and_a_threading_udp_relay() {
    chat_with_idle_members("threading", "threading");
}

fn shell_with_idle_sessions(strategy: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, key) = key_file(dir.path());
    let key_arg = key_path.to_str().unwrap();
    let server = start(
        &[
            "shell",
            "serve",
            "--allow-root",
            "--key-file",
            key_arg,
            "--strategy",
            strategy,
            "--drain-secs",
            DRAIN,
        ],
        1,
    );
    let addr = server.address(0).clone();
    let mut sessions = Vec::new();
    for _ in 0..served(strategy) {
        let mut s = Session::connect(&addr, &key, drive::STEP).unwrap();
        assert_eq!(s.run("echo ready").unwrap().stdout, b"ready\n");
        sessions.push(s);
    }
    // Connected, silent: in its handshake (threading) or queued
    // (synchronous).
    let _unauthenticated = Member::connect(&addr, drive::STEP).unwrap();
    let what = format!(
        "shell --strategy {strategy}, {} idle authenticated sessions",
        sessions.len()
    );
    terminate(server, &what);
    for s in &mut sessions {
        assert!(s.run("true").is_err(), "{what}: a session still runs");
    }
}

#[test]
fn shell_exits_at_once_with_idle_sessions_under_synchronous() {
    shell_with_idle_sessions("synchronous");
}

#[test]
fn shell_exits_at_once_with_idle_sessions_under_threading() {
    shell_with_idle_sessions("threading");
}

fn files_with_idle_clients(strategy: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, key) = key_file(dir.path());
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let server = start(
        &[
            "files",
            "serve",
            "--root",
            root.to_str().unwrap(),
            "--key-file",
            key_path.to_str().unwrap(),
            "--strategy",
            strategy,
            "--drain-secs",
            DRAIN,
        ],
        1,
    );
    let addr = server.address(0).clone();
    let mut clients = Vec::new();
    for i in 0..served(strategy) {
        let mut c = Client::connect(&addr, Some(&key), drive::STEP).unwrap();
        c.put_bytes(&format!("f{i}"), b"hello").unwrap();
        clients.push(c);
    }
    // Connected, silent: in its handshake (threading) or queued
    // (synchronous).
    let _unauthenticated = Member::connect(&addr, drive::STEP).unwrap();
    let what = format!(
        "files --strategy {strategy}, {} idle authenticated clients",
        clients.len()
    );
    terminate(server, &what);
    for c in &mut clients {
        assert!(c.list().is_err(), "{what}: a client is still served");
    }
}

#[test]
fn files_exits_at_once_with_idle_clients_under_synchronous() {
    files_with_idle_clients("synchronous");
}

#[test]
fn files_exits_at_once_with_idle_clients_under_threading() {
    files_with_idle_clients("threading");
}
