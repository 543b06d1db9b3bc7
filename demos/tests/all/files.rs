//! File transfer: servers started in this process through the
//! library API, driven by `demos::files::client::Client` and raw sockets;
//! the CLI through the `demos` binary.

use crate::common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::{exe, within, DEADLINE};
use demos::files::client::Client;
use demos::files::{hex, FileServer, FilesConfig, Request};
use demos::service::{stream_service, Running, DEFAULT_DRAIN};
use demos::showcase::drive::{self, ServerProcess};
use demos::strategy::StrategyName;
use sha2::{Digest, Sha256};
use socketserver::auth::Key;
use socketserver::{framing, Address, Server};
use tempfile::TempDir;

const MIB: usize = 1 << 20;

/// The bound on the 0, 1 and 5 MiB round trip (see there).
const ROUND_TRIP: Duration = Duration::from_secs(90);

/// A file server in this process. Its root is `dir/root`; `dir/outside`
/// is a directory next to it that nothing may ever reach.
struct FilesServer {
    _running: Running,
    addr: Address,
    dir: TempDir,
}

impl FilesServer {
    fn start(tune: impl FnOnce(&mut FilesConfig)) -> FilesServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        let mut config = FilesConfig::new(dir.path().join("root"));
        tune(&mut config);
        let handler = FileServer::new(config).unwrap();
        let builder =
            handler.configure(Server::builder().strategy(StrategyName::Threading.build(None)));
        let loopback: Address = "127.0.0.1:0".parse().unwrap();
        let service = stream_service(builder, &loopback, handler, None).unwrap();
        let running = Running::start(vec![service], DEFAULT_DRAIN).unwrap();
        let addr = running.address(0).clone();
        FilesServer {
            _running: running,
            addr,
            dir,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    fn client(&self) -> Client {
        Client::connect(&self.addr, None, DEADLINE).unwrap()
    }

    fn raw(&self) -> TcpStream {
        let c = TcpStream::connect(self.addr.as_inet().unwrap()).unwrap();
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        c.set_write_timeout(Some(DEADLINE)).unwrap();
        c
    }
}

/// Every name in `dir`, hidden ones included, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn sha(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Polls `cond` every 5 ms; panics naming `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "{what}: not true within {limit:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn put_get_list_round_trip_0_1_and_5_mib() {
    let server = FilesServer::start(|_| {});
    let addr = server.addr.clone();
    let out = server.dir.path().join("downloaded");
    // 5 MiB goes up and comes back twice, hashed with SHA-256 (unoptimized
    // in a test build) about eight times on the way: seconds on an idle
    // machine, up to 20 s seen on a saturated one. A hang is still caught.
    let (listed, got_back) = within(ROUND_TRIP, "round trip", move || {
        let mut c = Client::connect(&addr, None, DEADLINE).unwrap();
        let big = drive::pattern(5 * MIB, 42);
        let files: [(&str, &[u8]); 3] = [("empty", b""), ("one", b"x"), ("big.bin", &big)];
        for (name, data) in files {
            let r = c.put_bytes(name, data).unwrap();
            assert!(r.ok);
            assert_eq!(r.name.as_deref(), Some(name));
            assert_eq!(r.size, Some(data.len() as u64));
            assert_eq!(r.sha256, Some(sha(data)), "{name}: the server's hash");
        }
        let mut back = Vec::new();
        for (name, data) in files {
            let got = c.get_bytes(name).unwrap();
            assert!(got == data, "{name}: different bytes back");
            back.push(got.len());
        }
        // Into a file, through a temp file renamed into place.
        let r = c.get_to_path("big.bin", &out, &mut ()).unwrap();
        assert_eq!(r.sha256, Some(sha(&big)));
        assert!(std::fs::read(&out).unwrap() == big);
        (c.list().unwrap(), back)
    });
    let listed: Vec<(String, u64)> = listed.into_iter().map(|e| (e.name, e.size)).collect();
    assert_eq!(
        listed,
        [
            ("big.bin".to_owned(), 5 * MIB as u64),
            ("empty".to_owned(), 0),
            ("one".to_owned(), 1)
        ]
    );
    assert_eq!(got_back, [0, 1, 5 * MIB]);
    assert_eq!(
        names(&server.root()),
        ["big.bin", "empty", "one"],
        "no temp file left"
    );
    assert_eq!(names(server.dir.path()), ["downloaded", "outside", "root"]);
}

