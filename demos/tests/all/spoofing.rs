//! Text spoofing: nicknames and file names cannot hide characters or pass
//! for another name (bidirectional controls, zero-width characters, blank
//! letters, lookalikes of `/` and `.`, mixed scripts); relayed chat text
//! has those characters replaced; and the clients (`demos files`, `demos
//! shell run`, `demos chat client`) show what a hostile server sends with
//! escapes, never raw to the terminal.

use crate::common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{run_demos, within, DEADLINE};
use demos::chat::{Room, UdpRoom, UdpRoomConfig};
use demos::files::{client::Client, FileServer, FilesConfig, Request};
use demos::service::{datagram_service, stream_service, Running, DEFAULT_DRAIN};
use demos::showcase::drive::{self, Member, Peer};
use demos::strategy::StrategyName;
use socketserver::auth::{Gatekeeper, Key};
use socketserver::{framing, Address, Server};

fn loopback() -> Address {
    "127.0.0.1:0".parse().unwrap()
}

/// Characters no terminal of a user may receive raw from a server here.
const RAW: [char; 6] = ['\x1b', '\x07', '\u{9b}', '\u{202e}', '\u{200b}', '\u{2028}'];

fn assert_no_raw(what: &str, text: &str) {
    for c in RAW {
        assert!(
            !text.contains(c),
            "{what}: U+{:04X} raw in {text:?}",
            c as u32
        );
    }
}

/// Every hidden character the servers replace or refuse.
const HIDDEN: &str = "\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}\u{2066}\u{2067}\u{2068}\
                      \u{2069}\u{200e}\u{200f}\u{061c}\u{200b}\u{200c}\u{200d}\u{2060}\
                      \u{feff}\u{2028}\u{2029}";

#[test]
fn chat_nicknames_with_hidden_blank_or_lookalike_characters_are_refused() {
    let room = Room::default();
    let builder = Server::builder().strategy(StrategyName::Threading.build(None));
    let running = Running::start(
        vec![stream_service(builder, &loopback(), room, None).unwrap()],
        DEFAULT_DRAIN,
    )
    .unwrap();
    let addr = running.address(0).clone();
    within(DEADLINE, "chat nicknames", move || {
        let (mut ace, _) = Member::join(&addr, "ace", drive::STEP).unwrap();
        let (mut alice, _) = Member::join(&addr, "alice", drive::STEP).unwrap();
        ace.expect("alice joining", drive::STEP, |l| l == "* alice joined")
            .unwrap();
        let mut refusals = vec![
            ("\u{3164}".to_owned(), "only letters"),
            ("\u{2800}\u{2800}".to_owned(), "only letters"),
            ("...".to_owned(), "letter or a digit"),
            ("\u{430}lice".to_owned(), "mixes"), // Cyrillic а + Latin
            ("\u{430}\u{441}\u{435}".to_owned(), "taken"), // Cyrillic асе
            ("aIice".to_owned(), "taken"),       // a capital I
            ("ALICE".to_owned(), "taken"),       // case alone
            ("alIce".to_owned(), "taken"),       // a capital I for i
            ("a\u{2215}b".to_owned(), "only letters"),
        ];
        for c in HIDDEN.chars() {
            refusals.push((format!("alice{c}"), "invisible"));
            refusals.push((format!("{c}bob"), "invisible"));
        }
        // Five attempts per connection: a fresh one every five.
        let mut newcomer = None;
        for (i, (nick, why)) in refusals.iter().enumerate() {
            if i % 5 == 0 {
                newcomer = Some(Member::connect(&addr, drive::STEP).unwrap());
            }
            let newcomer = newcomer.as_mut().unwrap();
            newcomer.send(nick).unwrap();
            let line = newcomer.line().unwrap();
            assert!(
                line.starts_with("* ") && line.contains(why),
                "{nick:?}: {line}"
            );
        }
        // Nobody joined meanwhile; good names still work.
        let (_zoe, _) = Member::join(&addr, "émile", drive::STEP).unwrap();
        let joined = alice
            .expect("the next join", drive::STEP, |l| l.ends_with("joined"))
            .unwrap();
        assert_eq!(joined, "* émile joined");

        // Relayed text: hidden characters become U+FFFD, controls `?`.
        alice
            .send(&format!("invoice\u{202e}fdp.exe {HIDDEN} \x1b[2J"))
            .unwrap();
        let got = ace
            .expect("alice's line", drive::STEP, |l| l.starts_with("alice: "))
            .unwrap();
        assert_no_raw("relayed line", &got);
        assert!(got.starts_with("alice: invoice\u{fffd}fdp.exe "), "{got:?}");
        assert!(got.ends_with(" ?[2J"), "{got:?}");
        assert_eq!(got.matches('\u{fffd}').count(), 1 + HIDDEN.chars().count());
    });
    running.stop(DEADLINE).unwrap();
}

