//! What a client can cause is never logged as an error of the server: bad
//! frames are logged at warn with the peer, throttled to about one line a
//! second, and nothing at error level.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{within, DEADLINE};
use demos::files::{FileServer, FilesConfig};
use demos::service::{stream_service, Running, DEFAULT_DRAIN};
use demos::shell::{Shell, ShellConfig};
use demos::strategy::StrategyName;
use log::Level;
use socketserver::auth::{self, Key};
use socketserver::{Address, Server};
use socketserver_tests::LogCapture;

fn start(handler: impl socketserver::StreamHandler) -> Running {
    let builder = Server::builder().strategy(StrategyName::Threading.build(None));
    let loopback: Address = "127.0.0.1:0".parse().unwrap();
    let service = stream_service(builder, &loopback, handler, None).unwrap();
    Running::start(vec![service], DEFAULT_DRAIN).unwrap()
}

fn connect(addr: &Address) -> TcpStream {
    let c = TcpStream::connect(addr.as_inet().unwrap()).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c.set_write_timeout(Some(DEADLINE)).unwrap();
    c
}

/// Reads until the server closes the connection.
fn wait_closed(c: &mut TcpStream) {
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(c, &mut sink);
}

#[test]
fn bad_frames_and_bad_json_are_warnings_with_the_peer_throttled_never_errors() {
    let logs = LogCapture::install();
    let key = Key::new("log test key").unwrap();
    let mut config = ShellConfig::new(key.clone()).unwrap();
    config.start_dir = std::env::temp_dir();
    let shell = start(Shell::new(config));
    let root = tempfile::tempdir().unwrap();
    let files = start(FileServer::new(FilesConfig::new(root.path())).unwrap());
    let (shell_addr, files_addr) = (shell.address(0).clone(), files.address(0).clone());

    let t = Instant::now();
    let peers = within(DEADLINE, "bad clients", move || {
        let mut peers = Vec::new();
        // 20 shell clients announcing a 1 GiB command (over the 64 KiB cap).
        for _ in 0..20 {
            let mut c = connect(&shell_addr);
            auth::client_handshake(&mut c, &key).unwrap();
            c.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
            wait_closed(&mut c);
            peers.push(c.local_addr().unwrap().to_string());
        }
        // A files client with a header that is not JSON, one with a frame
        // over the 64 KiB header cap.
        for payload in [&b"{not json"[..], &[0xff; 3][..]] {
            let mut c = connect(&files_addr);
            socketserver::framing::write_frame(&mut c, payload).unwrap();
            wait_closed(&mut c);
        }
        let mut c = connect(&files_addr);
        c.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
        wait_closed(&mut c);
        peers
    });
    let took = t.elapsed();
    // The first bad frame is a warning naming its peer.
    let first = logs.wait_for(Level::Warn, &["shell", &peers[0], "bad input"]);
    println!("{first}");
    std::thread::sleep(Duration::from_millis(100));
    let warnings = logs.find(Level::Warn, &["bad input"]);
    let errors: Vec<String> = logs
        .find(Level::Error, &[])
        .into_iter()
        .filter(|m| !m.contains("deadline"))
        .collect();
    println!(
        "20 oversized shell frames in {took:?}: {} warning line(s), {} error line(s)",
        warnings.len(),
        errors.len()
    );
    assert!(errors.is_empty(), "{errors:?}");
    let limit = 2 + took.as_secs() as usize;
    assert!(warnings.len() <= limit, "not throttled: {warnings:?}");
    // Bad JSON is answered and logged at info by the files server.
    logs.wait_for(Level::Info, &["files", "bad request header"]);
    shell.stop(DEADLINE).unwrap();
    files.stop(DEADLINE).unwrap();
}
