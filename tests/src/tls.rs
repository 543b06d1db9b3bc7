//! TLS helpers shared by the TLS tests: throwaway CAs and the certificates
//! they sign (server or client, valid or expired), made per run with the
//! `openssl` command line in a temp dir; rustls clients with or without a
//! client certificate; `openssl s_client` and Python `ssl` clients; and a
//! TLS echo server that records what its handler saw.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;
use socketserver::tls::{rustls, ServerConfig, TlsInfo};
use socketserver::{Address, Server, Stats, Strategy, StreamHandler, StreamRequest};

use crate::{tcp_client, wait_until, within, TempDir, DEADLINE};

/// Runs `cmd` (an `openssl` command) to completion; panics with its stderr
/// if it fails.
fn run(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().expect("run openssl");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new P-256 key and a certificate signing request for `/CN=cn`.
fn key_and_csr(key: &Path, csr: &Path, cn: &str) {
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", &format!("/CN={cn}"), "-keyout"])
        .arg(key)
        .arg("-out")
        .arg(csr));
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A server certificate for `localhost` and 127.0.0.1
    /// (extendedKeyUsage serverAuth).
    Server,
    /// A client certificate (extendedKeyUsage clientAuth).
    Client,
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From now, for one day.
    OneDay,
    /// 1 to 2 January 2020: long expired (signed with `openssl ca`, the
    /// one command of OpenSSL 3.0 that takes a start and end date).
    Expired,
}

/// A throwaway CA (P-256, valid one day) in a temp dir.
#[derive(Debug)]
pub struct Ca {
    /// Its certificate (what peers trust).
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
    name: String,
    serial: AtomicUsize,
}

