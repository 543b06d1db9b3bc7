//! The demos through their library API: servers started in this process on
//! loopback port 0 and driven through real sockets. (Forking is tested in
//! `cli.rs`, from a server process of its own: forking this multi-threaded
//! test process would be unsafe.)

use crate::common;

use std::io::{self, Cursor};
use std::time::{Duration, Instant};

use common::{within, DEADLINE};
use demos::chat::{self, Room, RoomConfig, UdpRoom, UdpRoomConfig};
use demos::echo::{self, Echo};
use demos::service::{datagram_service, stream_service, Running, DEFAULT_DRAIN};
use demos::showcase::drive::{self, ChatPlan, Member, Peer};
use demos::strategy::StrategyName;
use socketserver::{Address, Server};

const MIB: usize = 1 << 20;
const IN_PROCESS: [StrategyName; 3] = [
    StrategyName::Synchronous,
    StrategyName::Threading,
    StrategyName::Pool,
];

fn loopback() -> Address {
    "127.0.0.1:0".parse().unwrap()
}

fn builder(s: StrategyName) -> socketserver::Builder<Box<dyn socketserver::Strategy>> {
    Server::builder().strategy(s.build(Some(4)))
}

fn echo_servers(s: StrategyName, upper: bool) -> Running {
    let handler = Echo { upper };
    Running::start(
        vec![
            stream_service(builder(s), &loopback(), handler, None).unwrap(),
            datagram_service(builder(s), &loopback(), handler).unwrap(),
        ],
        DEFAULT_DRAIN,
    )
    .unwrap()
}

fn room_server(s: StrategyName, config: RoomConfig) -> (Running, Room) {
    let room = Room::new(config);
    let closer = room.clone();
    let service = stream_service(
        builder(s),
        &loopback(),
        room.clone(),
        Some(Box::new(move || closer.close())),
    )
    .unwrap();
    (Running::start(vec![service], DEFAULT_DRAIN).unwrap(), room)
}

#[test]
fn echo_roundtrips_1mib_over_tcp_and_60000_bytes_over_udp() {
    for s in IN_PROCESS {
        let running = echo_servers(s, false);
        let tcp = running.address(0).clone();
        let udp = running.address(1).clone();
        within(DEADLINE, &format!("echo {s}"), move || {
            let data = drive::pattern(MIB, 11);
            let back = drive::stream_echo(&tcp, &data, DEADLINE).unwrap();
            assert!(back == data, "{s}: 1 MiB over TCP came back different");
            let data = drive::pattern(60_000, 12);
            let back = drive::datagram_echo(&udp, &data, drive::STEP).unwrap();
            assert!(
                back == data,
                "{s}: 60,000 bytes over UDP came back different"
            );
            // A connection that sends nothing gets nothing, and ends.
            let back = drive::stream_echo(&tcp, b"", DEADLINE).unwrap();
            assert!(back.is_empty());
        });
        running.stop(DEADLINE).unwrap();
    }
}

#[test]
fn echo_upper_uppercases_ascii_only() {
    for s in IN_PROCESS {
        let running = echo_servers(s, true);
        let tcp = running.address(0).clone();
        let udp = running.address(1).clone();
        let sent = [&b"Gr\xc3\xbc\xc3\x9fe, world! \x00\xff"[..]].concat();
        let want = [&b"GR\xc3\xbc\xc3\x9fE, WORLD! \x00\xff"[..]].concat();
        within(DEADLINE, "--upper", move || {
            assert_eq!(drive::stream_echo(&tcp, &sent, DEADLINE).unwrap(), want);
            assert_eq!(
                drive::datagram_echo(&udp, &sent, drive::STEP).unwrap(),
                want
            );
        });
        running.stop(DEADLINE).unwrap();
    }
}

#[test]
fn echo_client_prints_each_reply() {
    let running = echo_servers(StrategyName::Threading, false);
    for (i, udp) in [(0, false), (1, true)] {
        let addr = running.address(i).clone();
        let out = within(DEADLINE, "echo client", move || {
            let mut out = Vec::new();
            let args = ["first".to_string(), "second one".to_string()];
            echo::client(
                &addr,
                udp,
                None,
                &args,
                &mut io::empty(),
                &mut out,
                drive::STEP,
            )
            .unwrap();
            let mut stdin = Cursor::new(b"from\nstdin\n".to_vec());
            echo::client(&addr, udp, None, &[], &mut stdin, &mut out, drive::STEP).unwrap();
            out
        });
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "first\nsecond one\nfrom\nstdin\n"
        );
    }
    running.stop(DEADLINE).unwrap();
}

