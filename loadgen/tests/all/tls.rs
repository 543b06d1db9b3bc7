//! `Config::tls`: ping-pong and connect-echo-close over TLS against a small rustls echo
//! server written here (thread per connection, 127.0.0.1 port 0), with a throwaway CA
//! made by the `openssl` command line in a temp dir (the certificate helpers of
//! socketserver-tests). Every run has a hard deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use loadgen::{Config, Error, Mode, Report, TlsClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use socketserver_tests::tls::{make_cert, Cert};
use socketserver_tests::{within, TempDir};

/// Handshakes the server completed: (full, resumed).
#[derive(Default)]
struct Counts {
    full: AtomicUsize,
    resumed: AtomicUsize,
}

/// A rustls echo server, a thread per connection.
fn tls_server(cert: &Path, key: &Path) -> (SocketAddr, Arc<Counts>) {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let counts2 = counts.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let (config, counts) = (config.clone(), counts2.clone());
            thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, s);
                let mut buf = vec![0u8; 64 * 1024];
                let mut counted = false;
                loop {
                    let n = match tls.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if !counted {
                        counted = true;
                        match tls.conn.handshake_kind() {
                            Some(rustls::HandshakeKind::Full) => &counts.full,
                            _ => &counts.resumed,
                        }
                        .fetch_add(1, Ordering::SeqCst);
                    }
                    if tls.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, counts)
}

fn cfg(addr: SocketAddr, mode: Mode, conns: usize, size: usize, ca: &Path) -> Config {
    let mut c = Config::new(addr);
    c.mode = mode;
    c.conns = conns;
    c.size = size;
    c.warmup = Duration::from_millis(200);
    c.duration = Duration::from_millis(500);
    c.tls = Some(TlsClient::from_ca_file(ca, "localhost").expect("client config"));
    c
}

fn run(c: Config) -> Result<Report, Error> {
    within(Duration::from_secs(15), "a loadgen run", move || {
        loadgen::run(&c)
    })
}

#[test]
fn tls_pingpong_echoes_every_byte_without_errors() {
    let dir = TempDir::new("pp");
    let Cert { ca, cert, key } = make_cert(&dir, "a");
    let (addr, counts) = tls_server(&cert, &key);
    let r = run(cfg(addr, Mode::PingPong, 8, 64, &ca)).expect("run succeeds");
    assert!(r.requests > 50, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!(r.active_conns, 8, "{r:?}");
    assert_eq!(counts.full.load(Ordering::SeqCst), 8);
    // Larger than one TLS record (16 KiB).
    let r = run(cfg(addr, Mode::PingPong, 2, 40_000, &ca)).expect("run succeeds");
    assert!(r.requests > 5 && r.errors == 0, "{r:?}");
}

#[test]
fn tls_connect_mode_is_a_full_handshake_every_time() {
    let dir = TempDir::new("connect");
    let Cert { ca, cert, key } = make_cert(&dir, "a");
    let (addr, counts) = tls_server(&cert, &key);
    let r = run(cfg(addr, Mode::Connect, 4, 64, &ca)).expect("run succeeds");
    assert!(r.requests > 10, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    let full = counts.full.load(Ordering::SeqCst);
    assert!(full as u64 >= r.requests, "{full} full handshakes, {r:?}");
    assert_eq!(
        counts.resumed.load(Ordering::SeqCst),
        0,
        "a session was resumed"
    );
}

#[test]
fn tls_server_with_an_untrusted_certificate_serves_nothing() {
    let dir = TempDir::new("untrusted");
    let Cert { cert, key, .. } = make_cert(&dir, "server");
    let other_ca = make_cert(&dir, "other").ca;
    let (addr, counts) = tls_server(&cert, &key);
    match run(cfg(addr, Mode::PingPong, 2, 64, &other_ca)) {
        Err(Error::NothingServed(r)) => assert!(r.io_errors > 0, "{r:?}"),
        other => panic!("expected NothingServed, got {other:?}"),
    }
    assert_eq!(counts.full.load(Ordering::SeqCst), 0);
}

#[test]
fn tls_settings_are_checked() {
    let dir = TempDir::new("settings");
    let ca = make_cert(&dir, "a").ca;
    let mut c = cfg("127.0.0.1:9".parse().unwrap(), Mode::Udp, 1, 64, &ca);
    assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
    c.mode = Mode::Connect;
    assert!(c.validate().is_ok());
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(
        TlsClient::from_ca_file(&empty, "localhost"),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        TlsClient::from_ca_file(&dir.join("missing.pem"), "localhost"),
        Err(Error::InvalidConfig(_))
    ));
}