/// A certificate, its key, and the CA that signed it.
#[derive(Debug, Clone)]
pub struct Cert {
    /// The certificate of the CA that signed it (what peers trust).
    pub ca: PathBuf,
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl Cert {
    /// The certificate's DER (the first one of its PEM file).
    pub fn der(&self) -> Vec<u8> {
        socketserver::tls::load_certs(&self.cert).expect("the certificate")[0].to_vec()
    }
}

impl Ca {
    /// A new CA, `/CN=throwaway test CA NAME`, its files named after `name`
    /// in `dir`.
    pub fn new(dir: &TempDir, name: &str) -> Ca {
        let (cert, key) = (
            dir.join(&format!("{name}-ca.pem")),
            dir.join(&format!("{name}-ca-key.pem")),
        );
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec"])
            .args([
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
            ])
            .args(["-subj", &format!("/CN=throwaway test CA {name}")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        Ca {
            cert,
            key,
            dir: dir.path().to_path_buf(),
            name: name.to_owned(),
            serial: AtomicUsize::new(2),
        }
    }

    /// A certificate for `/CN=cn` signed by this CA, its files named after
    /// `name`.
    pub fn issue(&self, name: &str, cn: &str, role: Role, validity: Validity) -> Cert {
        let ext_text = match role {
            Role::Server => {
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
            }
            Role::Client => "extendedKeyUsage=clientAuth\n",
        };
        self.issue_with(name, cn, ext_text, validity)
    }

    /// A client certificate for `/CN=cn` with the subject alternative
    /// names `san` (OpenSSL's syntax: `DNS:a.example,IP:127.0.0.2`), valid
    /// one day.
    pub fn issue_client_with_names(&self, name: &str, cn: &str, san: &str) -> Cert {
        let ext = format!("subjectAltName={san}\nextendedKeyUsage=clientAuth\n");
        self.issue_with(name, cn, &ext, Validity::OneDay)
    }

    fn issue_with(&self, name: &str, cn: &str, ext_text: &str, validity: Validity) -> Cert {
        let p = |f: &str| self.dir.join(format!("{name}-{f}"));
        let (cert, key, csr, ext) = (p("cert.pem"), p("key.pem"), p("csr.pem"), p("ext.cnf"));
        std::fs::write(
            &ext,
            format!("{ext_text}basicConstraints=critical,CA:FALSE\n"),
        )
        .unwrap();
        key_and_csr(&key, &csr, cn);
        let serial = self.serial.fetch_add(1, Ordering::Relaxed).to_string();
        match validity {
            Validity::OneDay => run(Command::new("openssl")
                .args(["x509", "-req", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(&self.cert)
                .arg("-CAkey")
                .arg(&self.key)
                .args(["-set_serial", &serial, "-days", "1", "-extfile"])
                .arg(&ext)
                .arg("-out")
                .arg(&cert)),
            Validity::Expired => {
                // `openssl ca` wants a configuration, a database and a
                // serial file of its own.
                let db = self.dir.join(format!("{}-{name}-index.txt", self.name));
                let serial_file = self.dir.join(format!("{}-{name}-serial.txt", self.name));
                let config = self.dir.join(format!("{}-{name}-ca.cnf", self.name));
                std::fs::write(&db, "").unwrap();
                std::fs::write(&serial_file, format!("{serial:0>2}\n")).unwrap();
                std::fs::write(
                    &config,
                    format!(
                        "[ca]\ndefault_ca = d\n[d]\ndatabase = {}\nserial = {}\n\
                         new_certs_dir = {}\ndefault_md = sha256\npolicy = p\n\
                         unique_subject = no\n[p]\ncommonName = supplied\n",
                        db.display(),
                        serial_file.display(),
                        self.dir.display()
                    ),
                )
                .unwrap();
                run(Command::new("openssl")
                    .args(["ca", "-batch", "-notext", "-config"])
                    .arg(&config)
                    .arg("-cert")
                    .arg(&self.cert)
                    .arg("-keyfile")
                    .arg(&self.key)
                    .args(["-startdate", "20200101000000Z"])
                    .args(["-enddate", "20200102000000Z", "-in"])
                    .arg(&csr)
                    .arg("-extfile")
                    .arg(&ext)
                    .arg("-out")
                    .arg(&cert));
            }
        }
        Cert {
            ca: self.cert.clone(),
            cert,
            key,
        }
    }
}

/// A throwaway CA and a server certificate it signed for `localhost` and
/// 127.0.0.1 (one day, P-256).
pub fn make_cert(dir: &TempDir, name: &str) -> Cert {
    Ca::new(dir, name).issue(name, "localhost", Role::Server, Validity::OneDay)
}

/// A rustls client configuration (ring) trusting the CA certificates of
/// `trusted`, presenting `identity` when the server asks for one.
pub fn client_config(trusted: &Path, identity: Option<&Cert>) -> Arc<rustls::ClientConfig> {
    let roots = socketserver::tls::load_roots(trusted).expect("CA certificates");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(
                socketserver::tls::load_certs(&id.cert).unwrap(),
                socketserver::tls::load_key(&id.key).unwrap(),
            )
            .expect("a usable client certificate"),
    })
}

/// A rustls client of `addr` (server name `localhost`), over TCP with 5 s
/// timeouts; the handshake runs on first use.
pub fn rustls_client(
    addr: &Address,
    config: Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    rustls::StreamOwned::new(conn, tcp_client(addr))
}

/// Sends `msg` and reads as many bytes back; the error the client met
/// otherwise (a refused handshake shows here: under TLS 1.3 the client
/// learns of it at its first read), or `UnexpectedEof` for a connection
/// closed without one.
pub fn rustls_echo(
    client: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    msg: &[u8],
) -> io::Result<Vec<u8>> {
    client.write_all(msg)?;
    client.flush()?;
    let mut back = vec![0; msg.len()];
    client.read_exact(&mut back)?;
    Ok(back)
}

/// What `openssl s_client` did: the first line it printed (empty when the
/// session ended without one) and its stderr.
#[derive(Debug)]
pub struct SClient {
    /// The first line read back (the echo), or empty.
    pub line: String,
    /// Its stderr (the verification and alert messages).
    pub stderr: String,
}

/// `openssl s_client -verify_return_error -quiet` to 127.0.0.1:`port`
/// trusting `trusted`, with `identity` as client certificate and `flags`;
/// sends `line` and reads one line back (with a deadline), then ends it.
pub fn s_client(
    port: u16,
    trusted: &Path,
    identity: Option<&Cert>,
    flags: &[&str],
    line: &str,
) -> SClient {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .arg("-CAfile")
        .arg(trusted)
        .args(["-verify_return_error", "-quiet"])
        .args(flags);
    if let Some(id) = identity {
        cmd.arg("-cert").arg(&id.cert).arg("-key").arg(&id.key);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    // It may have ended already (a refused handshake): a write error is
    // not the test's concern, the (missing) echo is.
    let _ = stdin.write_all(format!("{line}\n").as_bytes());
    let _ = stdin.flush();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let line = within(DEADLINE, "s_client reads the echo or ends", move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    });
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    let stderr = within(DEADLINE, "s_client's stderr", move || {
        errors.join().unwrap()
    });
    SClient { line, stderr }
}

/// A Python `ssl` client of 127.0.0.1:`port` (server name `localhost`)
/// trusting `trusted` and presenting `identity`: sends a line and prints
/// `VERSION ECHO`, or prints `refused: ERROR` and exits 1. Returns its
/// stdout and stderr, trimmed; `None` when there is no `python3`.
pub fn python_client(
    test: &str,
    port: u16,
    trusted: &Path,
    identity: Option<&Cert>,
) -> Option<(String, String)> {
    if !crate::python3_available(test) {
        return None;
    }
    let script = r"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
if len(sys.argv) > 3:
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
try:
    with socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname='localhost') as s:
            s.sendall(b'hello from python\n')
            got = b''
            while not got.endswith(b'\n'):
                chunk = s.recv(100)
                if not chunk:
                    break
                got += chunk
            if not got:
                raise ConnectionError('closed without an echo')
            print(s.version(), got.decode().strip())
except (OSError, ssl.SSLError) as e:
    print('refused:', e)
    sys.exit(1)
";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &port.to_string()])
        .arg(trusted)
        .stdin(Stdio::null());
    if let Some(id) = identity {
        cmd.arg(&id.cert).arg(&id.key);
    }
    let out = within(DEADLINE, "python ssl client", move || cmd.output()).expect("run python3");
    Some((
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    ))
}

/// What the handler saw, shared with the test.
#[derive(Default, Debug)]
pub struct Seen {
    /// How many times `handle` ran.
    pub calls: AtomicUsize,
    /// How many times `verify_tls` ran.
    pub verified: AtomicUsize,
    /// Every byte the handler read.
    pub data: Mutex<Vec<u8>>,
    /// The last request's `tls_info`.
    pub info: Mutex<Option<TlsInfo>>,
}

/// `verify_tls` of a [`TlsServer`]: which sessions to serve.
pub type Allow = Box<dyn Fn(&TlsInfo) -> bool + Send + Sync>;

/// An echo handler that records what it sees in [`Seen`].
struct RecordingEcho {
    seen: Arc<Seen>,
    allow: Option<Allow>,
}

impl StreamHandler for RecordingEcho {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        *self.seen.info.lock() = req.tls_info();
        let mut buf = [0u8; 4096];
        loop {
            let n = req.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            self.seen.data.lock().extend_from_slice(&buf[..n]);
            req.write_all(&buf[..n])?;
        }
    }

