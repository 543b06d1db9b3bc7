//! The TCP chat room under `Green`: each member's writer is a companion
//! coroutine (`green::spawn`), not a thread, so the process keeps the same
//! threads however many members join. 600 members by default: every join
//! is announced to every member, so joining N members costs N²/2
//! deliveries (2,000 members took 160 s in a debug build on a busy 2-core
//! machine, and passed). `SOCKETSERVER_TEST_CHAT_MEMBERS=2000` runs more,
//! up to what the descriptor limit allows (seven per member in this
//! process, client and server side).

mod common;

use std::time::{Duration, Instant};

use common::DEADLINE;
use demos::chat::{Room, RoomConfig};
use demos::service::{stream_service, Running, DEFAULT_DRAIN};
use demos::showcase::drive::{self, Member};
use demos::strategy::StrategyName;
use socketserver::Server;

const MEMBERS: usize = 600;

fn raise_fd_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to fill.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above; raising the soft limit up to the hard one is allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

#[test]
fn a_green_room_runs_on_the_same_threads_whatever_its_members() {
    let wanted = std::env::var("SOCKETSERVER_TEST_CHAT_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MEMBERS);
    let members = wanted.min(raise_fd_limit().saturating_sub(500) / 7);
    let room = Room::new(RoomConfig {
        outbox: 4096,
        ..RoomConfig::default()
    });
    let closer = room.clone();
    let builder = Server::builder().strategy(StrategyName::Green.build(Some(2)));
    let service = stream_service(
        builder,
        &"127.0.0.1:0".parse().unwrap(),
        room.clone(),
        Some(Box::new(move || closer.close())),
    )
    .unwrap();
    let running = Running::start(vec![service], DEFAULT_DRAIN).unwrap();
    let addr = running.address(0).clone();
    let (first, _) = Member::join(&addr, "first", drive::STEP).unwrap();
    let threads_with_one = socketserver_tests::thread_count();
    let started = Instant::now();
    let mut all = vec![first];
    for i in 1..members {
        let (m, _) = Member::join(&addr, &format!("m{i}"), DEADLINE).unwrap();
        all.push(m);
    }
    let threads_with_all = socketserver_tests::thread_count();
    println!(
        "{members} members joined in {:?}; threads: {threads_with_one} with one member, \
         {threads_with_all} with all",
        started.elapsed()
    );
    assert_eq!(room.members().len(), members);
    assert_eq!(
        threads_with_all, threads_with_one,
        "a green room's threads do not grow with its members"
    );
    // And the room works: the last one's line reaches the first.
    all[members - 1].send("hello from the last").unwrap();
    all[0]
        .expect("the last member's line", Duration::from_secs(30), |l| {
            l.ends_with(": hello from the last")
        })
        .unwrap();
    running.stop(DEADLINE).unwrap();
}
