//! Integration tests for `socketserver::auth`: the HMAC challenge-response
//! handshake over real sockets (Unix socket pairs and TCP loopback), hostile and
//! broken clients, and key files.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socketserver::auth::{self, Key, CHALLENGE_LEN, RESPONSE_LEN};
use socketserver::framing;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A connected pair of Unix sockets with read and write timeouts on both ends.
fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
    }
    (a, b)
}

fn key(bytes: &str) -> Key {
    Key::new(bytes).unwrap()
}

/// Runs the server side in a thread; after a successful handshake it reads one
/// frame and returns it, proving the stream carries on in step.
fn spawn_server(mut stream: UnixStream, key: Key) -> JoinHandle<io::Result<Option<Vec<u8>>>> {
    thread::spawn(move || {
        auth::server_handshake(&mut stream, &key)?;
        framing::read_frame(&mut stream)
    })
}

fn expect_denied(server: JoinHandle<io::Result<Option<Vec<u8>>>>, needle: &str) {
    let err = server
        .join()
        .unwrap()
        .expect_err("server must refuse the client");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("authentication failed: "), "{msg}");
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
}

/// A stream that records everything written to it.
struct Recorder<S> {
    inner: S,
    written: Vec<u8>,
}

impl<S: Read> Read for Recorder<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<S: Write> Write for Recorder<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads the server's challenge as a hand-written client would.
fn read_challenge(stream: &mut UnixStream) -> Vec<u8> {
    let challenge = framing::read_frame(stream).unwrap().expect("a challenge");
    assert_eq!(challenge.len(), CHALLENGE_LEN);
    challenge
}

#[test]
fn right_key_is_accepted_and_the_stream_carries_on() {
    let (server_end, mut client_end) = pair();
    let server = spawn_server(server_end, key("s3cret"));
    auth::client_handshake(&mut client_end, &key("s3cret")).unwrap();
    framing::write_frame(&mut client_end, b"after auth").unwrap();
    let frame = server.join().unwrap().unwrap();
    assert_eq!(frame, Some(b"after auth".to_vec()));
}

#[test]
fn right_key_over_tcp_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || -> io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_write_timeout(Some(TIMEOUT))?;
        auth::server_handshake(&mut conn, &key("tcp key"))
    });
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    conn.set_write_timeout(Some(TIMEOUT)).unwrap();
    auth::client_handshake(&mut conn, &key("tcp key")).unwrap();
    server.join().unwrap().unwrap();
}

#[test]
fn wrong_key_is_refused_on_both_sides() {
    let (server_end, mut client_end) = pair();
    let server = spawn_server(server_end, key("right"));
    let err = auth::client_handshake(&mut client_end, &key("wrong")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(
        err.to_string()
            .starts_with("authentication refused by server"),
        "{err}"
    );
    expect_denied(server, "wrong answer to the challenge");
}

#[test]
fn wrong_key_over_tcp_is_refused_on_both_sides() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || -> io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        auth::server_handshake(&mut conn, &key("right"))
    });
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    let err = auth::client_handshake(&mut conn, &key("wrong")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("authentication refused by server"));
    let err = server.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
}

#[test]
fn replayed_answer_is_refused() {
    let k = key("shared");

    // Session 1: a genuine client; record what it sends.
    let (server_end, client_end) = pair();
    let server = spawn_server(server_end, k.clone());
    let mut recorder = Recorder {
        inner: client_end,
        written: Vec::new(),
    };
    auth::client_handshake(&mut recorder, &k).unwrap();
    drop(recorder.inner);
    assert_eq!(server.join().unwrap().unwrap(), None);
    let recorded = recorder.written;
    assert_eq!(recorded.len(), 4 + RESPONSE_LEN, "one 32-byte answer frame");

    // Session 2: an attacker without the key replays the recorded answer.
    let (server_end, mut attacker) = pair();
    let server = spawn_server(server_end, k);
    read_challenge(&mut attacker);
    attacker.write_all(&recorded).unwrap();
    expect_denied(server, "wrong answer to the challenge");
    // The server sends nothing more: the attacker sees the connection close.
    assert_eq!(framing::read_frame(&mut attacker).unwrap(), None);
}

#[test]
fn truncated_answer_is_refused() {
    let (server_end, mut client) = pair();
    let server = spawn_server(server_end, key("k"));
    read_challenge(&mut client);
    // Announce 32 bytes, send 16, then close the sending side.
    client.write_all(&[0, 0, 0, 32]).unwrap();
    client.write_all(&[0x55; 16]).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    expect_denied(server, "got 16 of 32 payload bytes");
}

#[test]
fn truncated_header_is_refused() {
    let (server_end, mut client) = pair();
    let server = spawn_server(server_end, key("k"));
    read_challenge(&mut client);
    client.write_all(&[0, 0]).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    expect_denied(server, "got 2 of 4 header bytes");
}

#[test]
fn wrong_length_answers_are_refused() {
    for len in [0usize, 16, 31, 33, 64] {
        let (server_end, mut client) = pair();
        let server = spawn_server(server_end, key("k"));
        read_challenge(&mut client);
        framing::write_frame(&mut client, &vec![7; len]).unwrap();
        expect_denied(server, &format!("answer of {len} bytes, expected 32"));
    }
}

