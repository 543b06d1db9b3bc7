//! TLS (`Builder::tls`): clients nobody here wrote (`openssl s_client`,
//! Python's `ssl`) and rustls talk to a TLS echo server under `Threading`
//! and `Green`; a wrong CA, plaintext bytes, a dribbled handshake and a
//! byte flipped on the wire never reach the handler. Certificates are made
//! per run with the `openssl` command line in a temp dir.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socketserver::tls::{rustls, TlsInfo};
use socketserver::{Address, Green, Server, Strategy, Threading};
use socketserver_tests::tls::*;
use socketserver_tests::*;

fn echo_with_rustls(strategy: impl Strategy) {
    let dir = TempDir::new("tls-echo");
    let cert = make_cert(&dir, "server");
    let server = TlsServer::start(strategy, &cert, Duration::from_secs(10));
    let mut client = rustls_client(&server.address, client_config(&cert.ca, None));
    for msg in [&b"hello\n"[..], &[7u8; 20_000][..], b"again\n"] {
        assert_eq!(stream_roundtrip(&mut client, msg).unwrap(), msg);
    }
    let info = server
        .seen
        .info
        .lock()
        .clone()
        .expect("tls_info in the handler");
    assert_eq!(info.protocol, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(info.sni.as_deref(), Some("localhost"));
    assert!(info.cipher_suite.is_some());
    // A clean close (close_notify) ends the handler without an error.
    client.conn.send_close_notify();
    client.flush().unwrap();
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    wait_until(DEADLINE, "request completed", || {
        server.stats().completed == 1
    });
    assert_eq!(server.stats().failed, 0);
}

#[test]
fn rustls_client_echoes_under_threading() {
    echo_with_rustls(Threading::new());
}

#[test]
fn rustls_client_echoes_under_green() {
    echo_with_rustls(Green::new().threads(1));
}

/// `openssl s_client` with `flag` (`-tls1_2`, `-tls1_3`) sends a line and
/// reads it back.
fn openssl_s_client_echoes(flag: &'static str, strategy: impl Strategy) -> TlsInfo {
    let dir = TempDir::new("tls-openssl");
    let cert = make_cert(&dir, "server");
    let server = TlsServer::start(strategy, &cert, Duration::from_secs(10));
    let out = s_client(server.port(), &cert.ca, None, &[flag], "hello from openssl");
    assert_eq!(out.line, "hello from openssl\n", "stderr: {}", out.stderr);
    server.seen.info.lock().clone().expect("tls_info")
}

#[test]
fn openssl_s_client_echoes_over_tls_1_2() {
    let info = openssl_s_client_echoes("-tls1_2", Threading::new());
    assert_eq!(info.protocol, Some(rustls::ProtocolVersion::TLSv1_2));
}

#[test]
fn openssl_s_client_echoes_over_tls_1_3() {
    let info = openssl_s_client_echoes("-tls1_3", Threading::new());
    assert_eq!(info.protocol, Some(rustls::ProtocolVersion::TLSv1_3));
}

#[test]
fn openssl_s_client_echoes_over_tls_1_3_under_green() {
    let info = openssl_s_client_echoes("-tls1_3", Green::new().threads(1));
    assert_eq!(info.protocol, Some(rustls::ProtocolVersion::TLSv1_3));
}

#[test]
fn python_ssl_client_echoes_and_verifies_the_certificate() {
    let dir = TempDir::new("tls-python");
    let cert = make_cert(&dir, "server");
    let server = TlsServer::start(Threading::new(), &cert, Duration::from_secs(10));
    let Some((stdout, stderr)) = python_client(
        "python_ssl_client_echoes_and_verifies_the_certificate",
        server.port(),
        &cert.ca,
        None,
    ) else {
        return;
    };
    assert_eq!(stdout, "TLSv1.3 hello from python", "stderr: {stderr}");
}

#[test]
fn a_client_trusting_another_ca_refuses_the_server_and_the_handler_never_runs() {
    let dir = TempDir::new("tls-wrong-ca");
    let cert = make_cert(&dir, "server");
    let other = make_cert(&dir, "other");
    let server = TlsServer::start(Threading::new(), &cert, Duration::from_secs(10));
    let mut client = rustls_client(&server.address, client_config(&other.ca, None));
    let err = client.write_all(b"hello\n").and_then(|()| client.flush());
    let err = match err {
        Err(e) => e,
        Ok(()) => {
            let mut b = [0u8; 16];
            client
                .read(&mut b)
                .expect_err("the client must refuse the certificate")
        }
    };
    assert!(
        err.to_string().contains("certificate") || err.to_string().contains("UnknownIssuer"),
        "client error: {err}"
    );
    wait_until(DEADLINE, "the failed handshake is counted", || {
        server.stats().failed == 1
    });
    assert_eq!(server.calls(), 0);
}

#[test]
fn plaintext_bytes_to_a_tls_port_are_closed_without_reaching_the_handler() {
    let dir = TempDir::new("tls-plaintext");
    let cert = make_cert(&dir, "server");
    let server = TlsServer::start(Threading::new(), &cert, Duration::from_secs(10));
    let mut c = tcp_client(&server.address);
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    // An alert at most, then the end (or a reset): never a hang.
    let _ = c.read_to_end(&mut rest);
    assert!(rest.len() < 64, "{} bytes back", rest.len());
    wait_until(DEADLINE, "the failed handshake is counted", || {
        server.stats().failed == 1
    });
    assert_eq!(server.calls(), 0);
    assert!(server.seen.data.lock().is_empty());
}

#[test]
fn a_handshake_dribbled_one_byte_per_100_ms_is_cut_at_its_deadline() {
    let dir = TempDir::new("tls-dribble");
    let cert = make_cert(&dir, "server");
    let server = TlsServer::start(Threading::new(), &cert, Duration::from_secs(1));
    // A real ClientHello, sent one byte at a time.
    let mut hello = Vec::new();
    let mut conn = rustls::ClientConnection::new(
        client_config(&cert.ca, None),
        "localhost".try_into().unwrap(),
    )
    .unwrap();
    conn.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100, "a hello of {} bytes", hello.len());
    let c = tcp_client(&server.address);
    let mut reader = c.try_clone().unwrap();
    let closed = Arc::new(AtomicBool::new(false));
    let closed_by_reader = Arc::clone(&closed);
    let start = Instant::now();
    let read = thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        closed_by_reader.store(true, Ordering::SeqCst);
        start.elapsed()
    });
    let mut writer = &c;
    for &b in &hello {
        if closed.load(Ordering::SeqCst) || writer.write_all(&[b]).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let took = within(DEADLINE, "the server closes", move || read.join().unwrap());
    println!("dribbled handshake closed after {took:?} (deadline 1 s)");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    wait_until(DEADLINE, "the failed handshake is counted", || {
        server.stats().failed == 1
    });
    assert_eq!(server.calls(), 0);
}

