//! The PROXY protocol (v1 and v2) on real loopback sockets: the client's
//! address from the header reaches `peer_addr`, `verify_request`,
//! `max_per_ip` and the logs; bad, oversized, truncated, slow and untrusted
//! headers are refused before any handler code runs; bytes after the header
//! reach the handler.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socketserver::proxy::{IpNet, ProxyProtocol};
use socketserver::transport::Tcp;
use socketserver::{Address, Builder, Server, StreamHandler, StreamRequest, Threading};
use socketserver_tests::*;

/// What the handler saw.
#[derive(Default)]
struct Seen {
    verified: Mutex<Vec<Address>>,
    handled: AtomicUsize,
    refuse: Mutex<Option<IpAddr>>,
}

/// Says `peer=... proxy=... tlv=...` (the value of TLV 0x05), then echoes.
#[derive(Clone, Default)]
struct Reporter(Arc<Seen>);

impl Reporter {
    fn handled(&self) -> usize {
        self.0.handled.load(Ordering::SeqCst)
    }
}

impl StreamHandler for Reporter {
    fn verify_request(&self, peer: &Address) -> bool {
        self.0.verified.lock().push(peer.clone());
        peer.as_inet().map(|a| a.ip()) != *self.0.refuse.lock()
    }

    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        self.0.handled.fetch_add(1, Ordering::SeqCst);
        let proxy = req
            .proxy_addr()
            .map_or_else(|| "none".to_owned(), ToString::to_string);
        let tlv = req.proxy_header().and_then(|h| h.tlv(0x05)).map_or_else(
            || "none".to_owned(),
            |v| String::from_utf8_lossy(v).into_owned(),
        );
        let peer = req.peer_addr().clone();
        writeln!(req, "peer={peer} proxy={proxy} tlv={tlv}")?;
        req.echo().map(drop)
    }
}

/// A `Threading` server on 127.0.0.1 serving on its own thread; shut down
/// and joined (with a deadline) on drop.
struct Serving {
    server: Arc<Server<Tcp, Threading, Reporter>>,
    addr: Address,
    handler: Reporter,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Serving {
    fn start(builder: Builder) -> Serving {
        let handler = Reporter::default();
        let server = builder
            .strategy(Threading::new())
            .close_timeout(Duration::from_secs(2))
            .tcp("127.0.0.1:0", handler.clone())
            .unwrap();
        let addr = server.server_address().clone();
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::spawn(move || serving.serve_forever());
        Serving {
            server,
            addr,
            handler,
            thread: Some(thread),
        }
    }

    fn required(trusted: &str) -> Serving {
        Serving::start(Server::builder().proxy_protocol(ProxyProtocol::Required {
            trusted: vec![trusted.parse().unwrap()],
        }))
    }

    fn refused(&self) -> u64 {
        self.server.stats().refused
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.server.shutdown();
        if let Some(thread) = self.thread.take() {
            wait_until(DEADLINE, "serve_forever returns", || thread.is_finished());
            let _ = thread.join();
        }
    }
}

fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    h.extend_from_slice(body);
    h
}

/// A v2 PROXY header for a TCP connection from `src` to `dst`, with TLVs.
fn v2_tcp(src: SocketAddr, dst: SocketAddr, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    let family = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
            0x21
        }
        _ => panic!("mixed families"),
    };
    body.extend_from_slice(&src.port().to_be_bytes());
    body.extend_from_slice(&dst.port().to_be_bytes());
    for (kind, value) in tlvs {
        body.push(*kind);
        body.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        body.extend_from_slice(value);
    }
    v2(1, family, &body)
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A connection that has sent `first` and reads lines.
struct Client {
    reader: BufReader<TcpStream>,
    local: SocketAddr,
}

impl Client {
    fn send(addr: &Address, first: &[u8]) -> Client {
        let mut s = tcp_client(addr);
        s.set_nodelay(true).unwrap();
        let local = s.local_addr().unwrap();
        s.write_all(first).unwrap();
        Client {
            reader: BufReader::new(s),
            local,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("no line from the server: {e}"));
        line
    }

    /// Sends `ping` and expects it back.
    fn ping(&mut self) {
        self.reader.get_mut().write_all(b"ping\n").unwrap();
        assert_eq!(self.line(), "ping\n");
    }