#[test]
fn oversized_answer_is_refused_without_reading_it() {
    let (server_end, mut client) = pair();
    let server = spawn_server(server_end, key("k"));
    read_challenge(&mut client);
    let start = Instant::now();
    // Announce 1 GiB and send nothing more.
    client.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
    expect_denied(
        server,
        "frame of 1073741824 bytes exceeds the maximum of 64",
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn client_closing_without_answering_is_refused() {
    let (server_end, mut client) = pair();
    let server = spawn_server(server_end, key("k"));
    read_challenge(&mut client);
    drop(client);
    expect_denied(server, "closed the connection without answering");
}

#[test]
fn challenges_are_fresh_in_every_session() {
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (server_end, mut client) = pair();
        let server = spawn_server(server_end, key("k"));
        seen.push(read_challenge(&mut client));
        drop(client);
        assert!(server.join().unwrap().is_err());
    }
    for (i, a) in seen.iter().enumerate() {
        assert!(a.iter().any(|&b| b != 0), "all-zero challenge");
        for b in &seen[i + 1..] {
            assert_ne!(a, b, "a challenge was repeated");
        }
    }
}

#[test]
fn client_reports_a_server_that_does_not_speak_the_protocol() {
    // A server that sends a greeting instead of a challenge.
    let (mut server, mut client) = pair();
    framing::write_frame(&mut server, b"hello").unwrap();
    let err = auth::client_handshake(&mut client, &key("k")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert_eq!(
        err.to_string(),
        "the server sent a 5-byte challenge, expected 32"
    );

    // A server that announces a huge frame.
    let (mut server, mut client) = pair();
    server.write_all(b"HTTP/1.1 400 Bad Request\r\n").unwrap();
    let err = auth::client_handshake(&mut client, &key("k")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(err
        .to_string()
        .starts_with("no valid challenge from the server: "));

    // A server that closes straight away.
    let (server, mut client) = pair();
    drop(server);
    let err = auth::client_handshake(&mut client, &key("k")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(
        err.to_string(),
        "the server closed the connection before sending a challenge"
    );

    // A server that replies something other than OK.
    let (mut server, mut client) = pair();
    let fake = thread::spawn(move || {
        framing::write_frame(&mut server, &[1; CHALLENGE_LEN]).unwrap();
        framing::read_frame(&mut server).unwrap();
        framing::write_frame(&mut server, b"NO").unwrap();
        server
    });
    let err = auth::client_handshake(&mut client, &key("k")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    drop(fake.join().unwrap());
}

// --- Keys ------------------------------------------------------------------------

/// A temporary key file, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "socketserver-auth-test-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn key_file_loses_exactly_one_trailing_newline() {
    let cases: [(&str, &[u8], &[u8]); 6] = [
        ("plain", b"secret", b"secret"),
        ("lf", b"secret\n", b"secret"),
        ("crlf", b"secret\r\n", b"secret"),
        ("two-lf", b"secret\n\n", b"secret\n"),
        ("cr-only", b"secret\r", b"secret\r"),
        ("inner", b" sec\nret \n", b" sec\nret "),
    ];
    for (name, contents, expected) in cases {
        let file = TempFile::new(name, contents);
        let key = Key::from_file(&file.0).unwrap();
        assert_eq!(key.as_bytes(), expected, "{name}");
    }
}

#[test]
fn key_from_file_works_with_the_handshake() {
    let file = TempFile::new("handshake", b"from a file\n");
    let from_file = Key::from_file(&file.0).unwrap();
    let (server_end, mut client_end) = pair();
    let server = spawn_server(server_end, from_file);
    auth::client_handshake(&mut client_end, &key("from a file")).unwrap();
    drop(client_end);
    server.join().unwrap().unwrap();
}

#[test]
fn empty_key_files_are_refused_with_the_file_name() {
    for (name, contents) in [
        ("empty", &b""[..]),
        ("just-lf", b"\n"),
        ("just-crlf", b"\r\n"),
    ] {
        let file = TempFile::new(name, contents);
        let err = Key::from_file(&file.0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{name}");
        assert_eq!(
            err.to_string(),
            format!("key file {} is empty", file.0.display())
        );
    }
}

#[test]
fn missing_key_file_error_names_the_file() {
    let path = std::env::temp_dir().join("socketserver-auth-test-no-such-key-file");
    let err = Key::from_file(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let msg = err.to_string();
    assert!(msg.starts_with("cannot read key file "), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn keys_are_never_empty_and_never_printed() {
    let err = Key::new(Vec::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let k = Key::new(b"hunter2").unwrap();
    assert_eq!(k.as_bytes(), b"hunter2");
    let debug = format!("{k:?} {:#?}", k.clone());
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(!debug.contains("104"), "key bytes printed: {debug}"); // b'h'
}

#[test]
fn a_handshake_within_a_deadline_gives_the_socket_its_own_timeouts_back() {
    let (mut server_end, mut client_end) = pair();
    let read = Duration::from_secs(41);
    let write = Duration::from_secs(43);
    server_end.set_read_timeout(Some(read)).unwrap();
    server_end.set_write_timeout(Some(write)).unwrap();
    let k = key("timeouts-restored");
    let server = thread::spawn(move || {
        auth::server_handshake_within(&mut server_end, &k, Duration::from_secs(2))?;
        Ok::<_, io::Error>(server_end)
    });
    auth::client_handshake(&mut client_end, &key("timeouts-restored")).unwrap();
    let server_end = server.join().unwrap().unwrap();
    // While it ran, both were at most the 2 s deadline; now the server's again.
    assert_eq!(server_end.read_timeout().unwrap(), Some(read));
    assert_eq!(server_end.write_timeout().unwrap(), Some(write));
}
