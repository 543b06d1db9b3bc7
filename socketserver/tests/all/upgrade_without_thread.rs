//! `Upgrade::serve` under a strategy that forks (`echo_server ADDR forking
//! --upgrade`, `prefork --upgrade`): no thread watches for SIGUSR2 (the
//! signal ends the server loop, whose thread starts the successor), so the
//! process forks from a single thread and never warns about it, and the
//! upgrade still works: new connections go to the successor, the old
//! connections finish on the old process, which then exits 0.

use crate::common;
use common::{wait_for_successor, Client, Group};

use std::time::Duration;

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

fn upgrade_from_one_thread(strategy: &str) {
    let mut group = Group::start(&["127.0.0.1:0", strategy, "--upgrade", "--tell-pid"]);
    let mut old = Client::connect(group.port).expect("connect");
    assert_eq!(threads(group.pid()), 1, "{strategy}: a watcher thread runs");
    group.signal("USR2");
    let mut fresh = wait_for_successor(&group);
    assert_eq!(
        threads(group.pid()),
        1,
        "{strategy}: threads after the upgrade"
    );
    old.exchange("still here\n")
        .expect("the old connection is served on");
    fresh.exchange("new\n").expect("the successor serves");
    drop(old);
    let status = group
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{strategy}: old process still running; {}", group.stderr()));
    assert!(status.success(), "exit {status}");
    assert!(
        group.stderr_shows("handed over to process", Duration::from_secs(5)),
        "{}",
        group.stderr()
    );
    let stderr = group.stderr();
    assert!(
        !stderr.contains("forking a process with"),
        "{strategy}: warned about threads: {stderr}"
    );
}

#[test]
fn a_forking_server_upgrades_without_a_watcher_thread() {
    upgrade_from_one_thread("forking");
}

#[test]
fn a_prefork_server_upgrades_without_a_watcher_thread() {
    upgrade_from_one_thread("prefork");
}