    /// Expects the server to close without sending anything; returns how
    /// long that took.
    fn closed_by_server(mut self) -> Duration {
        let start = Instant::now();
        let mut buf = [0u8; 64];
        match self.reader.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("a refused client got {:?}", &buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
        start.elapsed()
    }
}

#[test]
fn v1_tcp4_header_names_the_client_and_bytes_after_it_reach_the_handler() {
    let s = Serving::required("127.0.0.1");
    let mut c = Client::send(
        &s.addr,
        b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\nhello after the header\n",
    );
    let proxy = c.local;
    assert_eq!(
        c.line(),
        format!("peer=203.0.113.7:51000 proxy={proxy} tlv=none\n")
    );
    assert_eq!(c.line(), "hello after the header\n");
    c.ping();
    assert_eq!(
        s.handler.0.verified.lock().as_slice(),
        [Address::Inet(sa("203.0.113.7:51000"))]
    );
}

#[test]
fn v1_tcp6_header_names_the_client() {
    let s = Serving::required("127.0.0.1");
    let mut c = Client::send(
        &s.addr,
        b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 8443\r\n",
    );
    let proxy = c.local;
    assert_eq!(
        c.line(),
        format!("peer=[2001:db8::7]:40000 proxy={proxy} tlv=none\n")
    );
    c.ping();
}

#[test]
fn v1_unknown_serves_the_connection_as_itself() {
    let s = Serving::required("127.0.0.1");
    let mut c = Client::send(&s.addr, b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n");
    let me = c.local;
    assert_eq!(c.line(), format!("peer={me} proxy=none tlv=none\n"));
    c.ping();
}

#[test]
fn v2_tcp4_header_with_tlvs_names_the_client_and_keeps_the_tlvs() {
    let s = Serving::required("127.0.0.1");
    let mut first = v2_tcp(
        sa("198.51.100.4:1234"),
        sa("192.0.2.1:80"),
        &[(0x01, b"h2"), (0x05, b"conn-42"), (0x04, b"")],
    );
    first.extend_from_slice(b"after v2\n");
    let mut c = Client::send(&s.addr, &first);
    let proxy = c.local;
    assert_eq!(
        c.line(),
        format!("peer=198.51.100.4:1234 proxy={proxy} tlv=conn-42\n")
    );
    assert_eq!(c.line(), "after v2\n");
    c.ping();
}

#[test]
fn v2_tcp6_header_names_the_client() {
    let s = Serving::required("127.0.0.1");
    let first = v2_tcp(sa("[2001:db8::9]:5555"), sa("[2001:db8::1]:443"), &[]);
    let mut c = Client::send(&s.addr, &first);
    let proxy = c.local;
    assert_eq!(
        c.line(),
        format!("peer=[2001:db8::9]:5555 proxy={proxy} tlv=none\n")
    );
    c.ping();
}

#[test]
fn v2_local_command_serves_the_connection_as_itself() {
    let s = Serving::required("127.0.0.1");
    // LOCAL with addresses present: they are ignored.
    let mut local = v2_tcp(sa("10.9.9.9:1"), sa("10.9.9.8:2"), &[]);
    local[12] = 0x20;
    let mut c = Client::send(&s.addr, &local);
    let me = c.local;
    assert_eq!(c.line(), format!("peer={me} proxy=none tlv=none\n"));
    c.ping();
    // And with no addresses at all (what HAProxy's checks send).
    let mut c = Client::send(&s.addr, &v2(0, 0x00, &[]));
    let me = c.local;
    assert_eq!(c.line(), format!("peer={me} proxy=none tlv=none\n"));
}

#[test]
fn truncated_headers_are_refused_without_running_the_handler() {
    let s = Serving::required("127.0.0.1");
    let whole_v2 = v2_tcp(sa("198.51.100.4:1234"), sa("192.0.2.1:80"), &[(5, b"x")]);
    let cases: Vec<Vec<u8>> = vec![
        b"PROXY TCP4 203.0.113.7 192.0".to_vec(),
        b"PRO".to_vec(),
        whole_v2[..10].to_vec(),
        whole_v2[..20].to_vec(),
        whole_v2[..whole_v2.len() - 1].to_vec(),
    ];
    for (i, part) in cases.iter().enumerate() {
        let c = Client::send(&s.addr, part);
        // Half-close: the server sees end-of-file inside the header.
        c.reader
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        c.closed_by_server();
        wait_until(DEADLINE, "the refusal is counted", || {
            s.refused() == i as u64 + 1
        });
    }
    assert_eq!(s.handler.handled(), 0);
    assert!(s.handler.0.verified.lock().is_empty());
}

#[test]
fn oversized_headers_are_refused_at_once() {
    let s = Serving::start(
        Server::builder()
            .proxy_protocol(ProxyProtocol::Required {
                trusted: vec!["127.0.0.1".parse().unwrap()],
            })
            .proxy_header_timeout(Duration::from_secs(30)),
    );
    // v1: 107 bytes without CRLF; the connection stays open on our side.
    let long = format!("PROXY TCP4 {}", "1".repeat(120));
    let took = Client::send(&s.addr, long.as_bytes()).closed_by_server();
    println!("oversized v1 refused in {took:?}");
    assert!(took < PROMPT, "took {took:?}: not at once");
    // v2: a length of 513 after the 16 fixed bytes; its 16 bytes are enough.
    let mut big = v2(1, 0x11, &[0; 12]);
    big[14..16].copy_from_slice(&513u16.to_be_bytes());
    let took = Client::send(&s.addr, &big[..16]).closed_by_server();
    println!("oversized v2 refused in {took:?}");
    assert!(took < PROMPT, "took {took:?}: not at once");
    // The largest allowed v2 header (16 + 512) is fine.
    let mut max = v2_tcp(sa("198.51.100.4:1"), sa("192.0.2.1:2"), &[]);
    let pad = 512 - (max.len() - 16) - 3;
    max.extend_from_slice(&[0x04, 0, 0]); // a NOOP TLV, then padding in it
    let n = max.len();
    max[n - 2..].copy_from_slice(&u16::try_from(pad).unwrap().to_be_bytes());
    max.extend(std::iter::repeat_n(0u8, pad));
    let total = u16::try_from(max.len() - 16).unwrap();
    max[14..16].copy_from_slice(&total.to_be_bytes());
    assert_eq!(max.len(), 16 + 512);
    let mut c = Client::send(&s.addr, &max);
    assert!(c.line().starts_with("peer=198.51.100.4:1 "));
    assert_eq!(s.refused(), 2);
    assert_eq!(s.handler.handled(), 1);
}

#[test]
fn garbage_is_refused_when_required_and_served_as_itself_when_optional() {
    let log = LogCapture::install();
    let s = Serving::required("127.0.0.1");
    for garbage in [
        &b"GET / HTTP/1.0\r\n\r\n"[..],
        b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
        b"PROXY TCP4 999.2.3.4 1.2.3.4 1 2\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\0\0",
        b"\r\n\r\n\0\r\nQUIT\n\x2f\x11\0\0",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x51\0\0",
        b"\0\0\0\0",
    ] {
        Client::send(&s.addr, garbage).closed_by_server();
    }
    wait_until(DEADLINE, "8 refusals", || s.refused() == 8);
    assert_eq!(s.handler.handled(), 0);
    log.wait_for(log::Level::Warn, &["refused 127.0.0.1:", "PROXY header"]);

    let s = Serving::start(Server::builder().proxy_protocol(ProxyProtocol::Optional {
        trusted: vec!["127.0.0.1".parse().unwrap()],
    }));
    let mut c = Client::send(&s.addr, b"GET / HTTP/1.0\r\n");
    let me = c.local;
    assert_eq!(c.line(), format!("peer={me} proxy=none tlv=none\n"));
    assert_eq!(c.line(), "GET / HTTP/1.0\r\n");
    // Optional still refuses a header that starts right and goes wrong.
    Client::send(&s.addr, b"PROXY TCP4 1.2.3.4 x 1 2\r\n").closed_by_server();
}

/// Sends `bytes` one at a time, `gap` apart, on a thread; stops at the
/// first failed write (the server closed).
fn dribble(stream: &TcpStream, bytes: Vec<u8>, gap: Duration) -> JoinHandle<usize> {
    let mut s = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut sent = 0;
        for b in bytes {
            if s.write_all(&[b]).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(gap);
        }
        sent
    })
}