#[test]
fn udp_chat_refuses_hidden_nicknames_and_replaces_hidden_text() {
    let builder = Server::builder().strategy(StrategyName::Synchronous.build(None));
    let room = UdpRoom::new(UdpRoomConfig::default());
    let running = Running::start(
        vec![datagram_service(builder, &loopback(), room).unwrap()],
        DEFAULT_DRAIN,
    )
    .unwrap();
    let addr = running.address(0).clone();
    within(DEADLINE, "udp chat", move || {
        let (ann, _) = Peer::join(&addr, "ann", drive::STEP).unwrap();
        let other = Peer::anonymous(&addr, drive::STEP).unwrap();
        for nick in [
            "ann\u{200d}",
            "\u{202e}nna",
            "\u{3164}",
            "x\u{2028}y",
            "ANN",
        ] {
            other.send(&format!("/nick {nick}")).unwrap();
            let answer = other.recv().unwrap();
            assert!(answer.starts_with("* "), "{nick:?}: {answer}");
            assert!(!answer.starts_with("* welcome"), "{nick:?}: {answer}");
        }
        // A lookalike of ann mixing scripts is refused.
        other.send("/nick \u{430}nn").unwrap();
        assert!(other.recv().unwrap().contains("mixes"));
        other.send("/nick bo").unwrap();
        assert!(other.recv().unwrap().starts_with("* welcome bo"));
        assert_eq!(ann.recv().unwrap(), "* bo joined");
        other
            .send(&format!("see \u{202e}gpj.exe{HIDDEN}\x1b]0;x\x07"))
            .unwrap();
        let got = ann.recv().unwrap();
        assert_no_raw("relayed datagram", &got);
        assert!(got.starts_with("bo: see \u{fffd}gpj.exe"), "{got:?}");
    });
    running.stop(DEADLINE).unwrap();
}

#[test]
fn file_names_with_hidden_or_lookalike_characters_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let handler = FileServer::new(FilesConfig::new(&root)).unwrap();
    let builder =
        handler.configure(Server::builder().strategy(StrategyName::Threading.build(None)));
    let running = Running::start(
        vec![stream_service(builder, &loopback(), handler, None).unwrap()],
        DEFAULT_DRAIN,
    )
    .unwrap();
    let addr = running.address(0).clone();
    let mut c = Client::connect(&addr, None, DEADLINE).unwrap();
    let mut bad: Vec<String> = [
        "\u{2215}etc\u{2215}passwd",
        "\u{ff0e}\u{ff0e}",
        "\u{ff0e}\u{ff0e}\u{ff0f}x",
        "a\u{ff0f}b",
        "a\u{2044}b",
        "a\u{2024}txt",
        "a\u{3002}txt",
        "\u{3164}",
        "\u{301}x",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for h in HIDDEN.chars() {
        bad.push(format!("invoice{h}fdp.exe"));
    }
    for name in &bad {
        let e = c.put_bytes(name, b"must not land").unwrap_err().to_string();
        assert!(
            e.contains("refused") && e.contains("nothing was stored"),
            "{name:?}: {e}"
        );
        assert!(e.contains("U+"), "names the character: {e}");
        let e = c.get_bytes(name).unwrap_err().to_string();
        assert!(e.contains("refused"), "get {name:?}: {e}");
    }
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "nothing written"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing next to the root"
    );
    // Letters of any script, spaces and ASCII punctuation are fine.
    for good in [
        "café au lait.txt",
        "日本語.txt",
        "e\u{301}t\u{e9}.md",
        "a+b=c (1).txt",
    ] {
        c.put_bytes(good, good.as_bytes()).unwrap();
        assert_eq!(c.get_bytes(good).unwrap(), good.as_bytes());
    }
    // A file with a bad name put in the root by hand is neither listed nor
    // served.
    std::fs::write(root.join("x\u{202e}txt.exe"), b"hidden").unwrap();
    let listed: Vec<String> = c.list().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert!(c.get_bytes("x\u{202e}txt.exe").is_err());
    drop(c);
    running.stop(DEADLINE).unwrap();
}

