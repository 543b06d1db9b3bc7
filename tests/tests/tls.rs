//! TLS (`Builder::tls`): clients nobody here wrote (`openssl s_client`,
//! Python's `ssl`) and rustls talk to a TLS echo server under `Threading`
//! and `Green`; a wrong CA, plaintext bytes, a dribbled handshake and a
//! byte flipped on the wire never reach the handler. Certificates are made
//! per run with the `openssl` command line in a temp dir.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socketserver::tls::{rustls, TlsInfo};
use socketserver::{Address, Green, Server, Stats, Strategy, StreamRequest, Threading};
use socketserver_tests::*;

/// A throwaway CA and a server certificate it signed for `localhost` and
/// 127.0.0.1 (one day, P-256), made with the `openssl` command line.
struct Cert {
    /// The CA certificate (what clients trust).
    ca: std::path::PathBuf,
    /// The server's certificate.
    cert: std::path::PathBuf,
    /// The server's key.
    key: std::path::PathBuf,
}

fn openssl(args: &[&std::ffi::OsStr]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_cert(dir: &TempDir, name: &str) -> Cert {
    let p = |f: &str| dir.join(&format!("{name}-{f}"));
    let (ca, ca_key, csr, ext) = (p("ca.pem"), p("ca-key.pem"), p("csr.pem"), p("ext.cnf"));
    let (cert, key) = (p("cert.pem"), p("key.pem"));
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    let s = |x: &'static str| std::ffi::OsStr::new(x);
    openssl(&[
        s("req"),
        s("-x509"),
        s("-newkey"),
        s("ec"),
        s("-pkeyopt"),
        s("ec_paramgen_curve:P-256"),
        s("-nodes"),
        s("-days"),
        s("1"),
        s("-subj"),
        s("/CN=throwaway test CA"),
        s("-addext"),
        s("basicConstraints=critical,CA:TRUE"),
        s("-addext"),
        s("keyUsage=critical,keyCertSign"),
        s("-keyout"),
        ca_key.as_os_str(),
        s("-out"),
        ca.as_os_str(),
    ]);
    openssl(&[
        s("req"),
        s("-newkey"),
        s("ec"),
        s("-pkeyopt"),
        s("ec_paramgen_curve:P-256"),
        s("-nodes"),
        s("-subj"),
        s("/CN=localhost"),
        s("-keyout"),
        key.as_os_str(),
        s("-out"),
        csr.as_os_str(),
    ]);
    openssl(&[
        s("x509"),
        s("-req"),
        s("-in"),
        csr.as_os_str(),
        s("-CA"),
        ca.as_os_str(),
        s("-CAkey"),
        ca_key.as_os_str(),
        s("-set_serial"),
        s("2"),
        s("-days"),
        s("1"),
        s("-extfile"),
        ext.as_os_str(),
        s("-out"),
        cert.as_os_str(),
    ]);
    Cert { ca, cert, key }
}

/// What the handler saw, shared with the test.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    data: Mutex<Vec<u8>>,
    info: Mutex<Option<TlsInfo>>,
}

/// A TLS echo server on its own thread; stopped (with a deadline) on drop.
struct TlsServer {
    address: Address,
    seen: Arc<Seen>,
    stats: Box<dyn Fn() -> Stats>,
    handle: socketserver::ShutdownHandle,
    thread: Option<thread::JoinHandle<io::Result<()>>>,
}

impl TlsServer {
    fn start(strategy: impl Strategy, cert: &Cert, handshake_timeout: Duration) -> TlsServer {
        let config = socketserver::tls::server_config(&cert.cert, &cert.key).expect("config");
        let seen = Arc::new(Seen::default());
        let in_handler = Arc::clone(&seen);
        let server = Server::builder()
            .strategy(strategy)
            .tls(config)
            .tls_handshake_timeout(handshake_timeout)
            .tcp("127.0.0.1:0", move |req: &mut StreamRequest| {
                in_handler.calls.fetch_add(1, Ordering::SeqCst);
                *in_handler.info.lock() = req.tls_info();
                let mut buf = [0u8; 4096];
                loop {
                    let n = req.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    in_handler.data.lock().extend_from_slice(&buf[..n]);
                    req.write_all(&buf[..n])?;
                }
            })
            .expect("bind");
        let address = server.server_address().clone();
        let handle = server.shutdown_handle();
        let server = Arc::new(server);
        let for_stats = Arc::clone(&server);
        let thread = thread::spawn(move || server.serve_forever());
        TlsServer {
            address,
            seen,
            stats: Box::new(move || for_stats.stats()),
            handle,
            thread: Some(thread),
        }
    }

