//! Datagrams: the largest UDP datagram round-trips whole; one over the
//! configured maximum is reported, never truncated; Unix datagrams; the
//! reply is one datagram, sent at most once.

use std::io::{self, Write};
use std::sync::Arc;

use parking_lot::Mutex;
use socketserver::{
    Address, DatagramHandler, DatagramRequest, Pool, RequestError, Server, Strategy, Synchronous,
    Threading,
};
use socketserver_tests::*;

/// The largest UDP payload over IPv4: 65,535 - 8 (UDP) - 20 (IP).
const MAX_UDP: usize = 65_507;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 % 251) as u8).collect()
}

/// Echoes, counting the datagrams it handled and recording every error
/// reported to it.
#[derive(Clone, Default)]
struct Recorder {
    handled: Arc<Mutex<Vec<usize>>>,
    errors: Arc<Mutex<Vec<(Address, io::ErrorKind, String)>>>,
}

impl DatagramHandler for Recorder {
    fn handle(&self, req: &mut DatagramRequest) -> io::Result<()> {
        self.handled.lock().push(req.data().len());
        let data = req.take_data();
        req.reply(&data)
    }
    fn handle_error(&self, peer: &Address, error: &RequestError) {
        let (kind, text) = match error {
            RequestError::Io(e) => (e.kind(), e.to_string()),
            other => (io::ErrorKind::Other, other.to_string()),
        };
        self.errors.lock().push((peer.clone(), kind, text));
    }
}

fn largest_udp_datagram_round_trips<S: Strategy>(strategy: S, host: &'static str) {
    let server = Server::builder()
        .strategy(strategy)
        .udp(host, echo_datagram)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    within(DEADLINE, "a 65,507-byte datagram", move || {
        let c = udp_client(&addr);
        let big = pattern(MAX_UDP);
        assert_eq!(c.send(&big).unwrap(), MAX_UDP);
        let mut buf = vec![0u8; MAX_UDP + 1];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(n, MAX_UDP, "the reply is whole");
        assert!(buf[..n] == big[..], "and intact");
    });
    running.stop();
}

#[test]
fn a_65507_byte_datagram_round_trips_over_ipv4_synchronous() {
    largest_udp_datagram_round_trips(Synchronous, "127.0.0.1:0");
}

#[test]
fn a_65507_byte_datagram_round_trips_over_ipv4_threading() {
    largest_udp_datagram_round_trips(Threading::new(), "127.0.0.1:0");
}

#[test]
fn a_65507_byte_datagram_round_trips_over_ipv4_pool() {
    largest_udp_datagram_round_trips(Pool::new(2), "127.0.0.1:0");
}

#[test]
fn a_65507_byte_datagram_round_trips_over_ipv4_green() {
    largest_udp_datagram_round_trips(socketserver::Green::new().threads(2), "127.0.0.1:0");
}

#[test]
fn udp_echo_works_over_ipv6_loopback() {
    let server = Server::builder().udp("[::1]:0", echo_datagram).unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    assert!(addr.as_inet().unwrap().is_ipv6());
    within(DEADLINE, "3 IPv6 clients", move || {
        for i in 0..3u8 {
            let c = udp_client(&addr);
            let msg = [b"hello world ".as_slice(), &[b'0' + i]].concat();
            c.send(&msg).unwrap();
            let mut buf = [0u8; 64];
            let n = c.recv(&mut buf).unwrap();
            assert_eq!(buf[..n], msg[..]);
        }
    });
    running.stop();
}

#[test]
fn a_datagram_over_max_datagram_size_is_reported_not_truncated_and_the_next_is_served() {
    let handler = Recorder::default();
    let (handled, errors) = (handler.handled.clone(), handler.errors.clone());
    let server = Server::builder()
        .max_datagram_size(1000)
        .udp("127.0.0.1:0", handler)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    let me = within(DEADLINE, "oversized, then fitting", move || {
        let c = udp_client(&addr);
        c.send(&pattern(1001)).unwrap();
        c.send(&pattern(1000)).unwrap();
        let mut buf = [0u8; 2000];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(n, 1000, "the first reply is to the 1000-byte datagram");
        assert!(buf[..n] == pattern(1000)[..]);
        c.local_addr().unwrap()
    });
    running.stop();
    assert_eq!(
        *handled.lock(),
        [1000],
        "the handler never saw the 1001 bytes"
    );
    let errors = errors.lock();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (peer, kind, text) = &errors[0];
    assert_eq!(*peer, Address::Inet(me));
    assert_eq!(*kind, io::ErrorKind::InvalidData);
    assert!(text.contains("max_datagram_size"), "{text}");
}