#[test]
fn every_bad_name_is_refused_and_nothing_is_written() {
    let server = FilesServer::start(|_| {});
    let absolute = server.outside().join("victim");
    let absolute = absolute.to_str().unwrap().to_owned();
    let long = "n".repeat(256);
    let bad: Vec<(String, &str)> = vec![
        ("../victim".into(), "is a path"),
        ("../outside/victim".into(), "is a path"),
        (absolute.clone(), "is a path"),
        ("a/b".into(), "is a path"),
        ("a\\b".into(), "is a path"),
        ("..".into(), "is not a file name"),
        (".".into(), "is not a file name"),
        (String::new(), "the name is empty"),
        ("a\0b".into(), "NUL"),
        (long, "256 bytes long"),
        ("line\nbreak".into(), "control character"),
        (".upload-0123456789abcdef.part".into(), "reserved"),
    ];
    let mut c = server.client();
    let data = b"must not land anywhere";
    for (name, why) in &bad {
        let e = c
            .put(name, &mut &data[..], data.len() as u64, &sha(data), &mut ())
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("refused") && msg.contains(why),
            "put {name:?}: {msg}"
        );
        assert!(msg.contains("nothing was stored"), "{msg}");
        let e = c.get_bytes(name).unwrap_err().to_string();
        assert!(
            e.contains("refused") && e.contains(why),
            "get {name:?}: {e}"
        );
    }
    // A get of a real system file by absolute path is refused too.
    let e = c.get_bytes("/etc/passwd").unwrap_err().to_string();
    assert!(e.contains("is a path"), "{e}");
    // The refused puts' bytes were drained: the stream is still in step.
    c.put_bytes("fine.txt", b"ok").unwrap();
    assert_eq!(c.get_bytes("fine.txt").unwrap(), b"ok");
    assert_eq!(names(&server.root()), ["fine.txt"]);
    assert!(names(&server.outside()).is_empty());
    assert_eq!(names(server.dir.path()), ["outside", "root"]);
}

#[test]
fn a_put_over_max_size_is_refused_and_closes() {
    let server = FilesServer::start(|c| c.max_size = 1000);
    let mut c = server.client();
    let data = vec![7u8; 5000];
    let e = c
        .put("big", &mut &data[..], 5000, &sha(&data), &mut ())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("over this server's limit of 1000 bytes"),
        "{e}"
    );
    // The server closed this connection without reading the 5000 bytes.
    assert!(c.list().is_err());
    // Even a large upload gets the reason, not just a broken pipe.
    let mut c = server.client();
    let big = vec![1u8; 8 * MIB];
    let e = c
        .put("big", &mut &big[..], big.len() as u64, &sha(&big), &mut ())
        .unwrap_err();
    assert!(e.to_string().contains("over this server's limit"), "{e}");
    // Exactly the limit is fine.
    let ok = vec![7u8; 1000];
    server.client().put_bytes("max", &ok).unwrap();
    assert_eq!(names(&server.root()), ["max"]);
}

#[test]
fn a_wrong_hash_is_refused_and_leaves_nothing() {
    let server = FilesServer::start(|_| {});
    let mut c = server.client();
    let data = drive::pattern(MIB, 5);
    let other = sha(b"something else");
    let e = c
        .put(
            "corrupt.bin",
            &mut &data[..],
            data.len() as u64,
            &other,
            &mut (),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("sha256 mismatch") && e.contains(&other), "{e}");
    assert!(
        names(&server.root()).is_empty(),
        "{:?}",
        names(&server.root())
    );
    // Malformed hashes too.
    for bad in ["", "xyz", &"g".repeat(64), &other[..63]] {
        let e = c
            .put("h", &mut &b"abc"[..], 3, bad, &mut ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("64 hex digits"), "{bad:?}: {e}");
    }
    // An uppercase hash is the same hash.
    c.put(
        "upper",
        &mut &b"abc"[..],
        3,
        &sha(b"abc").to_uppercase(),
        &mut (),
    )
    .unwrap();
    assert_eq!(c.list().unwrap().len(), 1);
    assert_eq!(names(&server.root()), ["upper"]);
}

#[test]
fn an_upload_cut_off_halfway_leaves_nothing_behind() {
    let server = FilesServer::start(|_| {});
    let data = drive::pattern(MIB, 9);
    let mut conn = server.raw();
    framing::write_json(
        &mut conn,
        &Request::put("partial.bin", MIB as u64, &sha(&data)),
    )
    .unwrap();
    conn.write_all(&data[..300 * 1024]).unwrap();
    // The upload is running: its temp file is there, hidden from list.
    wait_until(DEADLINE, "a temp file appears", || {
        names(&server.root())
            .iter()
            .any(|n| n.starts_with(".upload-") && n.ends_with(".part"))
    });
    assert!(
        server.client().list().unwrap().is_empty(),
        "list shows no temp file"
    );
    drop(conn);
    wait_until(DEADLINE, "the temp file is removed", || {
        names(&server.root()).is_empty()
    });
    // A client that sends the header and no bytes at all.
    let mut conn = server.raw();
    framing::write_json(
        &mut conn,
        &Request::put("nothing.bin", 10, &sha(b"0123456789")),
    )
    .unwrap();
    drop(conn);
    // The server has answered a later connection, and still nothing is there.
    assert!(server.client().list().unwrap().is_empty());
    wait_until(DEADLINE, "nothing left", || {
        names(&server.root()).is_empty()
    });
}

