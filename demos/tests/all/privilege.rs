//! `--user` / `--group` on demos servers: started as root, a server runs
//! as the user once bound (real, effective, saved and filesystem ids, no
//! supplementary groups), and so do the children a forking server forks
//! per connection; an unknown user stops it before it serves, naming the
//! user (exit status 2); the shell refuses to run clients' commands as
//! root unless --allow-root, and runs them as --user. Needs root and the
//! `nobody` user (skipped otherwise, saying so).

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use common::{run_demos, wait_until, ServerProcess, DEADLINE};
use demos::shell::client::Session;
use socketserver::auth::Key;
use socketserver::Address;

/// The uid and gid of nobody/nogroup, when this test can run.
fn can_test(test: &str) -> Option<(u32, u32)> {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("{test}: skipped: not running as root (dropping privileges needs root)");
        return None;
    }
    match socketserver::privilege::lookup("nobody", Some("nogroup")) {
        Ok(a) => Some((a.uid, a.gid)),
        Err(e) => {
            eprintln!("{test}: skipped: {e}");
            None
        }
    }
}

fn assert_runs_as(pid: u32, uid: u32, gid: u32, what: &str) {
    let (uids, gids, groups) = socketserver_tests::process_ids(pid);
    assert_eq!(uids, vec![uid; 4], "{what} {pid}: Uid");
    assert_eq!(gids, vec![gid; 4], "{what} {pid}: Gid");
    assert!(groups.is_empty(), "{what} {pid}: groups {groups:?}");
}

#[test]
fn a_forking_echo_server_and_its_children_run_as_the_user() {
    let Some((uid, gid)) = can_test("forking --user") else {
        return;
    };
    let mut server = ServerProcess::start(
        &[
            "echo",
            "serve",
            "--strategy",
            "forking",
            "--user",
            "nobody",
            "--group",
            "nogroup",
        ],
        &[],
    );
    let Address::Inet(addr) = server.next_listening() else {
        panic!("not TCP")
    };
    let pid = server.child.id();
    assert_runs_as(pid, uid, gid, "server");
    // While a connection is open, its child serves it.
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    conn.write_all(b"hello\n").unwrap();
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n");
    let children = socketserver_tests::children_of(pid);
    let live: Vec<u32> = children
        .iter()
        .filter(|&&(_, s)| s != 'Z')
        .map(|&(p, _)| p)
        .collect();
    assert!(!live.is_empty(), "no child serves the connection");
    for child in live {
        assert_runs_as(child, uid, gid, "child");
    }
    drop(conn);
    ServerProcess::signal(pid, "TERM");
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}: {}", server.stderr());
    assert!(
        server.stderr().contains("running as user nobody"),
        "{}",
        server.stderr()
    );
    wait_until(DEADLINE, "no zombie left", || {
        socketserver_tests::children_of(pid).is_empty()
    });
}

#[test]
fn an_unknown_user_stops_the_server_before_it_listens() {
    let out = run_demos(
        &["echo", "serve", "--user", "no-such-user-here"],
        b"",
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "it must not say it listens: {out:?}");
    assert!(out.stderr.contains("no-such-user-here"), "{}", out.stderr);
}

#[test]
fn the_shell_refuses_root_without_allow_root_and_runs_commands_as_the_user() {
    let Some((uid, _)) = can_test("shell --user") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("k");
    std::fs::write(&key_file, "the key").unwrap();
    let key_path = key_file.to_str().unwrap();
    let refused = run_demos(&["shell", "serve", "--key-file", key_path], b"", DEADLINE);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(refused.stdout.is_empty(), "{refused:?}");
    assert!(
        refused.stderr.contains("as root") && refused.stderr.contains("--allow-root"),
        "{}",
        refused.stderr
    );
    // --user root is root too.
    let as_root = run_demos(
        &["shell", "serve", "--key-file", key_path, "--user", "root"],
        b"",
        DEADLINE,
    );
    assert_eq!(as_root.status.code(), Some(2), "{as_root:?}");

    let server = ServerProcess::start(
        &["shell", "serve", "--key-file", key_path, "--user", "nobody"],
        &[],
    );
    let addr = server.next_listening();
    let key = Key::from_file(&key_file).unwrap();
    let mut session = Session::connect(&addr, &key, DEADLINE).unwrap();
    session.run("cd /").unwrap();
    let reply = session.run("id -u").unwrap();
    assert_eq!(reply.header.exit_code, Some(0), "{reply:?}");
    assert_eq!(
        String::from_utf8_lossy(&reply.stdout).trim(),
        uid.to_string()
    );
}
