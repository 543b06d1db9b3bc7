//! End-to-end runs against small std servers written here, on 127.0.0.1 port 0.
//! Every test has a hard deadline; durations are well under a second.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use loadgen::{hold_idle, Config, Error, IdleConfig, Mode, Report};
use socketserver_tests::within;

#[derive(Clone, Copy)]
enum Behaviour {
    /// Echo every byte.
    Echo,
    /// Echo, but flip the first byte of every `n`th chunk read on a connection.
    Corrupt(u64),
    /// Read and never answer.
    Silent,
}

/// A thread-per-connection TCP server on 127.0.0.1:0. The counter tracks open connections.
fn tcp_server(b: Behaviour) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let open2 = open.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let open = open2.clone();
            open.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut buf = vec![0u8; 64 * 1024];
                let mut since_corrupt = 0u64;
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    since_corrupt += 1;
                    match b {
                        Behaviour::Silent => continue,
                        Behaviour::Corrupt(every) if since_corrupt == every => {
                            since_corrupt = 0;
                            buf[0] ^= 0x5a;
                        }
                        _ => {}
                    }
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

/// A UDP echo server on 127.0.0.1:0 that drops every `drop_every`th datagram (0: none).
fn udp_server(drop_every: u64) -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut since_drop = 0u64;
        while let Ok((n, peer)) = s.recv_from(&mut buf) {
            since_drop += 1;
            if since_drop == drop_every {
                since_drop = 0;
                continue;
            }
            let _ = s.send_to(&buf[..n], peer);
        }
    });
    addr
}

fn cfg(addr: SocketAddr, mode: Mode, conns: usize, size: usize) -> Config {
    let mut c = Config::new(addr);
    c.mode = mode;
    c.conns = conns;
    c.size = size;
    c.warmup = Duration::from_millis(200);
    c.duration = Duration::from_millis(500);
    c
}

fn run_ok(c: Config) -> Report {
    within(Duration::from_secs(10), "the load run", move || {
        loadgen::run(&c)
    })
    .expect("run succeeds")
}

#[test]
fn pingpong_correct_echo_has_no_errors() {
    let (addr, _) = tcp_server(Behaviour::Echo);
    let r = run_ok(cfg(addr, Mode::PingPong, 8, 64));
    assert!(r.requests > 100, "{r:?}");
    assert_eq!(
        (r.errors, r.mismatches, r.io_errors, r.connect_errors),
        (0, 0, 0, 0),
        "{r:?}"
    );
    assert_eq!(r.active_conns, 8, "{r:?}");
    assert!(
        r.p50_us > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.p999_us && r.p999_us <= r.max_us
    );
    assert!((r.req_per_s - r.requests as f64 / 0.5).abs() < 1.0);
    assert!(r.lg_cpu > 0.0 && r.lg_cpu <= 2.5, "{r:?}");
    let json = r.to_json();
    assert!(
        json.starts_with("{\"mode\":\"pingpong\",\"conns\":8,\"size\":64,\"secs\":0.5,"),
        "{json}"
    );
    assert!(json.contains("\"addr\":\"127.0.0.1:"), "{json}");
}

