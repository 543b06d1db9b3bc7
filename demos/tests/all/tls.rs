//! TLS in the demos, end to end with the `demos` binary: `demos tls gen`,
//! the shell and file transfer over TLS and mutual TLS, the echo server
//! against `openssl s_client`, Python's `ssl` against the file server, a
//! wrong CA, the non-loopback rule, and a relay that flips one byte of the
//! session (the command does not run, or its output is not printed).

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use common::{exe, run_demos, within, DEADLINE};
use demos::showcase::drive::ServerProcess;
use socketserver::Address;
use socketserver_tests::python3_available;

/// A temp dir with `demos tls gen` output in `certs/` and a shell key.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let out = run_demos(&["tls", "gen", certs.to_str().unwrap()], b"", DEADLINE);
        assert!(out.status.success(), "tls gen: {}", out.stderr);
        std::fs::write(dir.path().join("key"), "tls test key\n").unwrap();
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        let p = if name == "key" {
            self.dir.path().join("key")
        } else {
            self.dir.path().join("certs").join(name)
        };
        p.to_str().unwrap().to_owned()
    }

    fn root(&self) -> PathBuf {
        let root = self.dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        root
    }
}

fn start(args: &[&str]) -> ServerProcess {
    ServerProcess::start(exe(), args, 1).unwrap_or_else(|e| panic!("demos {args:?}: {e}"))
}

