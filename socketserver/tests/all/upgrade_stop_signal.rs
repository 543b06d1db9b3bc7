//! SIGTERM or SIGINT during an upgrade's drain (the `echo_server` example,
//! `--upgrade`, a process group of its own): the old process stops waiting
//! for its connections to end on their own and closes gracefully with its
//! close timeout, as it would have without the upgrade, under every
//! strategy. A supervisor's stop is not held up by the drain timeout
//! (60 s). (Not `Synchronous`: its one connection runs in the loop, which
//! the hand-over ends at that connection's next message boundary.)

use crate::common;
use common::{children_of, exists, wait_for_successor, Client, Group};

use std::time::{Duration, Instant};

fn stop_during_the_drain(strategy: &str, signal: &str) {
    let mut group = Group::start(&["127.0.0.1:0", strategy, "--upgrade", "--tell-pid"]);
    let mut idle = Client::connect(group.port).expect("connect");
    let old_children = children_of(group.pid());
    group.signal("USR2");
    let _fresh = wait_for_successor(&group);
    // The old process drains: the idle client keeps it alive...
    assert!(
        !idle.closed_within(Duration::from_millis(300)),
        "{strategy}: the upgrade closed an idle connection"
    );
    assert!(group.child.try_wait().unwrap().is_none());
    // ...until the supervisor stops it.
    let sent = Instant::now();
    group.signal(signal);
    let status = group.wait_exit(Duration::from_secs(15)).unwrap_or_else(|| {
        panic!(
            "{strategy}: no exit 15 s after SIG{signal}; stderr: {}",
            group.stderr()
        )
    });
    let took = sent.elapsed();
    eprintln!(
        "{strategy}: exit {} ms after SIG{signal} during the drain",
        took.as_millis()
    );
    assert!(
        status.success(),
        "exit {status}; stderr: {}",
        group.stderr()
    );
    assert!(
        took < Duration::from_secs(3),
        "{strategy}: SIG{signal} during the drain took {took:?} (close timeout 5 s, the idle \
         connection closes at once)"
    );
    assert!(
        idle.closed_within(Duration::from_secs(5)),
        "closed by the graceful close"
    );
    for pid in old_children {
        assert!(
            !exists(pid),
            "{strategy}: old child {pid} left behind (or a zombie)"
        );
    }
}

#[test]
fn sigterm_during_an_upgrade_drain_closes_gracefully_at_once_threading() {
    stop_during_the_drain("threading", "TERM");
}

#[test]
fn sigint_during_an_upgrade_drain_closes_gracefully_at_once_threading() {
    stop_during_the_drain("threading", "INT");
}

#[test]
fn sigterm_during_an_upgrade_drain_closes_gracefully_at_once_forking() {
    stop_during_the_drain("forking", "TERM");
}

#[test]
fn sigterm_during_an_upgrade_drain_closes_gracefully_at_once_prefork() {
    stop_during_the_drain("prefork", "TERM");
}

#[cfg(feature = "green")]
#[test]
fn sigterm_during_an_upgrade_drain_closes_gracefully_at_once_green() {
    stop_during_the_drain("green", "TERM");
}
