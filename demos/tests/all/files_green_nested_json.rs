//! `demos files serve --strategy green` reads a JSON frame from any client
//! before it is authenticated: a frame of objects nested 127 deep (763
//! bytes here) must not end the server process, whose coroutines get the stack
//! a thread gets (and an overflow would cost that connection only).

use crate::common;

use std::net::TcpStream;
use std::time::Duration;

use common::{exe, DEADLINE};
use demos::files::client::Client;
use demos::showcase::drive::ServerProcess;
use socketserver::auth::Key;
use socketserver::framing;

/// `{"a":{"a":...1...}}`, `depth` objects deep.
fn nested(depth: usize) -> Vec<u8> {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes()
}

fn raw(addr: &socketserver::Address) -> TcpStream {
    let c = TcpStream::connect(addr.to_string()).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c
}

/// Sends the nested frame where the server reads a frame first (with a
/// key, the answer to its challenge), then reads until the server closes.
fn send_nested(addr: &socketserver::Address, keyed: bool) {
    let mut c = raw(addr);
    if keyed {
        framing::read_frame(&mut c).unwrap().expect("the challenge");
    }
    framing::write_frame(&mut c, &nested(127)).unwrap();
    // An error answer or none; then the server closes the connection.
    while let Ok(Some(_)) = framing::read_frame(&mut c) {}
}

#[test]
fn a_127_deep_json_header_from_an_unauthenticated_client_does_not_end_a_green_server() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let key_path = dir.path().join("files.key");
    std::fs::write(&key_path, "nested key\n").unwrap();
    for keyed in [false, true] {
        let mut args = vec![
            "files",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--root",
            root.to_str().unwrap(),
            "--strategy",
            "green",
        ];
        if keyed {
            args.extend(["--key-file", key_path.to_str().unwrap()]);
        }
        let mut server = ServerProcess::start(exe(), &args, 1).unwrap();
        let addr = server.address(0).clone();
        for _ in 0..3 {
            send_nested(&addr, keyed);
        }
        // Still serving.
        let key = keyed.then(|| Key::new("nested key").unwrap());
        let mut client = Client::connect(&addr, key.as_ref(), DEADLINE).unwrap();
        assert!(client.list().unwrap().is_empty(), "keyed {keyed}");
        let (_, status) = server.terminate(Duration::from_secs(10)).unwrap();
        assert!(status.success(), "keyed {keyed}: {status:?}");
    }
}