#[test]
fn a_header_dribbled_byte_by_byte_is_read_within_the_deadline() {
    // ~0.4 s of dribbling; a 10 s deadline so that a loaded machine's late
    // wake-ups cannot fail it (the cut is the next test's business).
    let s = Serving::start(
        Server::builder()
            .proxy_protocol(ProxyProtocol::Required {
                trusted: vec!["127.0.0.1".parse().unwrap()],
            })
            .proxy_header_timeout(Duration::from_secs(10)),
    );
    let mut headers = vec![(
        "v1",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n".to_vec(),
        "203.0.113.7:51000",
    )];
    headers.push((
        "v2",
        v2_tcp(sa("198.51.100.4:1234"), sa("192.0.2.1:80"), &[(5, b"abc")]),
        "198.51.100.4:1234",
    ));
    for (name, header, client) in headers {
        let start = Instant::now();
        let mut c = Client::send(&s.addr, &[]);
        let n = header.len();
        let writer = dribble(c.reader.get_ref(), header, Duration::from_millis(10));
        let line = c.line();
        println!(
            "{name}: {n} bytes one at a time, 10 ms apart: served after {:?}",
            start.elapsed()
        );
        assert!(line.starts_with(&format!("peer={client} ")), "{line}");
        assert_eq!(writer.join().unwrap(), n);
        c.ping();
    }
}