    fn port(&self) -> u16 {
        self.address.as_inet().unwrap().port()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            wait_until(DEADLINE, "server stopped", || t.is_finished());
        }
    }
}

fn client_config(ca: &Cert) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in socketserver::tls::load_certs(&ca.ca).unwrap() {
        roots.add(c).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn rustls_client(
    addr: &Address,
    ca: &Cert,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let conn =
        rustls::ClientConnection::new(client_config(ca), "localhost".try_into().unwrap()).unwrap();
    rustls::StreamOwned::new(conn, tcp_client(addr))
}

fn echo_with_rustls(strategy: impl Strategy) {
    let dir = TempDir::new("tls-echo");
    let cert = make_cert(&dir, "server");
    let server = TlsServer::start(strategy, &cert, Duration::from_secs(10));
    let mut client = rustls_client(&server.address, &cert);
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
        (server.stats)().completed == 1
    });
    assert_eq!((server.stats)().failed, 0);
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
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", server.port()),
        ])
        .arg("-CAfile")
        .arg(&cert.ca)
        .args(["-verify_return_error", "-quiet", flag])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello from openssl\n").unwrap();
    stdin.flush().unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = within(DEADLINE, "s_client reads the echo", move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    });
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    assert_eq!(line, "hello from openssl\n");
    let info = server.seen.info.lock().clone().expect("tls_info");
    info
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
    if !python3_available("python_ssl_client_echoes_and_verifies_the_certificate") {
        return;
    }
    let dir = TempDir::new("tls-python");
    let cert = make_cert(&dir, "server");
    let server = TlsServer::start(Threading::new(), &cert, Duration::from_secs(10));
    let script = r"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
with socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5) as raw:
    with ctx.wrap_socket(raw, server_hostname='localhost') as s:
        s.sendall(b'hello from python\n')
        got = b''
        while not got.endswith(b'\n'):
            chunk = s.recv(100)
            if not chunk:
                break
            got += chunk
        print(s.version(), got.decode().strip())
";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &server.port().to_string()])
        .arg(&cert.ca)
        .stdin(Stdio::null());
    let out = within(DEADLINE, "python ssl client", move || cmd.output()).expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "TLSv1.3 hello from python");
}

#[test]
fn a_client_trusting_another_ca_refuses_the_server_and_the_handler_never_runs() {
    let dir = TempDir::new("tls-wrong-ca");
    let cert = make_cert(&dir, "server");
    let other = make_cert(&dir, "other");
    let server = TlsServer::start(Threading::new(), &cert, Duration::from_secs(10));
    let mut client = rustls_client(&server.address, &other);
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
        (server.stats)().failed == 1
    });
    assert_eq!(server.seen.calls.load(Ordering::SeqCst), 0);
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
        (server.stats)().failed == 1
    });
    assert_eq!(server.seen.calls.load(Ordering::SeqCst), 0);
    assert!(server.seen.data.lock().is_empty());
}

#[test]
fn a_handshake_dribbled_one_byte_per_100_ms_is_cut_at_its_deadline() {
    let dir = TempDir::new("tls-dribble");
    let cert = make_cert(&dir, "server");
    let server = TlsServer::start(Threading::new(), &cert, Duration::from_secs(1));
    // A real ClientHello, sent one byte at a time.
    let mut hello = Vec::new();
    let mut conn =
        rustls::ClientConnection::new(client_config(&cert), "localhost".try_into().unwrap())
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
        (server.stats)().failed == 1
    });
    assert_eq!(server.seen.calls.load(Ordering::SeqCst), 0);
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
    let mut client = rustls_client(&relay, &cert);
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
        (server.stats)().failed == 1
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
    let conn = rustls::ClientConnection::new(client_config(&cert), "localhost".try_into().unwrap())
        .unwrap();
    let mut client = rustls::StreamOwned::new(conn, unix_client(&running.address));
    assert_eq!(
        stream_roundtrip(&mut client, b"over unix\n").unwrap(),
        b"over unix\n"
    );
    drop(client);
    running.stop();
}