/// A relay between one client and `to` that flips the last byte of the
/// first client-to-server chunk after `flip` is set.
fn flipping_relay(to: Address, flip: Arc<AtomicBool>) -> Address {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = Address::Inet(listener.local_addr().unwrap());
    thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let server = tcp_client(&to);
        let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        thread::spawn(move || {
            let mut s_in = server;
            let mut c_out = client;
            let _ = io::copy(&mut s_in, &mut c_out);
            let _ = c_out.shutdown(std::net::Shutdown::Write);
        });
        let _ = c_in.set_read_timeout(Some(DEADLINE));
        let mut buf = [0u8; 16 * 1024];
        for _ in 0..10_000 {
            let n = match c_in.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if flip.swap(false, Ordering::SeqCst) {
                buf[n - 1] ^= 0x01;
            }
            if s_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s_out.shutdown(std::net::Shutdown::Write);
    });
    addr
}

#[test]
fn a_byte_flipped_on_the_wire_fails_the_session_and_the_handler_never_sees_it() {
    let dir = TempDir::new("tls-flip");
    let cert = make_cert(&dir, "server");
    let server = TlsServer::start(Threading::new(), &cert, Duration::from_secs(10));
    let flip = Arc::new(AtomicBool::new(false));
    let relay = flipping_relay(server.address.clone(), Arc::clone(&flip));
    let mut client = rustls_client(&relay, client_config(&cert.ca, None));
    assert_eq!(
        stream_roundtrip(&mut client, b"echo hi\n").unwrap(),
        b"echo hi\n"
    );
    flip.store(true, Ordering::SeqCst);
    client.write_all(b"echo hi\n").unwrap();
    client.flush().unwrap();
    let mut buf = [0u8; 64];
    let result = client.read(&mut buf);
    let err = result.expect_err("the tampered session must fail");
    println!("client after the flipped byte: {err}");
    assert!(
        err.to_string().contains("BadRecordMac") || err.to_string().contains("alert"),
        "client error: {err}"
    );
    wait_until(DEADLINE, "the request ends failed", || {
        server.stats().failed == 1
    });
    // The handler saw the first message only, never the altered one.
    assert_eq!(&*server.seen.data.lock(), b"echo hi\n");
}