#[test]
fn a_header_still_dribbling_at_the_deadline_is_cut_and_others_are_served_meanwhile() {
    let timeout = Duration::from_millis(600);
    let s = Serving::start(
        Server::builder()
            .proxy_protocol(ProxyProtocol::Required {
                trusted: vec!["127.0.0.1".parse().unwrap()],
            })
            .proxy_header_timeout(timeout),
    );
    let start = Instant::now();
    let slow = Client::send(&s.addr, &[]);
    // 44 bytes 100 ms apart: 4.4 s, far past the 600 ms deadline.
    let header = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n".to_vec();
    let n = header.len();
    let writer = dribble(slow.reader.get_ref(), header, Duration::from_millis(100));
    // Meanwhile another client is served: the loop does not wait for it.
    let mut quick = Client::send(&s.addr, b"PROXY TCP4 203.0.113.8 192.0.2.1 1 2\r\n");
    assert!(quick.line().starts_with("peer=203.0.113.8:1 "));
    let served_after = start.elapsed();
    let cut_after = start.elapsed() + slow.closed_by_server();
    let sent = writer.join().unwrap();
    println!(
        "header timeout {timeout:?}: another client served after {served_after:?}; \
         the dribbling one cut after {cut_after:?}, having sent {sent} of {n} bytes"
    );
    assert!(sent < n, "the whole header went in: not cut");
    assert!(cut_after < PROMPT, "cut after {cut_after:?}");
    assert_eq!(s.refused(), 1);
    assert_eq!(s.handler.handled(), 1);
}

