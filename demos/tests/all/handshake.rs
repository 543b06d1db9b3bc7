//! Authentication under hostile clients: one total deadline per handshake
//! (a client dribbling its answer is cut at it), and a cap on connections
//! that have not authenticated yet (a key holder gets in at once while
//! hundreds of clients connect and dribble).

use crate::common;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{within, DEADLINE};
use demos::service::{stream_service, Running, DEFAULT_DRAIN};
use demos::shell::client::Session;
use demos::shell::{Shell, ShellConfig};
use demos::strategy::StrategyName;
use socketserver::auth::{self, Gatekeeper, Key, WhenFull};
use socketserver::{framing, Address, Server};

fn key() -> Key {
    Key::new("a test key, 32 bytes or more, ok").unwrap()
}

/// A shell server in this process (threading) and a clone of its handler,
/// which shares the gatekeeper's counters.
fn shell_server(tune: impl FnOnce(&mut ShellConfig)) -> (Running, Address, Shell) {
    let mut config = ShellConfig::new(key()).unwrap();
    config.start_dir = std::env::temp_dir();
    tune(&mut config);
    let shell = Shell::new(config);
    let builder = Server::builder().strategy(StrategyName::Threading.build(None));
    let loopback: Address = "127.0.0.1:0".parse().unwrap();
    let service = stream_service(builder, &loopback, shell.clone(), None).unwrap();
    let running = Running::start(vec![service], DEFAULT_DRAIN).unwrap();
    let addr = running.address(0).clone();
    (running, addr, shell)
}

/// Byte `i` of a (wrong) answer frame: a header announcing 32 bytes, then
/// zeros.
fn answer_byte(i: usize) -> u8 {
    if i == 3 {
        32
    } else {
        0
    }
}

fn connect(addr: &Address) -> TcpStream {
    let c = TcpStream::connect_timeout(&addr.as_inet().unwrap(), DEADLINE).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c.set_write_timeout(Some(DEADLINE)).unwrap();
    c
}

/// Reads until end of file or reset; panics after the read timeout.
fn wait_closed(conn: &mut TcpStream) {
    let mut buf = [0u8; 256];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("waiting for the server to close: {e}"),
        }
    }
}

#[test]
fn a_client_dribbling_its_answer_is_cut_at_the_total_handshake_deadline() {
    let (running, addr, _shell) = shell_server(|c| c.auth_timeout = Duration::from_secs(1));
    let mut conn = connect(&addr);
    let start = Instant::now();
    let challenge = framing::read_frame(&mut conn).unwrap().unwrap();
    assert_eq!(challenge.len(), auth::CHALLENGE_LEN);
    // The answer frame is 36 bytes; one byte every 200 ms would take 7 s,
    // and each byte restarts any per-read timer.
    let mut writer = conn.try_clone().unwrap();
    let dribbler = thread::spawn(move || {
        for i in 0..36 {
            thread::sleep(Duration::from_millis(200));
            if writer.write_all(&[answer_byte(i)]).is_err() {
                break;
            }
        }
    });
    wait_closed(&mut conn);
    let took = start.elapsed();
    println!("dribbling client cut after {took:?} (deadline 1 s)");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop(conn);
    within(DEADLINE, "dribbler ends", move || dribbler.join().unwrap());
    running.stop(DEADLINE).unwrap();
}