#[test]
fn pingpong_ramp_of_one_still_starts_every_connection() {
    let (addr, open) = tcp_server(Behaviour::Echo);
    let mut c = cfg(addr, Mode::PingPong, 20, 32);
    c.ramp = 1;
    c.warmup = Duration::from_millis(400);
    let r = run_ok(c);
    assert_eq!(r.active_conns, 20, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    // All client sockets are closed when run returns; the server notices quickly.
    within(Duration::from_secs(5), "the load run", move || {
        while open.load(Ordering::SeqCst) != 0 {
            thread::sleep(Duration::from_millis(10));
        }
    });
}

#[test]
fn corrupting_server_is_caught() {
    let (addr, _) = tcp_server(Behaviour::Corrupt(50));
    let r = run_ok(cfg(addr, Mode::PingPong, 4, 64));
    assert!(r.mismatches > 0, "{r:?}");
    assert_eq!(r.errors, r.mismatches + r.io_errors + r.connect_errors);
    // Connections are reopened after a mismatch and keep working.
    assert!(r.requests > 100, "{r:?}");
}

#[test]
fn large_messages() {
    let (addr, _) = tcp_server(Behaviour::Echo);
    let r = run_ok(cfg(addr, Mode::PingPong, 4, 16 * 1024));
    assert!(r.requests > 20, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!(r.size, 16384);
}

#[test]
fn connect_mode() {
    let (addr, _) = tcp_server(Behaviour::Echo);
    let r = run_ok(cfg(addr, Mode::Connect, 4, 64));
    assert!(r.requests > 20, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!(r.mode, Mode::Connect);
}

#[test]
fn udp_correct_echo() {
    let addr = udp_server(0);
    let r = run_ok(cfg(addr, Mode::Udp, 4, 64));
    assert!(r.requests > 100, "{r:?}");
    assert_eq!((r.errors, r.lost), (0, 0), "{r:?}");
    assert!(r.to_json().contains("\"mode\":\"udp\""));
}

#[test]
fn udp_loss_is_counted() {
    let addr = udp_server(2);
    let mut c = cfg(addr, Mode::Udp, 4, 64);
    c.udp_timeout = Duration::from_millis(30);
    let r = run_ok(c);
    assert!(r.lost > 5, "{r:?}");
    assert!(r.requests > 5, "{r:?}");
    assert_eq!(r.mismatches, 0, "{r:?}");
}

#[test]
fn udp_tiny_datagrams() {
    let addr = udp_server(0);
    let r = run_ok(cfg(addr, Mode::Udp, 2, 3));
    assert!(r.requests > 50, "{r:?}");
    assert_eq!((r.errors, r.lost), (0, 0), "{r:?}");
}

#[test]
fn non_loopback_targets_are_refused() {
    within(Duration::from_secs(5), "the load run", || {
        for a in [
            "10.0.0.1:7",
            "8.8.8.8:53",
            "192.168.1.1:7",
            "[2001:db8::1]:7",
            "0.0.0.0:7",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            // Refused before any I/O: the error is NotLoopback, which only
            // the check of the configuration returns.
            for mode in [Mode::PingPong, Mode::Connect, Mode::Udp] {
                let e = loadgen::run(&cfg(addr, mode, 1, 64)).unwrap_err();
                assert!(matches!(e, Error::NotLoopback(x) if x == addr), "{a}: {e}");
                assert!(e.to_string().contains("not a loopback address"), "{e}");
            }
            let e = hold_idle(&IdleConfig::new(addr, 3)).unwrap_err();
            assert!(matches!(e, Error::NotLoopback(_)), "{e}");
        }
    });
}

#[test]
fn nothing_listening_is_a_clean_error() {
    // A port that was just free: bind, note, close.
    let tcp = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    within(Duration::from_secs(5), "the load run", move || {
        for mode in [Mode::PingPong, Mode::Connect] {
            let e = loadgen::run(&cfg(tcp, mode, 4, 64)).unwrap_err();
            assert!(matches!(e, Error::Unreachable { .. }), "{e}");
        }
        let e = loadgen::run(&cfg(udp, Mode::Udp, 2, 64)).unwrap_err();
        assert!(matches!(e, Error::Unreachable { .. }), "{e}");
        let e = hold_idle(&IdleConfig::new(tcp, 3)).unwrap_err();
        assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    });
}

#[test]
fn silent_server_ends_on_time() {
    let (addr, _) = tcp_server(Behaviour::Silent);
    let t = Instant::now();
    let e = within(Duration::from_secs(10), "the load run", move || {
        loadgen::run(&cfg(addr, Mode::PingPong, 4, 64))
    })
    .unwrap_err();
    let took = t.elapsed();
    // 0.2 s warmup + 0.5 s window: it ends then, not at some later timeout.
    eprintln!("a run against a silent server ended after {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    match e {
        Error::NothingServed(r) => assert_eq!((r.requests, r.errors), (0, 0), "{r:?}"),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn progress_is_reported() {
    let (addr, _) = tcp_server(Behaviour::Echo);
    let mut c = cfg(addr, Mode::PingPong, 2, 64);
    c.duration = Duration::from_millis(900);
    let seen = within(Duration::from_secs(10), "the load run", move || {
        let mut seen = Vec::new();
        loadgen::run_with_progress(&c, |p| seen.push(*p)).unwrap();
        seen
    });
    assert!(seen.len() >= 2, "{seen:?}");
    let last = seen.last().unwrap();
    assert_eq!(last.phase, loadgen::Phase::Done);
    assert!(last.served > 0 && last.errors == 0, "{last:?}");
    assert!(seen.iter().any(|p| p.connected == 2), "{seen:?}");
}

#[test]
fn idle_connections_are_held_and_closed_on_drop() {
    let (addr, open) = tcp_server(Behaviour::Echo);
    within(Duration::from_secs(10), "the load run", move || {
        let mut ic = IdleConfig::new(addr, 50);
        ic.echo_size = 32;
        let held = hold_idle(&ic).unwrap();
        let r = held.report().clone();
        assert_eq!((r.requested, r.connected, r.echoed), (50, 50, 50), "{r:?}");
        assert_eq!(
            (r.connect_errors, r.echo_errors, r.stopped_early),
            (0, 0, false)
        );
        assert_eq!(held.len(), 50);
        assert_eq!(held.alive(), 50);
        assert_eq!(open.load(Ordering::SeqCst), 50);
        drop(held);
        while open.load(Ordering::SeqCst) != 0 {
            thread::sleep(Duration::from_millis(5));
        }
        // Without echo too.
        let held = hold_idle(&IdleConfig::new(addr, 10)).unwrap();
        assert_eq!((held.report().connected, held.report().echoed), (10, 0));
        held.close();
    });
}

#[test]
fn idle_echo_against_silent_server_times_out_but_holds() {
    let (addr, open) = tcp_server(Behaviour::Silent);
    within(Duration::from_secs(10), "the load run", move || {
        let mut ic = IdleConfig::new(addr, 3);
        ic.echo_size = 8;
        ic.connect_timeout = Duration::from_millis(100);
        let held = hold_idle(&ic).unwrap();
        let r = held.report();
        assert_eq!((r.connected, r.echoed, r.echo_errors), (3, 0, 3), "{r:?}");
        assert_eq!(open.load(Ordering::SeqCst), 3);
    });
}

#[test]
fn server_closing_mid_echo_counts_io_errors() {
    // Echoes half of each request, then closes the connection.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                if s.read_exact(&mut buf).is_ok() {
                    let _ = s.write_all(&buf[..32]);
                }
            });
        }
    });
    let mut c = cfg(addr, Mode::PingPong, 2, 64);
    c.warmup = Duration::ZERO;
    let e = within(Duration::from_secs(10), "the load run", move || {
        loadgen::run(&c)
    })
    .unwrap_err();
    match e {
        Error::NothingServed(r) => {
            assert!(r.io_errors > 2 && r.mismatches == 0, "{r:?}");
            assert_eq!(r.errors, r.io_errors, "{r:?}");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn bad_settings_are_refused() {
    let (addr, _) = tcp_server(Behaviour::Echo);
    let mut c = cfg(addr, Mode::Udp, 1, 70_000);
    assert!(matches!(loadgen::run(&c), Err(Error::InvalidConfig(_))));
    c.size = 64;
    c.threads = 0;
    assert!(matches!(loadgen::run(&c), Err(Error::InvalidConfig(_))));
}

#[test]
fn large_messages_corruption_is_caught() {
    let (addr, _) = tcp_server(Behaviour::Corrupt(7));
    let r = run_ok(cfg(addr, Mode::PingPong, 2, 16 * 1024));
    assert!(r.mismatches > 0, "{r:?}");
}

#[test]
fn ipv6_loopback() {
    let Ok(l) = TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    let r = run_ok(cfg(addr, Mode::PingPong, 2, 64));
    assert!(r.requests > 50 && r.errors == 0, "{r:?}");
    let u = UdpSocket::bind("[::1]:0").unwrap();
    let uaddr = u.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = u.recv_from(&mut buf) {
            let _ = u.send_to(&buf[..n], peer);
        }
    });
    let r = run_ok(cfg(uaddr, Mode::Udp, 2, 64));
    assert!(r.requests > 50 && r.errors == 0 && r.lost == 0, "{r:?}");
}

/// The hard `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
fn hard_nofile() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

#[test]
fn too_many_connections_for_the_fd_cap_is_refused_up_front() {
    let Some(hard) = hard_nofile().filter(|&h| h < 500_000) else {
        eprintln!("hard fd limit unknown or huge; skipped");
        return;
    };
    let (addr, open) = tcp_server(Behaviour::Echo);
    let c = cfg(addr, Mode::PingPong, hard as usize + 1, 64);
    let e = loadgen::run(&c).unwrap_err();
    assert!(matches!(e, Error::FdLimit { .. }), "{e}");
    assert!(e.to_string().contains("file descriptors"), "{e}");
    // Refused up front: the server saw no connection.
    assert_eq!(open.load(Ordering::SeqCst), 0, "nothing was opened");
    let e = hold_idle(&IdleConfig::new(addr, hard as usize + 1)).unwrap_err();
    assert!(matches!(e, Error::FdLimit { .. }), "{e}");
}