fn shell_server(c: &Certs, mutual: bool) -> ServerProcess {
    let (cert, key, ca, k) = (
        c.path("server.pem"),
        c.path("server-key.pem"),
        c.path("ca.pem"),
        c.path("key"),
    );
    let mut args = vec![
        "shell",
        "serve",
        "--allow-root",
        "--key-file",
        &k,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    if mutual {
        args.extend(["--tls-client-ca", &ca]);
    }
    start(&args)
}

fn files_server(c: &Certs, mutual: bool) -> ServerProcess {
    let (cert, key, ca) = (
        c.path("server.pem"),
        c.path("server-key.pem"),
        c.path("ca.pem"),
    );
    let root = c.root();
    let mut args = vec![
        "files",
        "serve",
        "--root",
        root.to_str().unwrap(),
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    if mutual {
        args.extend(["--tls-client-ca", &ca]);
    }
    start(&args)
}

fn addr_of(server: &ServerProcess) -> String {
    server.address(0).to_string()
}

/// `shell run` over TLS against `addr` with the client flags `extra`.
fn shell_run(c: &Certs, addr: &str, extra: &[&str], command: &str) -> common::Output {
    let k = c.path("key");
    let mut args = vec!["shell", "run", "--connect", addr, "--key-file", &k];
    args.extend(extra);
    args.push(command);
    run_demos(&args, b"", DEADLINE)
}

fn ca_flags(c: &Certs) -> Vec<String> {
    vec!["--tls-ca".into(), c.path("ca.pem")]
}

fn client_cert_flags(c: &Certs) -> Vec<String> {
    vec![
        "--tls-ca".into(),
        c.path("ca.pem"),
        "--tls-cert".into(),
        c.path("client.pem"),
        "--tls-key".into(),
        c.path("client-key.pem"),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn tls_gen_writes_six_files_keys_private_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let c = Certs::new();
    for f in demos::tls::throwaway::FILES {
        let meta = std::fs::metadata(c.path(f)).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if f.ends_with("-key.pem") {
            assert_eq!(mode, 0o600, "{f}: {mode:o}");
        }
        assert!(meta.len() > 100, "{f}");
    }
    let before = std::fs::read(c.path("ca.pem")).unwrap();
    let certs = c.dir.path().join("certs");
    let out = run_demos(&["tls", "gen", certs.to_str().unwrap()], b"", DEADLINE);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    assert_eq!(std::fs::read(c.path("ca.pem")).unwrap(), before);
    let out = run_demos(
        &["tls", "gen", certs.to_str().unwrap(), "--force"],
        b"",
        DEADLINE,
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_ne!(std::fs::read(c.path("ca.pem")).unwrap(), before);
}

#[test]
fn shell_run_over_tls_prints_the_command_output() {
    let c = Certs::new();
    let server = shell_server(&c, false);
    let addr = addr_of(&server);
    let out = shell_run(&c, &addr, &strs(&ca_flags(&c)), "echo over-tls; exit 3");
    assert_eq!(out.stdout, "over-tls\n", "stderr: {}", out.stderr);
    assert_eq!(out.status.code(), Some(3));
    // By name: localhost is in the certificate too.
    let port = server.address(0).as_inet().unwrap().port();
    let by_name = format!("localhost:{port}");
    let out = shell_run(&c, &by_name, &strs(&ca_flags(&c)), "echo by-name");
    assert_eq!(out.stdout, "by-name\n", "stderr: {}", out.stderr);
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate_and_serves_one_with_it() {
    let c = Certs::new();
    let server = shell_server(&c, true);
    let addr = addr_of(&server);
    let out = shell_run(&c, &addr, &strs(&ca_flags(&c)), "echo should-not-run");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("TLS: the server requires a client certificate"),
        "{}",
        out.stderr
    );
    let out = shell_run(&c, &addr, &strs(&client_cert_flags(&c)), "echo with-cert");
    assert_eq!(out.stdout, "with-cert\n", "stderr: {}", out.stderr);
    assert!(out.status.success());
}

#[test]
fn files_put_get_list_over_mutual_tls_round_trip_byte_identical() {
    let c = Certs::new();
    let server = files_server(&c, true);
    let addr = addr_of(&server);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let src = c.dir.path().join("blob.bin");
    std::fs::write(&src, &data).unwrap();
    let flags = client_cert_flags(&c);
    let mut put = vec!["files", "put", "--connect", &addr];
    put.extend(strs(&flags));
    put.push(src.to_str().unwrap());
    let out = run_demos(&put, b"", DEADLINE);
    assert!(out.status.success(), "put: {}", out.stderr);
    assert!(
        out.stdout.starts_with("stored blob.bin: 300000 bytes"),
        "{}",
        out.stdout
    );

    let mut list = vec!["files", "list", "--connect", &addr];
    list.extend(strs(&flags));
    let out = run_demos(&list, b"", DEADLINE);
    assert!(out.status.success(), "list: {}", out.stderr);
    assert!(out.stdout.contains("300000  blob.bin"), "{}", out.stdout);

    let dest = c.dir.path().join("back.bin");
    let mut get = vec!["files", "get", "--connect", &addr];
    get.extend(strs(&flags));
    get.extend(["blob.bin", "-o", dest.to_str().unwrap()]);
    let out = run_demos(&get, b"", DEADLINE);
    assert!(out.status.success(), "get: {}", out.stderr);
    assert_eq!(std::fs::read(&dest).unwrap(), data);

    // Without a client certificate: refused, with a TLS message.
    let ca_only = ca_flags(&c);
    let mut list = vec!["files", "list", "--connect", &addr];
    list.extend(strs(&ca_only));
    let out = run_demos(&list, b"", DEADLINE);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("TLS:"), "{}", out.stderr);
}

#[test]
fn a_client_trusting_another_ca_fails_with_a_clear_tls_error() {
    let c = Certs::new();
    let other = Certs::new();
    let server = shell_server(&c, false);
    let addr = addr_of(&server);
    let wrong = ["--tls-ca".to_owned(), other.path("ca.pem")];
    let out = shell_run(&c, &addr, &strs(&wrong), "echo should-not-run");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr
            .contains("TLS: the server's certificate is not signed by a CA of --tls-ca"),
        "{}",
        out.stderr
    );
    // A name the certificate does not hold.
    let mut named = ca_flags(&c);
    named.extend(["--tls-server-name".into(), "example.com".into()]);
    let out = shell_run(&c, &addr, &strs(&named), "echo should-not-run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr
            .contains("TLS: certificate not valid for name example.com")
            && out.stderr.contains("localhost, 127.0.0.1"),
        "{}",
        out.stderr
    );
    // A plaintext server: the client says it does not speak TLS.
    let plain = start(&["echo", "serve"]);
    let out = run_demos(
        &[
            "echo",
            "client",
            "--connect",
            &addr_of(&plain),
            "--tls-ca",
            &c.path("ca.pem"),
            "hi",
        ],
        b"",
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("TLS:"), "{}", out.stderr);
}

#[test]
fn echo_client_over_tls_and_openssl_s_client_get_their_line_echoed() {
    let c = Certs::new();
    let server = start(&[
        "echo",
        "serve",
        "--tls-cert",
        &c.path("server.pem"),
        "--tls-key",
        &c.path("server-key.pem"),
    ]);
    let addr = addr_of(&server);
    let out = run_demos(
        &[
            "echo",
            "client",
            "--connect",
            &addr,
            "--tls-ca",
            &c.path("ca.pem"),
            "hello tls",
        ],
        b"",
        DEADLINE,
    );
    assert_eq!(out.stdout, "hello tls\n", "stderr: {}", out.stderr);

    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped the openssl half: openssl cannot be started");
        return;
    }
    let ca = c.path("ca.pem");
    let line = within(DEADLINE, "openssl s_client echo", move || {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr,
                "-CAfile",
                &ca,
                "-verify_return_error",
                "-verify_ip",
                "127.0.0.1",
                "-quiet",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello from openssl\n").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let _ = child.kill();
        let _ = child.wait();
        line
    });
    assert_eq!(line, "hello from openssl\n");
}

#[test]
fn python_ssl_completes_a_verified_handshake_with_the_file_server() {
    if !python3_available("python_ssl_completes_a_verified_handshake_with_the_file_server") {
        return;
    }
    let c = Certs::new();
    std::fs::write(c.root().join("hello.txt"), "hi").unwrap();
    let server = files_server(&c, false);
    let a = server.address(0).as_inet().unwrap();
    let script = r#"
import json, socket, ssl, struct, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
raw = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=5)
s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
def exact(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise SystemExit("closed")
        b += c
    return b
req = json.dumps({"op": "list"}).encode()
s.sendall(struct.pack(">I", len(req)) + req)
(n,) = struct.unpack(">I", exact(4))
print(s.version(), json.loads(exact(n))["files"][0]["name"])
"#;
    let ca = c.path("ca.pem");
    let port = a.port().to_string();
    let out = within(DEADLINE, "python ssl", move || {
        Command::new("python3")
            .args(["-c", script, &ca, &port])
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "TLSv1.3 hello.txt");
}

#[test]
fn non_loopback_listening_needs_tls_and_client_authentication_or_allow_remote() {
    let c = Certs::new();
    let root = c.root();
    let root = root.to_str().unwrap();
    let (cert, key, ca, k) = (
        c.path("server.pem"),
        c.path("server-key.pem"),
        c.path("ca.pem"),
        c.path("key"),
    );
    let tls = ["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    let check = |args: &[&str]| run_demos(args, b"", DEADLINE);
    // Refused: the shell without TLS; files without TLS, or with TLS and
    // neither a client CA nor a key.
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let out = check(&[
            "shell",
            "serve",
            "--allow-root",
            "--listen",
            addr,
            "--key-file",
            &k,
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
        assert!(
            out.stderr.contains("in clear") && out.stderr.contains("--tls-cert"),
            "{}",
            out.stderr
        );
        let out = check(&["files", "serve", "--listen", addr, "--root", root]);
        assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
        let mut files_tls = vec!["files", "serve", "--listen", addr, "--root", root];
        files_tls.extend(tls);
        let out = check(&files_tls);
        assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
        assert!(out.stderr.contains("--tls-client-ca"), "{}", out.stderr);
        assert!(out.stdout.is_empty(), "nothing listened: {}", out.stdout);
    }
    // Accepted (checked only, never bound): TLS with the shell's key,
    // files with TLS and a client CA or a key, and --allow-remote.
    let mut accepted: Vec<Vec<&str>> = Vec::new();
    let mut v = vec![
        "shell",
        "serve",
        "--allow-root",
        "--listen",
        "0.0.0.0:0",
        "--key-file",
        &k,
    ];
    v.extend(tls);
    accepted.push(v);
    let mut v = vec!["files", "serve", "--listen", "0.0.0.0:0", "--root", root];
    v.extend(tls);
    v.extend(["--tls-client-ca", ca.as_str()]);
    accepted.push(v);
    let mut v = vec![
        "files",
        "serve",
        "--listen",
        "[::]:0",
        "--root",
        root,
        "--key-file",
        &k,
    ];
    v.extend(tls);
    accepted.push(v);
    accepted.push(vec![
        "files",
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--root",
        root,
        "--allow-remote",
    ]);
    accepted.push(vec![
        "shell",
        "serve",
        "--allow-root",
        "--listen",
        "0.0.0.0:0",
        "--key-file",
        &k,
        "--allow-remote",
    ]);
    for mut args in accepted {
        args.push("--check");
        let out = check(&args);
        assert!(out.status.success(), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "ok\n", "{args:?}");
    }
    // The help says so.
    let out = check(&["shell", "serve", "--help"]);
    assert!(out.stdout.contains("REMOTE:") && out.stdout.contains("--tls-client-ca"));
}

/// Which way the relay corrupts the session.
#[derive(Clone, Copy, PartialEq)]
enum Flip {
    /// The client's third application-data record (after its Finished and
    /// its answer to the challenge): the command.
    ClientToServer,
    /// The first server record once the client has sent the command: the
    /// reply.
    ServerToClient,
}

/// Relays one connection from a loopback listener to `server`, record by
/// record, flipping one byte as `flip` says. Returns the relay's address.
fn tampering_relay(server: Address, flip: Flip) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let upstream = TcpStream::connect_timeout(&server.as_inet().unwrap(), DEADLINE).unwrap();
        for s in [&client, &upstream] {
            s.set_read_timeout(Some(DEADLINE)).unwrap();
        }
        let sent = Arc::new(AtomicUsize::new(0));
        let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        let sent2 = Arc::clone(&sent);
        let up = thread::spawn(move || {
            pump(c2, u2, |record| {
                if record[0] != 23 {
                    return false;
                }
                let n = sent2.fetch_add(1, Ordering::SeqCst) + 1;
                flip == Flip::ClientToServer && n == 3
            });
        });
        let mut flipped = false;
        pump(upstream, client, |record| {
            let now = record[0] == 23
                && flip == Flip::ServerToClient
                && !flipped
                && sent.load(Ordering::SeqCst) >= 3;
            flipped |= now;
            now
        });
        let _ = up.join();
    });
    addr
}

/// Copies TLS records from `from` to `to`, flipping the last byte of each
/// record `corrupt` picks, until either side ends.
fn pump(mut from: TcpStream, mut to: TcpStream, mut corrupt: impl FnMut(&[u8]) -> bool) {
    for _ in 0..10_000 {
        let mut header = [0u8; 5];
        if from.read_exact(&mut header).is_err() {
            break;
        }
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        let mut record = header.to_vec();
        record.resize(5 + len, 0);
        if from.read_exact(&mut record[5..]).is_err() {
            break;
        }
        if corrupt(&record) {
            *record.last_mut().unwrap() ^= 0x01;
        }
        if to.write_all(&record).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn tampered_session(flip: Flip) -> (common::Output, PathBuf, Certs) {
    let c = Certs::new();
    let server = shell_server(&c, false);
    let relay = tampering_relay(server.address(0).clone(), flip);
    let marker = c.dir.path().join("ran");
    let command = format!("touch {}; echo SECRET-OUTPUT", marker.display());
    let out = shell_run(&c, &relay, &strs(&ca_flags(&c)), &command);
    drop(server);
    (out, marker, c)
}

#[test]
fn a_byte_flipped_on_the_way_to_the_server_fails_the_session_and_the_command_never_runs() {
    let (out, marker, _c) = tampered_session(Flip::ClientToServer);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("TLS:"), "{}", out.stderr);
    assert!(!out.stdout.contains("SECRET-OUTPUT"), "{}", out.stdout);
    assert!(!marker.exists(), "the tampered command ran");
}

#[test]
fn a_byte_flipped_on_the_way_to_the_client_fails_the_session_and_nothing_is_printed() {
    let (out, _marker, _c) = tampered_session(Flip::ServerToClient);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("TLS:") && out.stderr.contains("tampered"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}