/// Three talkers and a member that never reads, with a small outbox so
/// that the silent one is dropped soon after the kernel buffers fill.
fn chat_under(s: StrategyName) {
    let config = RoomConfig {
        outbox: 128,
        ..RoomConfig::default()
    };
    let (running, room) = room_server(s, config);
    let addr = running.address(0).clone();
    let outcome = within(Duration::from_secs(20), "chat scenario", move || {
        let plan = ChatPlan {
            messages: 500,
            interval: Duration::from_millis(1),
            line_len: 4000,
            silent_member: true,
            deadline: DEADLINE,
        };
        drive::chat_scenario(&addr, &plan).unwrap()
    });
    assert_eq!(outcome.delivered, 3 * 2 * 500);
    eprintln!(
        "{s}: slowest line {:?} while a member never read",
        outcome.max_latency
    );
    assert!(
        outcome.max_latency < socketserver_tests::PROMPT,
        "{s}: a line took {:?} while a member never read",
        outcome.max_latency
    );
    assert!(
        outcome.silent_dropped,
        "{s}: the silent member was not dropped"
    );
    assert_eq!(room.dropped(), 1, "only the silent member is dropped");
    running.stop(DEADLINE).unwrap();
}

#[test]
fn chat_threading() {
    chat_under(StrategyName::Threading);
}

#[test]
fn chat_pool() {
    chat_under(StrategyName::Pool);
}

#[test]
fn chat_strategies_that_cannot_host_a_room_say_why() {
    assert!(chat::tcp_strategy_problem(StrategyName::Synchronous).is_some());
    assert!(chat::tcp_strategy_problem(StrategyName::Forking).is_some());
    assert!(chat::tcp_strategy_problem(StrategyName::Prefork).is_some());
    assert!(chat::udp_strategy_problem(StrategyName::Prefork).is_some());
    assert!(chat::tcp_strategy_problem(StrategyName::Threading).is_none());
    assert!(chat::tcp_strategy_problem(StrategyName::Pool).is_none());
    assert!(chat::udp_strategy_problem(StrategyName::Forking).is_some());
    assert!(chat::udp_strategy_problem(StrategyName::Synchronous).is_none());
}

#[test]
fn chat_nicknames_long_lines_bad_bytes_and_commands() {
    let config = RoomConfig {
        nick_attempts: 6,
        ..RoomConfig::default()
    };
    let (running, _room) = room_server(StrategyName::Threading, config);
    let addr = running.address(0).clone();
    within(DEADLINE, "chat details", move || {
        let step = drive::STEP;
        let (mut amy, welcome) = Member::join(&addr, "amy", step).unwrap();
        assert!(welcome.contains("online: amy"), "{welcome}");

        // Refused nicknames get a `* ` line; the server asks again.
        let mut newcomer = Member::connect(&addr, step).unwrap();
        for (nick, why) in [
            ("", "empty"),
            (&"n".repeat(chat::MAX_NICK + 1)[..], "too long"),
            ("two words", "one word"),
            ("AMY", "taken"),
            (&"x".repeat(chat::MAX_LINE + 10)[..], "too long"),
        ] {
            newcomer.send(nick).unwrap();
            let line = newcomer.line().unwrap();
            assert!(
                line.starts_with("* ") && line.contains(why),
                "{nick:.20}: {line}"
            );
        }
        newcomer.send("bea").unwrap();
        assert!(newcomer.line().unwrap().starts_with("* welcome bea"));
        newcomer.nick = "bea".into();
        amy.expect("bea joining", step, |l| l == "* bea joined")
            .unwrap();

        // A line over the cap is refused, not sent; the next one goes.
        amy.send(&"y".repeat(chat::MAX_LINE + 1)).unwrap();
        let refusal = amy.line().unwrap();
        assert!(refusal.starts_with("* line too long"), "{refusal}");
        amy.send(&"z".repeat(chat::MAX_LINE)).unwrap();
        assert_eq!(
            newcomer.line().unwrap(),
            format!("amy: {}", "z".repeat(chat::MAX_LINE))
        );

        // Invalid UTF-8 and control characters arrive replaced, no panic.
        amy.send_raw(b"caf\xe9 \x1b[31mred\r\n").unwrap();
        assert_eq!(newcomer.line().unwrap(), "amy: caf\u{fffd} ?[31mred");

        // Commands: /who, unknown ones, empty lines ignored, /quit.
        amy.send("").unwrap();
        amy.send("/who").unwrap();
        assert_eq!(amy.line().unwrap(), "* members (2): amy, bea");
        amy.send("/dance").unwrap();
        assert!(amy.line().unwrap().starts_with("* unknown command /dance"));
        newcomer.send("/quit").unwrap();
        assert_eq!(newcomer.line().unwrap(), "* bye");
        assert!(newcomer.closed_within(step));
        assert_eq!(amy.line().unwrap(), "* bea left");

        // A client that vanishes without /quit is announced too.
        let (cid, _) = Member::join(&addr, "cid", step).unwrap();
        assert_eq!(amy.line().unwrap(), "* cid joined");
        drop(cid);
        assert_eq!(amy.line().unwrap(), "* cid left");

        // Too many refused nicknames: the server gives up.
        let mut pest = Member::connect(&addr, step).unwrap();
        for _ in 0..6 {
            pest.send("").unwrap();
        }
        let last = pest
            .expect("the goodbye", step, |l| l.contains("too many"))
            .unwrap();
        assert!(last.starts_with("* "));
        assert!(pest.closed_within(step));
    });
    running.stop(DEADLINE).unwrap();
}

