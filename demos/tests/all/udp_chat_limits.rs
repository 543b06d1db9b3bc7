//! The UDP chat's bounds: a cap on peers, and a rate limit on `/nick` per
//! source IP address, so that a flood of registrations or renames cannot
//! make every message expensive or put the server seconds behind.

use crate::common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{exe, within, DEADLINE};
use demos::chat::{UdpRoom, UdpRoomConfig, DEFAULT_MAX_PEERS};
use demos::service::{datagram_service, Running, DEFAULT_DRAIN};
use demos::showcase::drive::ServerProcess;
use demos::strategy::StrategyName;
use socketserver::{Address, Server};

fn room(config: UdpRoomConfig) -> (Running, SocketAddr) {
    let builder = Server::builder().strategy(StrategyName::Synchronous.build(None));
    let loopback: Address = "127.0.0.1:0".parse().unwrap();
    let service = datagram_service(builder, &loopback, UdpRoom::new(config)).unwrap();
    let running = Running::start(vec![service], DEFAULT_DRAIN).unwrap();
    let addr = running.address(0).as_inet().unwrap();
    (running, addr)
}

/// A UDP socket on the loopback address `ip`, connected to `server`.
fn socket_on(ip: Ipv4Addr, server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(ip), 0)).unwrap();
    s.connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `text` and returns the next datagram that starts with `* ` and is
/// not a join/leave/rename notice about someone else.
fn ask(s: &UdpSocket, text: &str) -> String {
    s.send(text.as_bytes()).unwrap();
    let mut buf = [0u8; 65536];
    for _ in 0..10_000 {
        let n = s.recv(&mut buf).expect("an answer within 5 s");
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        let notice =
            line.ends_with(" joined") || line.ends_with(" left") || line.contains(" is now ");
        if line.starts_with("* ") && !notice {
            return line;
        }
    }
    panic!("no answer to {text:?}");
}

/// The `i`-th address of 127.0.1.0/24 (all of 127/8 is loopback on Linux).
fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

#[test]
fn the_peer_table_is_capped_and_a_place_frees_when_a_peer_leaves() {
    assert_eq!(UdpRoomConfig::default().max_peers, DEFAULT_MAX_PEERS);
    assert_eq!(DEFAULT_MAX_PEERS, 1024);
    let (running, addr) = room(UdpRoomConfig {
        max_peers: 40,
        ..UdpRoomConfig::default()
    });
    within(DEADLINE, "cap", move || {
        let peers: Vec<UdpSocket> = (0..40)
            .map(|i| {
                let s = socket_on(ip(i), addr);
                let a = ask(&s, &format!("/nick p{i}"));
                assert!(a.starts_with("* welcome"), "{i}: {a}");
                s
            })
            .collect();
        let late = socket_on(ip(40), addr);
        let a = ask(&late, "/nick late");
        assert!(a.starts_with("* the room is full (40 peers)"), "{a}");
        // Members still rename freely; the room stays at 40.
        let a = ask(&peers[0], "/nick first");
        assert!(a.starts_with("* welcome first"), "{a}");
        assert!(ask(&peers[1], "/who").starts_with("* peers (40)"));
        // One leaves: the late one gets in.
        assert_eq!(ask(&peers[2], "/quit"), "* bye");
        let a = ask(&late, "/nick late");
        assert!(a.starts_with("* welcome late"), "{a}");
    });
    running.stop(DEADLINE).unwrap();
}

