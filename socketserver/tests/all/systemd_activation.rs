//! The `echo_server` example behind the real `systemd-socket-activate`
//! (systemd's own tool for socket activation, the protocol of a `.socket`
//! unit): it binds, waits for the first connection, then execs the server
//! with the socket as fd 3 and `LISTEN_PID`/`LISTEN_FDS` set. A client that
//! connects before the server runs is served, and so is one that connects
//! while it starts. Skipped, with a message, where the tool is missing.

use crate::common;
use common::example;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TOOL: &str = "/usr/bin/systemd-socket-activate";
const DEADLINE: Duration = Duration::from_secs(10);

fn tool_available(test: &str) -> bool {
    if Path::new(TOOL).exists() {
        return true;
    }
    eprintln!("{test}: skipped: {TOOL} is not installed (Debian: apt-get install systemd)");
    false
}

/// `systemd-socket-activate -l 127.0.0.1:PORT echo_server systemd
/// STRATEGY`, listening (its `Listening on` line seen); killed on drop.
struct Activated {
    child: Child,
    port: u16,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Activated {
    /// Picks a free port (bind port 0, release it) and starts the tool on
    /// it, trying another port if it was taken meanwhile.
    fn start(strategy: &str) -> Activated {
        for _ in 0..5 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(TOOL)
                .arg("-l")
                .arg(format!("127.0.0.1:{port}"))
                .arg(example())
                .args(["systemd", strategy])
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start systemd-socket-activate");
            let stdout = lines(child.stdout.take().unwrap());
            let stderr = lines(child.stderr.take().unwrap());
            let mut said = String::new();
            let start = Instant::now();
            loop {
                match stderr.recv_timeout(Duration::from_millis(20)) {
                    Ok(line) if line.contains("Listening on") => {
                        return Activated {
                            child,
                            port,
                            stdout,
                            stderr,
                        };
                    }
                    Ok(line) => said.push_str(&line),
                    Err(_) => {}
                }
                if let Some(status) = child.try_wait().unwrap() {
                    eprintln!("port {port} failed ({status}: {said}); trying another");
                    break;
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "systemd-socket-activate did not listen: {said}"
                );
            }
        }
        panic!("systemd-socket-activate could not listen on 5 free ports");
    }

    /// SIGTERM, then the exit status within the deadline, and stderr.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill only reads its integer arguments; the child has not
        // been waited for, so its pid cannot have been reused.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < DEADLINE, "no exit within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut err = String::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            err.push_str(&line);
            err.push('\n');
        }
        (status, err)
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn client(port: u16) -> TcpStream {
    let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

fn echoed(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut reply = vec![0; msg.len()];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply, msg);
}

fn serves_clients_that_came_before_the_server(strategy: &str) {
    let act = Activated::start(strategy);
    // Before the server runs: this connection is what starts it.
    let mut early = client(act.port);
    early.write_all(b"early\n").unwrap();
    // While it starts.
    let mut starting = client(act.port);
    starting.write_all(b"starting\n").unwrap();
    let line = act
        .stdout
        .recv_timeout(DEADLINE)
        .expect("no `listening on` line");
    assert_eq!(
        line,
        format!("listening on tcp://127.0.0.1:{}", act.port),
        "serves the socket it was given"
    );
    let mut reply = [0; 6];
    early.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"early\n");
    let mut reply = [0; 9];
    starting.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"starting\n");
    // And once it runs.
    echoed(&mut client(act.port), b"later\n");
    drop((early, starting));
    let (status, err) = act.terminate();
    assert!(status.success(), "exit status {status}; stderr: {err}");
    assert!(err.contains("echo_server: served"), "{err}");
}

#[test]
fn threading_behind_systemd_socket_activate_serves_clients_that_came_before_it() {
    if tool_available("threading") {
        serves_clients_that_came_before_the_server("threading");
    }
}

#[test]
fn prefork_behind_systemd_socket_activate_serves_clients_that_came_before_it() {
    if tool_available("prefork") {
        serves_clients_that_came_before_the_server("prefork");
    }
}