#[test]
fn a_stalled_upload_is_dropped_at_the_idle_timeout() {
    let server = FilesServer::start(|c| c.idle = Some(Duration::from_millis(300)));
    let mut conn = server.raw();
    framing::write_json(&mut conn, &Request::put("slow.bin", 1000, &sha(b"x"))).unwrap();
    conn.write_all(&[0u8; 100]).unwrap();
    wait_until(DEADLINE, "the temp file appears", || {
        !names(&server.root()).is_empty()
    });
    // The client stays connected but sends nothing more.
    wait_until(DEADLINE, "the stalled upload is dropped", || {
        names(&server.root()).is_empty()
    });
    drop(conn);
}

#[test]
fn two_concurrent_puts_of_different_names_both_succeed() {
    let server = FilesServer::start(|_| {});
    let handles: Vec<_> = (0..2u64)
        .map(|i| {
            let addr = server.addr.clone();
            thread::spawn(move || {
                let data = drive::pattern(2 * MIB, i + 100);
                let mut c = Client::connect(&addr, None, DEADLINE).unwrap();
                c.put_bytes(&format!("f{i}"), &data).unwrap();
                data
            })
        })
        .collect();
    let datas: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut c = server.client();
    for (i, d) in datas.iter().enumerate() {
        assert!(c.get_bytes(&format!("f{i}")).unwrap() == *d);
    }
    assert_eq!(names(&server.root()), ["f0", "f1"]);
}

#[test]
fn with_a_key_file_a_wrong_or_missing_key_is_refused() {
    let key = Key::new("files key").unwrap();
    let k = key.clone();
    let server = FilesServer::start(move |c| c.key = Some(k));
    let wrong = Key::new("another key").unwrap();
    let e = Client::connect(&server.addr, Some(&wrong), DEADLINE).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // No key: the client reads the challenge where it expects a reply;
    // the server takes the request for a (wrong) answer and closes.
    let mut c = Client::connect(&server.addr, None, DEADLINE).unwrap();
    let e = c.put_bytes("x", b"data").unwrap_err().to_string();
    assert!(e.contains("it needs --key-file"), "{e}");
    let mut conn = server.raw();
    framing::read_frame(&mut conn).unwrap().unwrap();
    framing::write_json(&mut conn, &Request::list()).unwrap();
    assert!(
        framing::read_frame(&mut conn).unwrap().is_none(),
        "closed, no reply"
    );
    assert!(names(&server.root()).is_empty());
    // The right key works.
    let mut c = Client::connect(&server.addr, Some(&key), DEADLINE).unwrap();
    c.put_bytes("x", b"data").unwrap();
    assert_eq!(c.get_bytes("x").unwrap(), b"data");
}

#[test]
fn a_symlink_in_the_root_cannot_be_read_through_or_written_through() {
    let server = FilesServer::start(|_| {});
    let secret = server.outside().join("secret.txt");
    std::fs::write(&secret, "outside the root").unwrap();
    std::os::unix::fs::symlink(&secret, server.root().join("link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", server.root().join("passwd")).unwrap();
    std::os::unix::fs::symlink(server.outside(), server.root().join("dirlink")).unwrap();
    std::fs::create_dir(server.root().join("subdir")).unwrap();
    let mut c = server.client();
    for name in ["link", "passwd", "dirlink"] {
        let e = c.get_bytes(name).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{name}: {e}");
    }
    let e = c.get_bytes("subdir").unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    assert!(
        c.list().unwrap().is_empty(),
        "links and directories are not listed"
    );
    // A put over the link replaces the link; the target is untouched.
    c.put_bytes("link", b"new").unwrap();
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "outside the root"
    );
    assert!(!server.root().join("link").is_symlink());
    assert_eq!(c.get_bytes("link").unwrap(), b"new");
}