#[test]
fn nick_is_rate_limited_per_source_ip_whatever_the_port() {
    let (running, addr) = room(UdpRoomConfig::default());
    within(DEADLINE, "rate", move || {
        let a = socket_on(Ipv4Addr::LOCALHOST, addr);
        let mut welcomed = 0;
        for i in 0..15 {
            let answer = ask(&a, &format!("/nick a{i}"));
            if answer.starts_with("* welcome") {
                welcomed += 1;
            } else {
                assert!(answer.starts_with("* too many /nick"), "{i}: {answer}");
            }
        }
        assert_eq!(welcomed, 10, "the burst, then nothing at 2 a second");
        // Another port of the same IP shares the budget...
        let b = socket_on(Ipv4Addr::LOCALHOST, addr);
        assert!(ask(&b, "/nick b").starts_with("* too many /nick"));
        // ...another IP has its own.
        let c = socket_on(ip(7), addr);
        assert!(ask(&c, "/nick c").starts_with("* welcome c"));
        // The budget refills: 2 a second by default.
        std::thread::sleep(Duration::from_millis(600));
        assert!(ask(&b, "/nick b").starts_with("* welcome b"));
    });
    running.stop(DEADLINE).unwrap();
}

#[test]
fn a_flood_of_30000_nicks_with_1000_members_does_not_put_the_room_behind() {
    const MEMBERS: usize = 1000;
    const FLOOD: usize = 30_000;
    let (running, addr) = room(UdpRoomConfig::default());
    // 1000 members join one round trip at a time before the flood: most of
    // 30 s on a saturated machine. A hang is still caught.
    within(Duration::from_secs(120), "flood", move || {
        let members: Vec<UdpSocket> = (0..MEMBERS)
            .map(|i| {
                let s = socket_on(ip(i), addr);
                assert!(ask(&s, &format!("/nick m{i}")).starts_with("* welcome"));
                s
            })
            .collect();
        for m in &members {
            m.set_nonblocking(true).unwrap();
        }
        let flooder = socket_on(Ipv4Addr::LOCALHOST, addr);
        flooder.set_nonblocking(true).unwrap();
        let t = Instant::now();
        // 100 every 10 ms: about 3 s, slow enough for the server's receive
        // buffer to take most of them.
        for i in 0..FLOOD {
            let _ = flooder.send(format!("/nick flood{i}").as_bytes());
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let flood_took = t.elapsed();
        // A member's question right after the flood: answered at once. (A
        // datagram that finds the server's receive buffer full is lost, as
        // any UDP datagram may be: the member asks again every 200 ms.)
        let probe = &members[0];
        probe.set_nonblocking(false).unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 65536];
        let mut asked = 0;
        'ask: while t.elapsed() < Duration::from_secs(10) {
            probe.send(b"/who").unwrap();
            asked += 1;
            while let Ok(n) = probe.recv(&mut buf) {
                if buf[..n].starts_with(b"* peers (") {
                    break 'ask;
                }
            }
        }
        let lag = t.elapsed();
        println!(
            "{FLOOD} /nick sent in {flood_took:?} with {MEMBERS} members: /who answered {lag:?} \
             after the flood ({asked} asked)"
        );
        // Without the rate limit this took 2 s (debug build).
        assert!(lag < Duration::from_secs(1), "{lag:?}");
    });
    running.stop(DEADLINE).unwrap();
}

#[test]
fn the_max_peers_flag_caps_the_binary_room() {
    let mut server = ServerProcess::start(
        exe(),
        &[
            "chat",
            "serve",
            "--udp",
            "127.0.0.1:0",
            "--max-peers",
            "2",
            "--nicks-per-minute",
            "600",
        ],
        2,
    )
    .unwrap();
    let addr = server.address(1).as_inet().unwrap();
    let answers = within(DEADLINE, "binary cap", move || {
        (0..3)
            .map(|i| ask(&socket_on(ip(i), addr), &format!("/nick n{i}")))
            .collect::<Vec<_>>()
    });
    assert!(answers[0].starts_with("* welcome n0"), "{answers:?}");
    assert!(answers[1].starts_with("* welcome n1"), "{answers:?}");
    assert!(
        answers[2].starts_with("* the room is full (2 peers)"),
        "{answers:?}"
    );
    let (_, status) = server.terminate(DEADLINE).unwrap();
    assert!(status.success(), "{status}");
}