#[test]
fn a_unix_stream_server_speaks_tls_too() {
    let dir = TempDir::new("tls-unix");
    let cert = make_cert(&dir, "server");
    let config = socketserver::tls::server_config(&cert.cert, &cert.key).unwrap();
    let server = Server::builder()
        .strategy(Threading::new())
        .tls(config)
        .unix(dir.join("s.sock"), echo_stream)
        .unwrap();
    let running = Running::start(server);
    let conn = rustls::ClientConnection::new(
        client_config(&cert.ca, None),
        "localhost".try_into().unwrap(),
    )
    .unwrap();
    let mut client = rustls::StreamOwned::new(conn, unix_client(&running.address));
    assert_eq!(
        stream_roundtrip(&mut client, b"over unix\n").unwrap(),
        b"over unix\n"
    );
    drop(client);
    running.stop();
}

#[test]
fn fifty_rustls_clients_echo_at_once_under_green_while_a_silent_client_stalls_its_handshake() {
    const CLIENTS: usize = 50;
    let dir = TempDir::new("tls-green-50");
    let cert = make_cert(&dir, "server");
    let server = TlsServer::start(Green::new().threads(1), &cert, Duration::from_secs(30));
    // Connected, but never says hello: its handshake waits in the reactor,
    // not in the one green thread's kernel read.
    let silent = tcp_client(&server.address);
    let took = rustls_clients_echo(&server.address, &cert, CLIENTS, 3);
    wait_until(DEADLINE, "every request completed", || {
        server.stats().completed == CLIENTS as u64
    });
    println!(
        "green: {CLIENTS} TLS clients x 3 echoes in {took:?}, one handshake stalled meanwhile"
    );
    assert_eq!(server.calls(), CLIENTS);
    assert_eq!(server.stats().failed, 0);
    drop(silent);
}

/// A server under `strategy` with `clients` connected, then closed: how
/// long the close took.
fn close_with(
    strategy: impl Strategy,
    clients: impl FnOnce(&Address, &Cert) -> Vec<Box<dyn std::any::Any>>,
) -> Duration {
    let dir = TempDir::new("tls-close");
    let cert = make_cert(&dir, "server");
    let config = socketserver::tls::server_config(&cert.cert, &cert.key).unwrap();
    let server = Server::builder()
        .strategy(strategy)
        .tls(config)
        .tls_handshake_timeout(Duration::from_secs(30))
        .close_timeout(Duration::from_secs(8))
        .tcp("127.0.0.1:0", echo_stream)
        .unwrap();
    let running = Running::start(server);
    let held = clients(&running.address, &cert);
    thread::sleep(Duration::from_millis(200));
    let took = running.stop();
    drop(held);
    took
}

#[test]
fn closing_the_server_does_not_wait_for_a_client_that_never_starts_its_handshake() {
    let took = close_with(Threading::new(), |addr, _| vec![Box::new(tcp_client(addr))]);
    println!("closed in {took:?} with a silent client (close_timeout 8 s)");
    assert!(took < PROMPT, "closed after {took:?}");
}

