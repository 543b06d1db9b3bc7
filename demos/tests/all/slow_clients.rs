//! Slow clients: a client that dribbles a message (a chat line, a shell
//! command frame, a file request header) one byte at a time is cut at the
//! server's message deadline, however often it sends, while other clients
//! are served as usual. Every demo protocol read is a message read.

use crate::common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::DEADLINE;
use demos::files::{client::Client, FileServer, FilesConfig};
use demos::service::{stream_service, Running, DEFAULT_DRAIN};
use demos::shell::{client::Session, Shell, ShellConfig};
use demos::showcase::drive::{self, Member};
use demos::strategy::StrategyName;
use socketserver::auth::{self, Key};
use socketserver::{Address, Builder, Server, Strategy};
use socketserver_tests::PROMPT;

/// The message deadline of these servers (no minimum data rate).
const MESSAGE: Duration = Duration::from_millis(400);

/// Time between two bytes of a dribbling client.
const DRIBBLE: Duration = Duration::from_millis(50);

fn builder() -> Builder<Box<dyn Strategy>> {
    Server::builder()
        .strategy(StrategyName::Threading.build(None))
        .message_timeout(Some(MESSAGE))
        .min_data_rate(None)
}

fn loopback() -> Address {
    "127.0.0.1:0".parse().unwrap()
}

fn raw(addr: &Address) -> TcpStream {
    let c = TcpStream::connect_timeout(&addr.as_inet().unwrap(), DEADLINE).unwrap();
    c.set_write_timeout(Some(DEADLINE)).unwrap();
    c
}

/// Sends `bytes` one at a time, `DRIBBLE` apart, until the server closes
/// the connection; returns how long after the first byte that was. Panics
/// if all were sent and the connection is still open after `PROMPT`.
fn dribble_until_cut(conn: &mut TcpStream, bytes: &[u8]) -> Duration {
    conn.set_read_timeout(Some(DRIBBLE)).unwrap();
    let start = Instant::now();
    let mut sink = [0u8; 4096];
    for &b in bytes {
        if conn.write_all(&[b]).is_err() {
            return start.elapsed();
        }
        match conn.read(&mut sink) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return start.elapsed(),
        }
    }
    panic!(
        "{} bytes sent {DRIBBLE:?} apart and the connection is still open",
        bytes.len()
    );
}

/// Enough bytes to dribble for longer than `PROMPT` without completing a
/// message.
fn slow_bytes(first: &[u8]) -> Vec<u8> {
    let n = (PROMPT.as_millis() / DRIBBLE.as_millis()) as usize + 1;
    let mut v = first.to_vec();
    v.resize(first.len() + n, b'x');
    v
}

#[test]
fn a_chat_member_dribbling_a_line_is_cut_at_the_message_deadline() {
    let room = demos::chat::Room::default();
    let service = stream_service(builder(), &loopback(), room, None).unwrap();
    let running = Running::start(vec![service], DEFAULT_DRAIN).unwrap();
    let addr = running.address(0).clone();
    let (mut amy, _) = Member::join(&addr, "amy", drive::STEP).unwrap();

    // A nickname dribbled, then a line dribbled after joining.
    let mut nick = raw(&addr);
    let took = dribble_until_cut(&mut nick, &slow_bytes(b""));
    eprintln!("chat: a dribbled nickname cut after {took:?} (message deadline {MESSAGE:?})");
    let (slow, _) = Member::join(&addr, "slow", drive::STEP).unwrap();
    amy.expect("slow joining", drive::STEP, |l| l == "* slow joined")
        .unwrap();
    let mut conn = raw(&addr);
    conn.write_all(b"bea\n").unwrap();
    amy.expect("bea joining", drive::STEP, |l| l == "* bea joined")
        .unwrap();
    let took = dribble_until_cut(&mut conn, &slow_bytes(b""));
    eprintln!("chat: a dribbled line cut after {took:?}");
    amy.expect("bea leaving", drive::STEP, |l| l == "* bea left")
        .unwrap();
    // The others talk on.
    slow.send("still here").unwrap();
    amy.expect("slow's line", drive::STEP, |l| l == "slow: still here")
        .unwrap();
    running.stop(DEADLINE).unwrap();
}

#[test]
fn a_shell_session_dribbling_a_command_is_cut_at_the_message_deadline() {
    let key = Key::new("a test key, 32 bytes or more, ok").unwrap();
    let mut config = ShellConfig::new(key.clone()).unwrap();
    config.start_dir = std::env::temp_dir();
    let shell = Shell::new(config);
    let b = shell.configure(builder());
    let service = stream_service(b, &loopback(), shell, None).unwrap();
    let running = Running::start(vec![service], DEFAULT_DRAIN).unwrap();
    let addr = running.address(0).clone();

    let mut conn = raw(&addr);
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    auth::client_handshake(&mut conn, &key).unwrap();
    // A frame announcing 1000 bytes, dribbled.
    let took = dribble_until_cut(&mut conn, &slow_bytes(&1000u32.to_be_bytes()));
    eprintln!("shell: a dribbled command frame cut after {took:?}");
    let mut session = Session::connect(&addr, &key, drive::STEP).unwrap();
    assert_eq!(session.run("echo fine").unwrap().stdout, b"fine\n");
    drop(session);
    running.stop(DEADLINE).unwrap();
}

#[test]
fn a_files_client_dribbling_a_request_is_cut_at_the_message_deadline() {
    let root = tempfile::tempdir().unwrap();
    let handler = FileServer::new(FilesConfig::new(root.path())).unwrap();
    let b = handler.configure(builder());
    let service = stream_service(b, &loopback(), handler, None).unwrap();
    let running = Running::start(vec![service], DEFAULT_DRAIN).unwrap();
    let addr = running.address(0).clone();

    let mut conn = raw(&addr);
    let took = dribble_until_cut(&mut conn, &slow_bytes(&1000u32.to_be_bytes()));
    eprintln!("files: a dribbled request header cut after {took:?}");
    // A put whose bytes are dribbled: the request is one message.
    let mut conn = raw(&addr);
    let header = br#"{"op":"put","name":"slow.bin","size":1000,"sha256":"00"}"#;
    let mut frame = (header.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(header);
    conn.write_all(&frame).unwrap();
    let took = dribble_until_cut(&mut conn, &slow_bytes(b""));
    eprintln!("files: a dribbled upload cut after {took:?}");
    let mut client = Client::connect(&addr, None, drive::STEP).unwrap();
    client.put_bytes("fine.txt", b"fine").unwrap();
    assert_eq!(client.get_bytes("fine.txt").unwrap(), b"fine");
    drop(client);
    running.stop(DEADLINE).unwrap();
}