/// A hostile server on loopback: accepts one connection (within
/// `DEADLINE`) and runs `serve` on it.
fn hostile_server(serve: impl FnOnce(TcpStream) + Send + 'static) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    let t = thread::spawn(move || {
        let end = Instant::now() + DEADLINE;
        let conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(_) if Instant::now() < end => thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("nobody connected: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(DEADLINE)).unwrap();
        conn.set_write_timeout(Some(DEADLINE)).unwrap();
        serve(conn);
    });
    (addr, t)
}

/// What a hostile server puts in every text it controls.
const EVIL: &str = "\x1b[2J\x1b]0;pwned\x07\u{9b}31m\u{202e}exe.txt\u{200b}\u{2028}* root:";

#[test]
fn the_files_client_escapes_names_and_errors_from_the_server() {
    let (addr, server) = hostile_server(|mut conn| {
        let _: Option<Request> = framing::read_json(&mut conn).unwrap();
        let reply = serde_json::json!({
            "ok": true,
            "files": [{"name": EVIL, "size": 1}, {"name": "plain.txt", "size": 2}],
        });
        framing::write_json(&mut conn, &reply).unwrap();
    });
    let out = run_demos(&["files", "list", "--connect", &addr], b"", DEADLINE);
    server.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_no_raw("files list", &out.stdout);
    assert!(
        out.stdout.contains("\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("\\u{202e}exe.txt"), "{}", out.stdout);
    assert!(out.stdout.contains("plain.txt"), "{}", out.stdout);

    // A refusal's reason, and a put's reply.
    let (addr, server) = hostile_server(|mut conn| {
        let _: Option<Request> = framing::read_json(&mut conn).unwrap();
        framing::write_json(&mut conn, &serde_json::json!({"ok": false, "error": EVIL})).unwrap();
    });
    let out = run_demos(
        &["files", "get", "--connect", &addr, "x.txt", "-o", "-"],
        b"",
        DEADLINE,
    );
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_no_raw("files get error", &out.stderr);
    assert!(out.stderr.contains("refused: \\u{1b}[2J"), "{}", out.stderr);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("up.txt");
    std::fs::write(&file, b"data").unwrap();
    let (addr, server) = hostile_server(|mut conn| {
        let req: Option<Request> = framing::read_json(&mut conn).unwrap();
        let Some(Request::Put { size, .. }) = req else {
            panic!("not a put: {req:?}")
        };
        framing::copy_exact(&mut conn, &mut std::io::sink(), size).unwrap();
        let reply = serde_json::json!({"ok": true, "name": "up.txt", "size": size, "sha256": EVIL});
        framing::write_json(&mut conn, &reply).unwrap();
    });
    let out = run_demos(
        &["files", "put", "--connect", &addr, file.to_str().unwrap()],
        b"",
        DEADLINE,
    );
    server.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_no_raw("files put", &out.stdout);
}

#[test]
fn the_shell_client_escapes_what_the_server_says_outside_command_output() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("k");
    std::fs::write(&key_file, "a key for the spoofing test, long enough\n").unwrap();
    let key = Key::from_file(&key_file).unwrap();
    let (addr, server) = hostile_server(move |mut conn| {
        Gatekeeper::new(key).server_handshake(&mut conn).unwrap();
        let _ = framing::read_frame(&mut conn).unwrap();
        // A header the client cannot parse, quoting the server's text.
        let header = serde_json::json!({"exit_code": EVIL, "stdout": 0, "stderr": 0,
            "truncated": false, "timed_out": false});
        framing::write_json(&mut conn, &header).unwrap();
        let _ = conn.flush();
    });
    let out = run_demos(
        &[
            "shell",
            "run",
            "--connect",
            &addr,
            "--key-file",
            key_file.to_str().unwrap(),
            "true",
        ],
        b"",
        DEADLINE,
    );
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_no_raw("shell run error", &out.stderr);
}

#[test]
fn the_chat_client_escapes_what_the_room_sends() {
    let (addr, server) = hostile_server(|mut conn| {
        let mut nick = [0u8; 4];
        std::io::Read::read_exact(&mut conn, &mut nick).unwrap();
        conn.write_all(format!("* welcome zed; online: {EVIL}\nmallory: {EVIL}\n").as_bytes())
            .unwrap();
        // Read up to the client's /quit, so that the close is a clean one
        // (no unread bytes, no reset).
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&conn), &mut line);
        assert_eq!(line, "/quit\n");
    });
    let out = run_demos(
        &["chat", "client", "--connect", &addr, "--nick", "zed"],
        b"",
        DEADLINE,
    );
    server.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_no_raw("chat client", &out.stdout);
    assert!(out.stdout.contains("mallory: \\u{1b}[2J"), "{}", out.stdout);
}