    fn verify_tls(&self, _peer: &Address, tls: &TlsInfo) -> bool {
        self.seen.verified.fetch_add(1, Ordering::SeqCst);
        self.allow.as_ref().is_none_or(|allow| allow(tls))
    }
}

/// A TLS echo server on 127.0.0.1 (port 0) on its own thread; stopped
/// (with a deadline) on drop.
pub struct TlsServer {
    /// Its address.
    pub address: Address,
    /// What its handler saw.
    pub seen: Arc<Seen>,
    stats: Box<dyn Fn() -> Stats>,
    counters: Box<dyn Fn() -> socketserver::counters::Snapshot>,
    handle: socketserver::ShutdownHandle,
    thread: Option<thread::JoinHandle<io::Result<()>>>,
}

impl TlsServer {
    /// With `server_config(cert, key)`.
    pub fn start(strategy: impl Strategy, cert: &Cert, handshake_timeout: Duration) -> TlsServer {
        let config = socketserver::tls::server_config(&cert.cert, &cert.key).expect("config");
        TlsServer::with_config(strategy, config, handshake_timeout, None)
    }

    /// With `config`, and `allow` as `verify_tls` (none: serve all).
    pub fn with_config(
        strategy: impl Strategy,
        config: Arc<ServerConfig>,
        handshake_timeout: Duration,
        allow: Option<Allow>,
    ) -> TlsServer {
        let seen = Arc::new(Seen::default());
        let handler = RecordingEcho {
            seen: Arc::clone(&seen),
            allow,
        };
        let server = Server::builder()
            .strategy(strategy)
            .tls(config)
            .tls_handshake_timeout(handshake_timeout)
            .tcp("127.0.0.1:0", handler)
            .expect("bind");
        let address = server.server_address().clone();
        let handle = server.shutdown_handle();
        let server = Arc::new(server);
        let for_stats = Arc::clone(&server);
        let for_counters = Arc::clone(&server);
        let thread = thread::spawn(move || server.serve_forever());
        TlsServer {
            address,
            seen,
            stats: Box::new(move || for_stats.stats()),
            counters: Box::new(move || for_counters.counters()),
            handle,
            thread: Some(thread),
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.address.as_inet().unwrap().port()
    }

    /// Its counters now.
    pub fn stats(&self) -> Stats {
        (self.stats)()
    }

    /// Its metrics' counters now.
    pub fn counters(&self) -> socketserver::counters::Snapshot {
        (self.counters)()
    }

    /// How many times the handler ran.
    pub fn calls(&self) -> usize {
        self.seen.calls.load(Ordering::SeqCst)
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

/// The `ServerConfig` of `--tls-cert=PEM --tls-key=PEM` among `args` (for
/// the test server binaries): `None` without them, an error when one is
/// missing or the files are unusable.
pub fn config_from_args(args: &[String]) -> io::Result<Option<Arc<ServerConfig>>> {
    let value = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
    };
    match (value("--tls-cert"), value("--tls-key")) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => socketserver::tls::server_config(cert, key).map(Some),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--tls-cert and --tls-key go together",
        )),
    }
}

/// `clients` rustls clients at once (trusting `cert`'s CA), each sending
/// `rounds` lines and reading them back, then closing with `close_notify`;
/// fails the test past twice [`DEADLINE`]. Returns how long
/// they took.
pub fn rustls_clients_echo(
    addr: &socketserver::Address,
    cert: &Cert,
    clients: usize,
    rounds: usize,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (addr, config) = (addr.clone(), client_config(&cert.ca, None));
            thread::spawn(move || {
                let mut client = rustls_client(&addr, config);
                for round in 0..rounds {
                    let msg = format!("client {i} round {round}\n");
                    let back = rustls_echo(&mut client, msg.as_bytes())
                        .unwrap_or_else(|e| panic!("client {i}: {e}"));
                    assert_eq!(back, msg.as_bytes());
                }
                client.conn.send_close_notify();
                let _ = client.flush();
            })
        })
        .collect();
    crate::within(
        crate::DEADLINE * 2,
        &format!("{clients} TLS clients echo"),
        move || {
            for c in handles {
                c.join().expect("a client failed");
            }
        },
    );
    start.elapsed()
}