#[test]
fn a_header_from_an_untrusted_source_is_refused_when_required() {
    let log = LogCapture::install();
    // Our clients come from 127.0.0.1; only 127.0.0.2 is trusted.
    let s = Serving::required("127.0.0.2");
    let c = Client::send(&s.addr, b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n");
    let me = c.local;
    c.closed_by_server();
    wait_until(DEADLINE, "the refusal is counted", || s.refused() == 1);
    assert_eq!(s.handler.handled(), 0);
    assert!(s.handler.0.verified.lock().is_empty());
    log.wait_for(
        log::Level::Warn,
        &[&format!("refused {me}"), "untrusted address"],
    );
}

#[test]
fn a_header_from_an_untrusted_source_is_not_parsed_when_optional() {
    let s = Serving::start(Server::builder().proxy_protocol(ProxyProtocol::Optional {
        trusted: vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
    }));
    let header = "PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n";
    let mut c = Client::send(&s.addr, header.as_bytes());
    let me = c.local;
    // Served as itself; the would-be header is data for the handler.
    assert_eq!(c.line(), format!("peer={me} proxy=none tlv=none\n"));
    assert_eq!(c.line(), header);
    assert_eq!(s.handler.0.verified.lock().as_slice(), [Address::Inet(me)]);
}

#[test]
fn optional_serves_a_silent_trusted_client_as_itself_after_the_header_timeout() {
    let s = Serving::start(
        Server::builder()
            .proxy_protocol(ProxyProtocol::Optional {
                trusted: vec!["127.0.0.0/8".parse().unwrap()],
            })
            .proxy_header_timeout(Duration::from_millis(300)),
    );
    let start = Instant::now();
    let mut c = Client::send(&s.addr, &[]);
    let me = c.local;
    assert_eq!(c.line(), format!("peer={me} proxy=none tlv=none\n"));
    println!("silent client greeted after {:?}", start.elapsed());
    c.ping();
}

#[test]
fn a_connect_and_close_health_check_is_not_a_refusal() {
    let log = LogCapture::install();
    let s = Serving::required("127.0.0.1");
    let c = tcp_client(&s.addr);
    drop(c);
    // A real request after it shows the check was processed first.
    let mut c = Client::send(&s.addr, b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\n");
    assert!(c.line().starts_with("peer=203.0.113.7:1 "));
    wait_until(DEADLINE, "the check's connection ends", || {
        s.server.stats().connections == 1
    });
    assert_eq!(s.refused(), 0);
    assert!(log
        .find(log::Level::Warn, &[&format!("refused {}", c.local)])
        .is_empty());
}

#[test]
fn verify_request_sees_the_client_from_the_header_not_the_proxy() {
    let s = Serving::required("127.0.0.1");
    *s.handler.0.refuse.lock() = Some("203.0.113.66".parse().unwrap());
    Client::send(&s.addr, b"PROXY TCP4 203.0.113.66 192.0.2.1 1000 80\r\n").closed_by_server();
    let mut c = Client::send(&s.addr, b"PROXY TCP4 203.0.113.67 192.0.2.1 1000 80\r\n");
    assert!(c.line().starts_with("peer=203.0.113.67:1000 "));
    assert_eq!(
        s.handler.0.verified.lock().as_slice(),
        [
            Address::Inet(sa("203.0.113.66:1000")),
            Address::Inet(sa("203.0.113.67:1000"))
        ]
    );
    assert_eq!(s.handler.handled(), 1);
    assert_eq!(s.refused(), 1);
}

#[test]
fn max_per_ip_counts_the_clients_from_the_header_not_the_proxy() {
    let s = Serving::start(
        Server::builder()
            .proxy_protocol(ProxyProtocol::Required {
                trusted: vec!["127.0.0.1".parse().unwrap()],
            })
            .max_per_ip(Some(1))
            .busy_message("busy\n"),
    );
    let one = b"PROXY TCP4 198.51.100.1 192.0.2.1 1000 80\r\n";
    let two = b"PROXY TCP4 198.51.100.2 192.0.2.1 1000 80\r\n";
    // All from the same proxy address: without the header, max_per_ip 1
    // would refuse the second.
    let mut a = Client::send(&s.addr, one);
    assert!(a.line().starts_with("peer=198.51.100.1:1000 "));
    let mut b = Client::send(&s.addr, two);
    assert!(b.line().starts_with("peer=198.51.100.2:1000 "));
    // A second connection of client 1 is refused with the busy message.
    let mut again = Client::send(&s.addr, one);
    assert_eq!(again.line(), "busy\n");
    again.closed_by_server();
    assert_eq!(s.refused(), 1);
    // Once client 1 leaves, it may come back.
    drop(a);
    wait_until(DEADLINE, "client 1's connection ends", || {
        s.server.stats().connections == 1
    });
    let mut back = Client::send(&s.addr, one);
    assert!(back.line().starts_with("peer=198.51.100.1:1000 "));
    back.ping();
    b.ping();
}

#[test]
fn handler_errors_are_logged_with_the_client_from_the_header() {
    let log = LogCapture::install();
    let server = Server::builder()
        .strategy(Threading::new())
        .proxy_protocol(ProxyProtocol::Required {
            trusted: vec![IpNet::host("127.0.0.1".parse().unwrap())],
        })
        .tcp(
            "127.0.0.1:0",
            |_req: &mut StreamRequest| -> io::Result<()> {
                Err(io::Error::new(io::ErrorKind::InvalidData, "proxied boom"))
            },
        )
        .unwrap();
    let running = Running::start(server);
    Client::send(
        &running.address,
        b"PROXY TCP4 203.0.113.9 192.0.2.1 4000 80\r\n",
    )
    .closed_by_server();
    log.wait_for(
        log::Level::Warn,
        &["bad request from 203.0.113.9:4000", "proxied boom"],
    );
}

#[test]
fn a_unix_socket_server_takes_the_header_from_any_local_peer() {
    let dir = TempDir::new("proxy");
    let path = dir.join("s.sock");
    let server = Server::builder()
        .strategy(Threading::new())
        .proxy_protocol(ProxyProtocol::Required { trusted: vec![] })
        .unix(&path, |req: &mut StreamRequest| {
            let line = format!(
                "peer={} proxy={}\n",
                req.peer_addr(),
                req.proxy_addr()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            );
            req.write_all(line.as_bytes())
        })
        .unwrap();
    let running = Running::start(server);
    let mut c = unix_client(&running.address);
    c.write_all(&v2_tcp(sa("198.51.100.4:1234"), sa("192.0.2.1:80"), &[]))
        .unwrap();
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).unwrap();
    assert_eq!(line, "peer=198.51.100.4:1234 proxy=unix:(unnamed)\n");
}