#[test]
fn closing_the_chat_server_disconnects_everyone_at_once() {
    for s in [StrategyName::Threading, StrategyName::Pool] {
        let (running, room) = room_server(s, RoomConfig::default());
        let addr = running.address(0).clone();
        let mut members: Vec<Member> = ["ann", "ben", "cat"]
            .iter()
            .map(|n| Member::join(&addr, n, drive::STEP).unwrap().0)
            .collect();
        let _lurker = Member::connect(&addr, drive::STEP).unwrap();
        // Wait until all three are members (the last welcome is read, so
        // the room has them).
        assert_eq!(room.members().len(), 3);
        // A drain far longer than PROMPT: waiting for it would fail.
        let start = Instant::now();
        running.stop(DEADLINE).unwrap();
        let took = start.elapsed();
        eprintln!("{s}: the chat server stopped in {took:?}");
        assert!(took < socketserver_tests::PROMPT, "{s}: stop took {took:?}");
        for m in &mut members {
            m.expect("the shutdown notice", drive::STEP, |l| {
                l == "* server is shutting down"
            })
            .unwrap();
            assert!(m.closed_within(drive::STEP));
        }
    }
}

#[test]
fn chat_client_joins_talks_and_leaves() {
    let (running, _room) = room_server(StrategyName::Threading, RoomConfig::default());
    let addr = running.address(0).clone();
    let (mut amy, _) = Member::join(&addr, "amy", drive::STEP).unwrap();
    let client_addr = addr.clone();
    let client = std::thread::spawn(move || {
        let mut out = Vec::new();
        let input = Box::new(Cursor::new(b"hello amy\n".to_vec()));
        let r = chat::client::run(&client_addr, "zed", false, input, &mut out, drive::STEP);
        (r, String::from_utf8(out).unwrap())
    });
    amy.expect("zed's line", drive::STEP, |l| l == "zed: hello amy")
        .unwrap();
    amy.expect("zed leaving", drive::STEP, |l| l == "* zed left")
        .unwrap();
    let (r, out) = within(DEADLINE, "chat client", move || client.join().unwrap());
    r.unwrap();
    assert!(out.starts_with("* welcome zed"), "{out}");
    assert!(out.ends_with("* bye\n"), "{out}");
    // A taken nickname is an error naming the reason.
    let mut sink = Vec::new();
    let input = Box::new(Cursor::new(Vec::new()));
    let e = chat::client::run(&addr, "amy", false, input, &mut sink, drive::STEP).unwrap_err();
    assert!(e.to_string().contains("taken"), "{e}");
    running.stop(DEADLINE).unwrap();
}

fn udp_room(s: StrategyName, config: UdpRoomConfig) -> Running {
    let builder = builder(s).service_interval(Some(Duration::from_millis(50)));
    let service = datagram_service(builder, &loopback(), UdpRoom::new(config)).unwrap();
    Running::start(vec![service], DEFAULT_DRAIN).unwrap()
}

#[test]
fn udp_chat_relays_between_three_peers() {
    for s in IN_PROCESS {
        let running = udp_room(s, UdpRoomConfig::default());
        let addr = running.address(0).clone();
        let ordered = s == StrategyName::Synchronous;
        let outcome = within(DEADLINE, "udp chat", move || {
            drive::udp_chat_scenario(&addr, 20, ordered).unwrap()
        });
        assert_eq!(outcome.delivered, 3 * 2 * 20);
        running.stop(DEADLINE).unwrap();
    }
}

#[test]
fn udp_chat_refuses_and_forgets() {
    let config = UdpRoomConfig {
        idle: Duration::from_millis(300),
        ..UdpRoomConfig::default()
    };
    let running = udp_room(StrategyName::Synchronous, config);
    let addr = running.address(0).clone();
    within(DEADLINE, "udp chat details", move || {
        let (ann, _) = Peer::join(&addr, "ann", drive::STEP).unwrap();
        let other = Peer::anonymous(&addr, drive::STEP).unwrap();
        other.send("/nick Ann").unwrap();
        assert!(other.recv().unwrap().contains("taken"));
        other.send("/nick").unwrap();
        assert!(other.recv().unwrap().contains("empty"));
        ann.send(&"x".repeat(chat::MAX_LINE + 1)).unwrap();
        assert!(ann.recv().unwrap().starts_with("* message too long"));
        // Renaming is announced.
        let (bo, _) = Peer::join(&addr, "bo", drive::STEP).unwrap();
        assert_eq!(ann.recv().unwrap(), "* bo joined");
        bo.send("/nick bob").unwrap();
        assert!(bo.recv().unwrap().starts_with("* welcome bob"));
        assert_eq!(ann.recv().unwrap(), "* bo is now bob");
        // Silent for longer than `idle`: forgotten (by service_actions, with
        // nobody talking).
        std::thread::sleep(Duration::from_millis(500));
        ann.send("still there?").unwrap();
        assert!(ann.recv().unwrap().contains("/nick"), "ann was forgotten");
    });
    running.stop(DEADLINE).unwrap();
}