#[test]
fn a_key_holder_gets_in_at_once_while_a_thousand_clients_connect_and_dribble() {
    const ATTACKERS: usize = 1000;
    let (running, addr, shell) = shell_server(|_| {});
    let gate = shell.gatekeeper().clone();
    assert_eq!(
        (gate.max_pending(), gate.deadline()),
        (64, Duration::from_secs(5))
    );

    // The attack: connections opened one after another, each sending a
    // byte of a never-finished answer every half second, until the test
    // ends. (Under a sustained flood of new connections, a key holder gets
    // in as long as fewer than 64 arrive during its own handshake.)
    let stop = Arc::new(AtomicBool::new(false));
    let attack = {
        let (addr, stop) = (addr.clone(), stop.clone());
        thread::spawn(move || {
            let mut conns: VecDeque<(TcpStream, usize)> = VecDeque::with_capacity(ATTACKERS);
            let mut opened = 0;
            let mut last_round = Instant::now();
            let end = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                if conns.len() < ATTACKERS {
                    let c = connect(&addr);
                    c.set_nonblocking(true).unwrap();
                    conns.push_back((c, 0));
                    opened += 1;
                } else {
                    thread::sleep(Duration::from_millis(10));
                }
                if last_round.elapsed() >= Duration::from_millis(500) {
                    for (c, sent) in &mut conns {
                        if c.write(&[answer_byte(*sent)]).is_ok() {
                            *sent += 1;
                        }
                    }
                    last_round = Instant::now();
                }
            }
            opened
        })
    };

    // Wait until the table is full and the gate has started closing the
    // oldest, then log in repeatedly while the attack goes on.
    common::wait_until(DEADLINE, "the attack fills the table", || {
        gate.turned_away().0 >= 100
    });
    let mut times = Vec::new();
    let mut retries = 0;
    for _ in 0..10 {
        let (addr, k) = (addr.clone(), key());
        let (took, attempts) = within(DEADLINE, "key holder", move || {
            let t = Instant::now();
            // Under this flood (a new connection every few ms, the table
            // full) a handshake that takes longer than 64 arrivals is the
            // oldest and is closed to make room, the key holder's too (about
            // 1 login in 10 on a loaded debug build): a client tries again,
            // as any client of a busy server does.
            let mut attempts = 0;
            let mut s = loop {
                attempts += 1;
                match Session::connect(&addr, &k, Duration::from_secs(5)) {
                    Ok(s) => break s,
                    // Closed to make room: the client sees it as a refusal,
                    // or, when it was writing its answer, a broken pipe or a
                    // reset.
                    Err(e)
                        if attempts < 3
                            && matches!(
                                e.kind(),
                                std::io::ErrorKind::PermissionDenied
                                    | std::io::ErrorKind::BrokenPipe
                                    | std::io::ErrorKind::ConnectionReset
                            ) => {}
                    Err(e) => panic!("login failed after {attempts} attempts: {e}"),
                }
            };
            let took = t.elapsed();
            assert_eq!(s.run("echo in").unwrap().stdout, b"in\n");
            (took, attempts)
        });
        times.push(took);
        retries += attempts - 1;
        assert!(gate.pending() <= 64, "{} pending", gate.pending());
    }
    stop.store(true, Ordering::SeqCst);
    let opened = within(DEADLINE, "attack ends", move || attack.join().unwrap());
    times.sort();
    let (closed, refused) = gate.turned_away();
    println!(
        "{opened} dribbling connections ({closed} closed to make room, {refused} refused): \
         key holder authenticated in median {:?}, max {:?} over {} logins ({retries} retried)",
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
    assert!(times[times.len() - 1] < Duration::from_secs(2), "{times:?}");
    running.stop(DEADLINE).unwrap();
}

/// A listener that runs `gate.server_handshake` on a thread per
/// connection and then says `in` to whoever got through.
fn gate_server(gate: Gatekeeper) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming().take(64) {
            let Ok(mut conn) = conn else { continue };
            let gate = gate.clone();
            thread::spawn(move || {
                if gate.server_handshake(&mut conn).is_ok() {
                    let _ = framing::write_frame(&mut conn, b"in");
                }
            });
        }
    });
    addr
}

#[test]
fn refuse_new_closes_connections_beyond_the_cap_before_sending_anything() {
    let gate = Gatekeeper::new(key())
        .with_max_pending(2)
        .with_deadline(Duration::from_millis(500))
        .when_full(WhenFull::RefuseNew);
    let addr = gate_server(gate.clone());
    let open = |addr| {
        let c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        c
    };
    let mut silent: Vec<TcpStream> = (0..2).map(|_| open(addr)).collect();
    for s in &mut silent {
        framing::read_frame(s).unwrap().unwrap(); // its challenge
    }
    assert_eq!(gate.pending(), 2);
    // The third gets no challenge, only a close.
    let mut third = open(addr);
    let t = Instant::now();
    let mut got = Vec::new();
    let _ = third.read_to_end(&mut got);
    assert!(got.is_empty(), "{got:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(gate.turned_away(), (0, 1));
    // At the deadline the silent ones are cut and a key holder gets in.
    for s in &mut silent {
        wait_closed(s);
    }
    common::wait_until(DEADLINE, "places freed", || gate.pending() == 0);
    let mut c = open(addr);
    auth::client_handshake(&mut c, &key()).unwrap();
    assert_eq!(framing::read_frame(&mut c).unwrap().unwrap(), b"in");
}

#[test]
fn close_oldest_cuts_the_longest_waiting_handshake_for_a_new_one() {
    let gate = Gatekeeper::new(key()).with_max_pending(2);
    let addr = gate_server(gate.clone());
    let open = |addr| {
        let c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        c
    };
    let mut oldest = open(addr);
    framing::read_frame(&mut oldest).unwrap().unwrap();
    let mut second = open(addr);
    framing::read_frame(&mut second).unwrap().unwrap();
    // A key holder arrives: the oldest silent one is closed, it gets in.
    let mut c = open(addr);
    auth::client_handshake(&mut c, &key()).unwrap();
    assert_eq!(framing::read_frame(&mut c).unwrap().unwrap(), b"in");
    wait_closed(&mut oldest);
    assert_eq!(gate.turned_away(), (1, 0));
    assert_eq!(gate.pending(), 1, "the second still waits");
}
