//! `socketserver::privilege::drop_to`: a `PreFork` server started as root
//! that drops to `nobody` once bound runs as `nobody` (real, effective,
//! saved and filesystem ids, no supplementary groups), and so do the
//! children it forks afterwards; an unknown user stops it before it
//! serves, naming the user. Needs root (skipped otherwise, saying so).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use socketserver_tests::{ServerProcess, DEADLINE};

fn nobody() -> Option<(u32, u32)> {
    let a = socketserver::privilege::lookup("nobody", None).ok()?;
    Some((a.uid, a.gid))
}

fn can_test(test: &str) -> Option<(u32, u32)> {
    if euid() != 0 {
        eprintln!("{test}: skipped: not running as root (dropping privileges needs root)");
        return None;
    }
    let ids = nobody();
    if ids.is_none() {
        eprintln!("{test}: skipped: no user named nobody on this system");
    }
    ids
}

/// This process's effective uid, from /proc (no unsafe here).
fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn a_prefork_server_and_its_children_run_as_the_user_it_dropped_to() {
    let Some((uid, gid)) = can_test("prefork drop") else {
        return;
    };
    let exe = env!("CARGO_BIN_EXE_prefork_server");
    let server = ServerProcess::start(exe, &["127.0.0.1:0", "--min=1", "--max=2", "--user=nobody"]);
    let (uids, gids, groups) = socketserver_tests::process_ids(server.pid());
    assert_eq!(
        uids,
        vec![uid; 4],
        "server's Uid (real, effective, saved, fs)"
    );
    assert_eq!(gids, vec![gid; 4], "server's Gid");
    assert!(groups.is_empty(), "supplementary groups left: {groups:?}");
    // A child serving a connection answers with its pid.
    let mut conn = TcpStream::connect(server.inet()).unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    conn.write_all(b"pid\n").unwrap();
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).unwrap();
    let child: u32 = line.trim().parse().unwrap();
    assert_ne!(child, server.pid(), "the request ran in a child");
    let (uids, gids, groups) = socketserver_tests::process_ids(child);
    assert_eq!(uids, vec![uid; 4], "child's Uid");
    assert_eq!(gids, vec![gid; 4], "child's Gid");
    assert!(groups.is_empty(), "child's groups: {groups:?}");
    drop(conn);
    let mut server = server;
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(DEADLINE);
    assert!(status.success(), "{status:?}: {}", server.stderr());
    assert_eq!(server.children(), (0, 0), "children left behind");
}

#[test]
fn an_unknown_user_stops_the_server_before_it_serves() {
    if euid() != 0 {
        eprintln!("unknown user: skipped: not running as root");
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prefork_server"))
        .args(["127.0.0.1:0", "--min=1", "--user=no-such-user-here"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-user-here"), "{stderr}");
    // It never said it listens.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
