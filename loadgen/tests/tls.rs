//! `Config::tls`: ping-pong and connect-echo-close over TLS against a small rustls echo
//! server written here (thread per connection, 127.0.0.1 port 0), with a throwaway CA
//! made by the `openssl` command line in a temp dir. Every run has a hard deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use loadgen::{Config, Error, Mode, Report, TlsClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(e) => panic!("test did not finish within {secs} s ({e})"),
    }
}

/// A temp dir removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("loadgen-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (CA certificate, server certificate for localhost and 127.0.0.1, server key).
fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let (ca, ca_key, csr, ext, cert, key) = (
        p("ca.pem"),
        p("ca-key.pem"),
        p("csr.pem"),
        p("ext.cnf"),
        p("cert.pem"),
        p("key.pem"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    let s = |x: &PathBuf| x.to_str().unwrap().to_owned();
    let curve = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(curve);
    let (ca_s, ca_key_s, csr_s, ext_s, cert_s, key_s) =
        (s(&ca), s(&ca_key), s(&csr), s(&ext), s(&cert), s(&key));
    a.extend([
        "-days",
        "1",
        "-subj",
        "/CN=throwaway loadgen CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-keyout",
        &ca_key_s,
        "-out",
        &ca_s,
    ]);
    openssl(&a);
    let mut a = vec!["req"];
    a.extend(curve);
    a.extend(["-subj", "/CN=localhost", "-keyout", &key_s, "-out", &csr_s]);
    openssl(&a);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr_s,
        "-CA",
        &ca_s,
        "-CAkey",
        &ca_key_s,
        "-set_serial",
        "2",
        "-days",
        "1",
        "-extfile",
        &ext_s,
        "-out",
        &cert_s,
    ]);
    (ca, cert, key)
}

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
    within(15, move || loadgen::run(&c))
}

#[test]
fn tls_pingpong_echoes_every_byte_without_errors() {
    let dir = TempDir::new("pp");
    let (ca, cert, key) = make_cert(&dir.0, "a");
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
    let (ca, cert, key) = make_cert(&dir.0, "a");
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
    let (_, cert, key) = make_cert(&dir.0, "server");
    let (other_ca, _, _) = make_cert(&dir.0, "other");
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
    let (ca, _, _) = make_cert(&dir.0, "a");
    let mut c = cfg("127.0.0.1:9".parse().unwrap(), Mode::Udp, 1, 64, &ca);
    assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
    c.mode = Mode::Connect;
    assert!(c.validate().is_ok());
    let empty = dir.0.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(
        TlsClient::from_ca_file(&empty, "localhost"),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        TlsClient::from_ca_file(&dir.0.join("missing.pem"), "localhost"),
        Err(Error::InvalidConfig(_))
    ));
}