#[test]
fn closing_a_green_server_does_not_wait_for_a_client_that_never_starts_its_handshake() {
    let took = close_with(Green::new().threads(1), |addr, _| {
        vec![Box::new(tcp_client(addr))]
    });
    println!("green: closed in {took:?} with a silent client (close_timeout 8 s)");
    assert!(took < PROMPT, "closed after {took:?}");
}

/// A TLS echo server (`Threading`) with half a `ClientHello` received from a
/// client: its handshake is under way when the server begins to close,
/// 100 ms later. Returns after another 200 ms with the client's session,
/// its socket (the rest of the hello unsent), the thread running the close
/// (it returns the close's duration) and the directory of the certificates.
fn handshake_under_way_at_close(
    name: &str,
) -> (
    rustls::ClientConnection,
    std::net::TcpStream,
    thread::JoinHandle<Duration>,
    Vec<u8>,
    TempDir,
) {
    let dir = TempDir::new(name);
    let cert = make_cert(&dir, "server");
    let config = socketserver::tls::server_config(&cert.cert, &cert.key).unwrap();
    let server = Server::builder()
        .strategy(Threading::new())
        .tls(config)
        .close_timeout(DEADLINE)
        .tcp("127.0.0.1:0", echo_stream)
        .unwrap();
    let running = Running::start(server);
    let mut conn = rustls::ClientConnection::new(
        client_config(&cert.ca, None),
        "localhost".try_into().unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    let mut tcp = tcp_client(&running.address);
    tcp.write_all(&hello[..hello.len() / 2]).unwrap();
    thread::sleep(Duration::from_millis(100));
    let closing = thread::spawn(move || running.stop());
    thread::sleep(Duration::from_millis(200));
    let rest = hello[hello.len() / 2..].to_vec();
    (conn, tcp, closing, rest, dir)
}

#[test]
fn a_handshake_under_way_when_the_server_closes_completes_and_is_served() {
    let (mut conn, mut tcp, closing, rest, _dir) = handshake_under_way_at_close("tls-close-midway");
    assert!(!closing.is_finished(), "the close waits for the handshake");
    // The rest of the hello, then a whole session.
    tcp.write_all(&rest).unwrap();
    let mut client = rustls::Stream::new(&mut conn, &mut tcp);
    assert_eq!(
        stream_roundtrip(&mut client, b"served while closing\n").unwrap(),
        b"served while closing\n"
    );
    let took = within(DEADLINE * 2, "the close ends", move || {
        closing.join().unwrap()
    });
    println!("the close ended {took:?} after it began, the late handshake served");
}

#[test]
fn a_client_whose_handshake_completes_during_a_close_has_a_moment_to_send_its_first_message() {
    let (mut conn, mut tcp, closing, rest, _dir) =
        handshake_under_way_at_close("tls-close-first-message");
    // The rest of the hello, the whole handshake, and only then, a little
    // later (as a client that prepares its request does), the first message.
    tcp.write_all(&rest).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    thread::sleep(Duration::from_millis(50));
    let mut client = rustls::Stream::new(&mut conn, &mut tcp);
    assert_eq!(
        stream_roundtrip(&mut client, b"first, after a pause\n").unwrap(),
        b"first, after a pause\n"
    );
    within(DEADLINE * 2, "the close ends", move || {
        closing.join().unwrap()
    });
}

#[test]
fn closing_the_server_does_not_wait_for_an_idle_tls_client() {
    let took = close_with(Threading::new(), |addr, cert| {
        let mut c = rustls_client(addr, client_config(&cert.ca, None));
        assert_eq!(rustls_echo(&mut c, b"hi\n").unwrap(), b"hi\n");
        vec![Box::new(c)]
    });
    println!("closed in {took:?} with an idle TLS client (close_timeout 8 s)");
    assert!(took < PROMPT, "closed after {took:?}");
}
