//! A `PreFork` server upgraded with SIGUSR2 (the `echo_server` example,
//! `prefork --upgrade`, a process group of its own): the old children
//! keep the connections they hold, idle ones included, and serve them on
//! until their clients leave, as a `Threading` server's connections are;
//! then the old parent exits 0 and leaves no child behind.

use crate::common;
use common::{children_of, exists, wait_for_successor, Client, Group};

use std::time::{Duration, Instant};

fn upgrade_keeps_idle_connections(to_group: bool) {
    let mut group = Group::start(&["127.0.0.1:0", "prefork", "--upgrade", "--tell-pid"]);
    let mut held: Vec<Client> = (0..3)
        .map(|_| Client::connect(group.port).expect("connect"))
        .collect();
    let old_children = children_of(group.pid());
    for c in &held {
        assert!(old_children.contains(&c.pid), "served by a child");
    }
    if to_group {
        group.signal_group("USR2");
    } else {
        group.signal("USR2");
    }
    let mut fresh = wait_for_successor(&group);
    fresh.exchange("new\n").expect("the successor echoes");
    // The held connections stay open, idle, for well over a second, and
    // the old parent waits for them.
    let since = Instant::now();
    for c in &mut held {
        assert!(
            !c.closed_within(
                Duration::from_millis(1500)
                    .saturating_sub(since.elapsed())
                    .max(Duration::from_millis(1))
            ),
            "an idle connection was closed by the upgrade; stderr: {}",
            group.stderr()
        );
    }
    for c in &mut held {
        c.exchange("still here\n")
            .expect("the old child serves on after the upgrade");
    }
    assert!(
        group.child.try_wait().unwrap().is_none(),
        "the old parent exited with connections open; stderr: {}",
        group.stderr()
    );
    // No new connection reaches the old children.
    for _ in 0..10 {
        let c = Client::connect(group.port).expect("connect after the upgrade");
        assert!(!old_children.contains(&c.pid), "an old child accepted");
    }
    // Their clients leave: the old children exit, then the old parent.
    drop(held);
    let status = group.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| {
        panic!(
            "old parent still running 10 s after its last client left; stderr: {}",
            group.stderr()
        )
    });
    assert!(
        status.success(),
        "exit {status}; stderr: {}",
        group.stderr()
    );
    for pid in old_children {
        assert!(!exists(pid), "old child {pid} left behind (or a zombie)");
    }
    fresh.exchange("after\n").expect("the successor serves on");
}

#[test]
fn sigusr2_to_a_prefork_parent_keeps_idle_connections_until_their_clients_leave() {
    upgrade_keeps_idle_connections(false);
}

#[test]
fn sigusr2_to_a_prefork_process_group_keeps_idle_connections_until_their_clients_leave() {
    upgrade_keeps_idle_connections(true);
}

/// A PROXY protocol v2 header naming 192.0.2.1 (a documentation address,
/// never dialled: it only travels inside the header) as the client.
fn proxy_v2_header() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    h.extend_from_slice(&[192, 0, 2, 1, 127, 0, 0, 1]);
    h.extend_from_slice(&40000u16.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

/// Connect, PROXY header, a pause, one line, its echo, close.
fn proxied_request(port: u16, n: u64) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let line = format!("request {n}\n");
    // The proxy sends its header at once, the client's bytes when they
    // come.
    (&stream).write_all(&proxy_v2_header())?;
    std::thread::sleep(Duration::from_millis(2));
    (&stream).write_all(line.as_bytes())?;
    let mut back = String::new();
    BufReader::new(&stream).read_line(&mut back)?;
    if back != line {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("sent {line:?}, got {back:?}"),
        ));
    }
    Ok(())
}

#[test]
fn upgrading_a_prefork_server_behind_proxy_v2_under_load_loses_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    let mut group = Group::start(&["127.0.0.1:0", "prefork", "--upgrade", "--proxy-protocol"]);
    let port = group.port;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|id| {
            let (stop, ok, errors) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&errors));
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    match proxied_request(port, n) {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.lock().unwrap().push(format!("client {id}: {e}")),
                    }
                }
            })
        })
        .collect();
    let wait_served = |at_least: u64| {
        let end = Instant::now() + Duration::from_secs(10);
        while ok.load(Ordering::Relaxed) < at_least {
            assert!(Instant::now() < end, "clients not served");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_served(200);
    group.signal("USR2");
    // The old process hands over, its children finish and it exits.
    let status = group.wait_exit(Duration::from_secs(15));
    let before = ok.load(Ordering::Relaxed);
    wait_served(before + 200);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let status = status.unwrap_or_else(|| panic!("old parent still running; {}", group.stderr()));
    assert!(status.success(), "exit {status}");
    let errors = errors.lock().unwrap().clone();
    eprintln!(
        "{} requests through one upgrade, {} lost",
        ok.load(Ordering::Relaxed),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "lost: {errors:?}; stderr: {}",
        group.stderr()
    );
}