#[test]
fn unknown_ops_and_bad_headers_are_answered_then_closed() {
    let server = FilesServer::start(|_| {});
    let mut conn = server.raw();
    framing::write_frame(&mut conn, b"{not json").unwrap();
    let r: demos::files::Response = framing::read_json(&mut conn).unwrap().unwrap();
    assert!(!r.ok && r.error.unwrap().contains("bad request header"));
    assert!(framing::read_frame(&mut conn).unwrap().is_none(), "closed");

    let mut conn = server.raw();
    framing::write_frame(&mut conn, br#"{"op": "delete", "name": "x"}"#).unwrap();
    let r: demos::files::Response = framing::read_json(&mut conn).unwrap().unwrap();
    assert!(r.error.unwrap().contains("unknown op \"delete\""));
    assert!(framing::read_frame(&mut conn).unwrap().is_none(), "closed");

    // A put without its size: the bytes that follow are unknown, closed.
    let mut conn = server.raw();
    framing::write_frame(&mut conn, br#"{"op": "put", "name": "x", "sha256": "00"}"#).unwrap();
    let r: demos::files::Response = framing::read_json(&mut conn).unwrap().unwrap();
    let e = r.error.unwrap();
    assert!(
        e.contains("bad request header") && e.contains("size"),
        "{e}"
    );
    assert!(framing::read_frame(&mut conn).unwrap().is_none(), "closed");
    assert!(names(&server.root()).is_empty());
}

#[test]
fn stale_temp_files_are_swept_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".upload-00000000deadbeef.part"), "crash").unwrap();
    std::fs::write(dir.path().join("kept"), "data").unwrap();
    FileServer::new(FilesConfig::new(dir.path())).unwrap();
    assert_eq!(names(dir.path()), ["kept"]);
    let e = FileServer::new(FilesConfig::new(dir.path().join("missing"))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

// --- Through the binary --------------------------------------------------

#[test]
fn the_cli_puts_gets_and_lists_forking() {
    the_cli_puts_gets_and_lists("forking");
}

#[test]
fn the_cli_puts_gets_and_lists_green() {
    the_cli_puts_gets_and_lists("green");
}

fn the_cli_puts_gets_and_lists(strategy: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let key = dir.path().join("files.key");
    std::fs::write(&key, "cli key\n").unwrap();
    let (root_s, key_s) = (root.to_str().unwrap(), key.to_str().unwrap());

    // A missing root: status 2 before anything listens.
    let out = common::run_demos(
        &["files", "serve", "--root", "/no/such/root"],
        b"",
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stdout.is_empty());

    let mut server = ServerProcess::start(
        exe(),
        &[
            "files",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--root",
            root_s,
            "--key-file",
            key_s,
            "--max-size",
            "2M",
            "--strategy",
            strategy,
        ],
        1,
    )
    .unwrap();
    let addr = server.address(0).to_string();
    let client = |args: &[&str]| {
        let mut all = vec!["files", args[0], "--connect", &addr, "--key-file", key_s];
        all.extend_from_slice(&args[1..]);
        common::run_demos(&all, b"", DEADLINE)
    };
    let local = dir.path().join("local.bin");
    let data = drive::pattern(MIB + 17, 3);
    std::fs::write(&local, &data).unwrap();

    let out = client(&["put", local.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        format!(
            "stored local.bin: {} bytes, sha256 {}\n",
            data.len(),
            sha(&data)
        )
    );
    let out = client(&["put", local.to_str().unwrap(), "--name", "copy.bin"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);

    let out = client(&["list"]);
    assert_eq!(
        out.stdout,
        format!(
            "{:>12}  copy.bin\n{:>12}  local.bin\n",
            data.len(),
            data.len()
        )
    );

    let dest = dir.path().join("back.bin");
    let out = client(&["get", "copy.bin", "-o", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("sha256 verified"), "{}", out.stdout);
    assert!(std::fs::read(&dest).unwrap() == data);
    // -o DIR puts it in DIR under its name.
    let out = client(&["get", "local.bin", "-o", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(std::fs::read(dir.path().join("local.bin")).unwrap() == data);

    // Refusals: a bad name is caught before connecting (2), the server's
    // refusals are status 1 with its reason; no partial file is left.
    let out = client(&["put", local.to_str().unwrap(), "--name", "../x"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let out = client(&[
        "get",
        "missing.bin",
        "-o",
        dir.path().join("m").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("no such file: missing.bin"),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join("m").exists());
    let huge = dir.path().join("huge.bin");
    std::fs::write(&huge, vec![0u8; 3 * MIB]).unwrap();
    let out = client(&["put", huge.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("over this server's limit"),
        "{}",
        out.stderr
    );
    // Without the key.
    let out = common::run_demos(&["files", "list", "--connect", &addr], b"", DEADLINE);
    assert_eq!(out.status.code(), Some(1));

    assert_eq!(names(&root), ["copy.bin", "local.bin"]);
    let leftovers: Vec<_> = names(dir.path())
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let (_, status) = server.terminate(Duration::from_secs(3)).unwrap();
    assert!(status.success());
}

#[test]
fn help_has_examples() {
    for sub in ["serve", "put", "get", "list"] {
        let out = common::run_demos(&["files", sub, "--help"], b"", DEADLINE);
        assert!(out.status.success(), "{sub}");
        assert!(out.stdout.contains("EXAMPLE"), "files {sub}: no examples");
    }
    let out = common::run_demos(&["files", "--help"], b"", DEADLINE);
    assert!(out.stdout.contains("EXAMPLES"));
}

#[test]
fn get_of_names_of_241_to_255_bytes_works_into_a_file_of_that_name() {
    let server = FilesServer::start(|_| {});
    let out = server.dir.path().join("downloads");
    std::fs::create_dir(&out).unwrap();
    let mut c = server.client();
    for len in [241, 250, 255] {
        let name = "n".repeat(len);
        c.put_bytes(&name, name.as_bytes()).unwrap();
        let dest = out.join(&name);
        c.get_to_path(&name, &dest, &mut ()).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), name.as_bytes(), "{len}");
    }
    // Multi-byte characters: the temp name is cut at a character boundary.
    let name = "é".repeat(127); // 254 bytes
    c.put_bytes(&name, b"accents").unwrap();
    c.get_to_path(&name, &out.join(&name), &mut ()).unwrap();
    assert_eq!(names(&out).len(), 4, "no temp file left: {:?}", names(&out));
}

/// A fake file server that answers any request with a get header for
/// `size` bytes, sends the first `sent` of them and then waits for `hold`
/// (or until the client goes away).
fn stalling_server(size: u64, sent: usize, hold: Duration) -> Address {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: Address = listener.local_addr().unwrap().into();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(DEADLINE)).unwrap();
        let _ = framing::read_frame(&mut conn);
        let header = demos::files::Response::file("big", size, "0".repeat(64));
        framing::write_json(&mut conn, &header).unwrap();
        conn.write_all(&vec![7u8; sent]).unwrap();
        conn.set_read_timeout(Some(hold)).unwrap();
        let mut buf = [0u8; 16];
        let _ = std::io::Read::read(&mut conn, &mut buf);
    });
    addr
}

#[test]
fn an_interrupted_get_leaves_no_part_file_behind() {
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let addr = stalling_server(10 * MIB as u64, 64 * 1024, DEADLINE);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("big");
        let mut child = std::process::Command::new(exe())
            .args(["files", "get", "--connect", &addr.to_string(), "big", "-o"])
            .arg(&dest)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until(DEADLINE, "the .part file appears", || {
            names(dir.path()).iter().any(|n| n.ends_with(".part"))
        });
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let Some(status) = drive::wait_child(&mut child, DEADLINE).unwrap() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the client still runs {DEADLINE:?} after the signal");
        };
        assert_eq!(status.code(), Some(code), "{status}");
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }
    // A server that goes away halfway: status 1, nothing left either.
    let addr = stalling_server(10 * MIB as u64, 64 * 1024, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_demos(
        &[
            "files",
            "get",
            "--connect",
            &addr.to_string(),
            "big",
            "-o",
            dir.path().join("big").to_str().unwrap(),
        ],
        b"",
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
}

#[test]
fn swapping_the_root_for_a_symlink_after_the_start_redirects_nothing() {
    let server = FilesServer::start(|_| {});
    let mut c = server.client();
    c.put_bytes("before", b"1").unwrap();
    // Someone moves the root away and puts a symlink to elsewhere in its
    // place.
    let moved = server.dir.path().join("moved");
    std::fs::rename(server.root(), &moved).unwrap();
    std::os::unix::fs::symlink(server.outside(), server.root()).unwrap();
    std::fs::write(server.outside().join("secret"), "outside").unwrap();

    c.put_bytes("after", b"2").unwrap();
    assert_eq!(
        names(&moved),
        ["after", "before"],
        "puts go to the real root"
    );
    assert_eq!(
        names(&server.outside()),
        ["secret"],
        "nothing written outside"
    );
    let e = c.get_bytes("secret").unwrap_err().to_string();
    assert!(e.contains("no such file"), "{e}");
    assert_eq!(c.get_bytes("before").unwrap(), b"1");
    let listed: Vec<String> = c.list().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(listed, ["after", "before"]);
}