#[test]
fn a_65507_byte_unix_datagram_round_trips() {
    let dir = TempDir::new("unixgram-big");
    let server = Server::builder()
        .strategy(Threading::new())
        .unixgram(dir.join("server.sock"), echo_datagram)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    let client_dir = dir.path().to_path_buf();
    within(DEADLINE, "a 65,507-byte Unix datagram", move || {
        let c = unixgram_client(&addr, &client_dir, "client");
        let big = pattern(MAX_UDP);
        c.send(&big).unwrap();
        let mut buf = vec![0u8; MAX_UDP + 1];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(n, MAX_UDP);
        assert!(buf[..n] == big[..]);
    });
    running.stop();
}

#[test]
fn unix_datagrams_larger_than_udp_allows_work_with_a_raised_maximum() {
    const SIZE: usize = 150_000;
    let dir = TempDir::new("unixgram-huge");
    let handler = Recorder::default();
    let (handled, errors) = (handler.handled.clone(), handler.errors.clone());
    let server = Server::builder()
        .max_datagram_size(SIZE)
        .unixgram(dir.join("server.sock"), handler)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    let client_dir = dir.path().to_path_buf();
    within(DEADLINE, "150,000-byte Unix datagrams", move || {
        let c = unixgram_client(&addr, &client_dir, "client");
        c.send(&pattern(SIZE + 1)).unwrap(); // one over: reported
        c.send(&pattern(SIZE)).unwrap();
        let mut buf = vec![0u8; SIZE + 2];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(n, SIZE);
        assert!(buf[..n] == pattern(SIZE)[..]);
    });
    running.stop();
    assert_eq!(*handled.lock(), [SIZE]);
    let errors = errors.lock();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, Address::Unix(Some(dir.join("client"))));
    assert_eq!(errors[0].1, io::ErrorKind::InvalidData);
}

/// Writes the reply into `wfile` in pieces, then tries to answer twice more
/// with `reply`; reports what the second `reply` said in the first.
fn answered_once(req: &mut DatagramRequest) -> io::Result<()> {
    let first = req.reply(b"first");
    let second = req.reply(b"second");
    req.wfile().write_all(b"from wfile")?;
    assert!(first.is_ok());
    assert_eq!(
        second.unwrap_err().kind(),
        io::ErrorKind::AlreadyExists,
        "a second reply is refused"
    );
    Ok(())
}

/// Python's `DatagramRequestHandler`: what `handle` writes to `wfile` goes
/// out as one datagram after `finish`.
fn wfile_reply(req: &mut DatagramRequest) -> io::Result<()> {
    let upper = req.data().to_ascii_uppercase();
    req.wfile().write_all(b"got: ")?;
    req.wfile().write_all(&upper)
}

#[test]
fn a_datagram_is_answered_at_most_once_and_wfile_sends_one_datagram() {
    let once = Running::start(Server::builder().udp("127.0.0.1:0", answered_once).unwrap());
    let wfile = Running::start(Server::builder().udp("127.0.0.1:0", wfile_reply).unwrap());
    let (a, b) = (once.address.clone(), wfile.address.clone());
    within(DEADLINE, "replies", move || {
        let c = udp_client(&a);
        c.send(b"x").unwrap();
        let mut buf = [0u8; 64];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"first");
        // A second datagram is answered too, and only once as well: its
        // reply is the next thing to arrive.
        c.send(b"y").unwrap();
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"first");

        let c = udp_client(&b);
        c.send(b"abc").unwrap();
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"got: ABC");
    });
    once.stop();
    wfile.stop();
}
