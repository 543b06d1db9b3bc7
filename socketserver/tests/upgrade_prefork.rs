//! A `PreFork` server upgraded with SIGUSR2 (the `echo_server` example,
//! `prefork --upgrade`, a process group of its own): the old children
//! keep the connections they hold, idle ones included, and serve them on
//! until their clients leave, as a `Threading` server's connections are;
//! then the old parent exits 0 and leaves no child behind.

mod common;
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
    let mut fresh = wait_for_successor(&group, &old_children);
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
