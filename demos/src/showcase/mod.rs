//! `demos showcase`: every demo started on loopback port 0 in this process,
//! driven with real client sockets, checked, timed and reported.
//!
//! Forking is shown from a child process (`demos echo serve --strategy
//! forking`), because forking this multi-threaded process would be unsafe;
//! that check also shows the CLI contract: the `listening on` line and a
//! clean exit on SIGTERM. The clients that drive the servers are in
//! [`drive`], for the tests too.

pub mod drive;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use socketserver::{Address, Server};

use crate::chat::{Room, RoomConfig, UdpRoom, UdpRoomConfig};
use crate::echo::Echo;
use crate::service::{datagram_service, stream_service, Running, Service, DEFAULT_DRAIN};
use crate::strategy::StrategyName;
use drive::{ChatPlan, Member, ServerProcess};

/// What the showcase runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The `demos` binary, for the forking check (skipped if `None`).
    pub exe: Option<PathBuf>,
}

type Check = Box<dyn FnOnce() -> io::Result<String> + Send>;

/// Runs every check, printing one line per check to `out` as it finishes
/// and a summary; returns whether all passed.
pub fn run(options: &Options, out: &mut dyn Write) -> io::Result<bool> {
    let started = Instant::now();
    writeln!(
        out,
        "socketserver-rs showcase: each server on 127.0.0.1, port 0; every wait has a deadline\n"
    )?;
    let mut passed = 0;
    let mut failed = 0;
    for (section, checks) in sections(options) {
        writeln!(out, "{section}")?;
        out.flush()?;
        for (label, check) in checks {
            let t = Instant::now();
            let result = within(Duration::from_secs(20), check);
            let took = t.elapsed();
            match result {
                Ok(detail) => {
                    passed += 1;
                    writeln!(out, "  ok    {:>9}  {label:<22} {detail}", ms(took))?;
                }
                Err(e) => {
                    failed += 1;
                    writeln!(out, "  FAIL  {:>9}  {label:<22} {e}", ms(took))?;
                }
            }
            out.flush()?;
        }
    }
    let total = started.elapsed();
    if failed == 0 {
        writeln!(out, "\nall {passed} checks passed in {}", ms(total))?;
    } else {
        writeln!(
            out,
            "\n{failed} of {} checks FAILED ({})",
            passed + failed,
            ms(total)
        )?;
    }
    out.flush()?;
    Ok(failed == 0)
}

/// The longest a chat line may take to reach every reading member.
const LINE_LIMIT: Duration = Duration::from_secs(5);

fn sections(options: &Options) -> Vec<(&'static str, Vec<(String, Check)>)> {
    use StrategyName::{Green, Pool, Synchronous, Threading};
    let mut echo: Vec<(String, Check)> = Vec::new();
    for s in [Synchronous, Threading, Pool, Green] {
        echo.push((format!("tcp {s}"), Box::new(move || echo_tcp(s))));
    }
    match options.exe.clone() {
        Some(exe) => echo.push(("tcp forking".into(), Box::new(move || echo_forking(&exe)))),
        None => echo.push((
            "tcp forking".into(),
            Box::new(|| Ok("skipped (no demos binary given)".into())),
        )),
    }
    for s in [Synchronous, Threading, Pool, Green] {
        echo.push((format!("udp {s}"), Box::new(move || echo_udp(s))));
    }
    echo.push(("tcp+udp --upper".into(), Box::new(echo_upper)));

    let mut chat: Vec<(String, Check)> = Vec::new();
    for s in [Threading, Pool, Green] {
        chat.push((format!("tcp {s}"), Box::new(move || chat_tcp(s))));
    }
    chat.push(("tcp shutdown".into(), Box::new(chat_shutdown)));
    for s in [Synchronous, Threading] {
        chat.push((format!("udp {s}"), Box::new(move || chat_udp(s))));
    }
    let shell: Vec<(String, Check)> = vec![("tcp threading".into(), Box::new(shell_check))];
    let files: Vec<(String, Check)> = vec![("tcp threading".into(), Box::new(files_check))];
    vec![
        (
            "echo: TCP echoes bytes as they come, UDP each datagram",
            echo,
        ),
        ("chat: TCP room and UDP relay", chat),
        (
            "shell: HMAC auth, then commands in their own process group",
            shell,
        ),
        ("files: JSON header + raw bytes, sha256 both ways", files),
    ]
}

/// Runs `check` on its own thread; gives up on it after `limit`.
fn within(limit: Duration, check: Check) -> io::Result<String> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("showcase check".into())
        .spawn(move || {
            let _ = tx.send(check());
        })?;
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(io::Error::other(format!("no result within {limit:?}")))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(io::Error::other("the check panicked")),
    }
}

fn ms(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn loopback() -> Address {
    Address::Inet(([127, 0, 0, 1], 0).into())
}

fn start(service: io::Result<Box<dyn Service>>) -> io::Result<Running> {
    Running::start(vec![service?], DEFAULT_DRAIN)
}

fn stop(running: Running) -> io::Result<Duration> {
    running.stop(Duration::from_secs(5))
}

/// Where two byte strings first differ, for error messages.
fn compare(what: &str, sent: &[u8], back: &[u8]) -> io::Result<()> {
    if sent == back {
        return Ok(());
    }
    let at = sent.iter().zip(back).position(|(a, b)| a != b);
    Err(io::Error::other(match at {
        Some(i) => format!("{what}: echo differs at byte {i}"),
        None => format!("{what}: sent {} bytes, got {} back", sent.len(), back.len()),
    }))
}

const MIB: usize = 1 << 20;

/// Several clients at once (served in turn by `synchronous`), 1 MiB each.
fn echo_clients(addr: &Address, clients: usize) -> io::Result<()> {
    thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                s.spawn(move || {
                    let data = drive::pattern(MIB, i as u64 + 1);
                    let back = drive::stream_echo(addr, &data, Duration::from_secs(10))?;
                    compare(&format!("client {i}"), &data, &back)
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("panicked")))
        })
    })
}

fn echo_tcp(strategy: StrategyName) -> io::Result<String> {
    let builder = Server::builder().strategy(strategy.build(None));
    let running = start(stream_service(builder, &loopback(), Echo::default(), None))?;
    echo_clients(running.address(0), 4)?;
    stop(running)?;
    let how = if strategy == StrategyName::Synchronous {
        "one after another"
    } else {
        "at once"
    };
    Ok(format!(
        "4 clients {how}, 1 MiB of binary each, echoed intact"
    ))
}

fn echo_udp(strategy: StrategyName) -> io::Result<String> {
    let builder = Server::builder().strategy(strategy.build(None));
    let running = start(datagram_service(builder, &loopback(), Echo::default()))?;
    let addr = running.address(0).clone();
    let big = drive::pattern(60_000, 7);
    compare(
        "60,000-byte datagram",
        &big,
        &drive::datagram_echo(&addr, &big, drive::STEP)?,
    )?;
    for i in 0..100u32 {
        let msg = format!("datagram {i}");
        let back = drive::datagram_echo(&addr, msg.as_bytes(), drive::STEP)?;
        compare(&msg, msg.as_bytes(), &back)?;
    }
    stop(running)?;
    Ok("a 60,000-byte datagram and 100 small ones echoed whole".into())
}

fn echo_upper() -> io::Result<String> {
    let upper = Echo { upper: true };
    let tcp = Server::builder().strategy(StrategyName::Threading.build(None));
    let udp = Server::builder();
    let running = Running::start(
        vec![
            stream_service(tcp, &loopback(), upper, None)?,
            datagram_service(udp, &loopback(), upper)?,
        ],
        DEFAULT_DRAIN,
    )?;
    let msg = "hello, 世界 42\n";
    let want = "HELLO, 世界 42\n";
    let back = drive::stream_echo(running.address(0), msg.as_bytes(), drive::STEP)?;
    compare("tcp --upper", want.as_bytes(), &back)?;
    let back = drive::datagram_echo(running.address(1), msg.as_bytes(), drive::STEP)?;
    compare("udp --upper", want.as_bytes(), &back)?;
    stop(running)?;
    Ok(format!("{:?} -> {:?}", msg.trim_end(), want.trim_end()))
}

fn echo_forking(exe: &Path) -> io::Result<String> {
    let args = [
        "echo",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--strategy",
        "forking",
    ];
    let mut server = ServerProcess::start(exe, &args, 1)?;
    echo_clients(server.address(0), 4)?;
    let (took, status) = server.terminate(Duration::from_secs(1))?;
    if !status.success() {
        return Err(io::Error::other(format!("exit after SIGTERM: {status}")));
    }
    Ok(format!(
        "child process: 4 clients at once, 1 MiB each, intact; SIGTERM -> exit 0 in {}",
        ms(took)
    ))
}

fn chat_tcp(strategy: StrategyName) -> io::Result<String> {
    // A small outbox, so that the member that never reads is dropped soon
    // after the kernel's socket buffers (several MiB on loopback) are full.
    let room = Room::new(RoomConfig {
        outbox: 256,
        ..RoomConfig::default()
    });
    let builder = Server::builder().strategy(strategy.build(None));
    let closer = room.clone();
    let running = start(stream_service(
        builder,
        &loopback(),
        room.clone(),
        Some(Box::new(move || closer.close())),
    ))?;
    let plan = ChatPlan {
        messages: 600,
        interval: Duration::from_millis(1),
        line_len: 4000,
        silent_member: true,
        deadline: Duration::from_secs(10),
    };
    let outcome = drive::chat_scenario(running.address(0), &plan)?;
    stop(running)?;
    // A room held up by its silent member would hold every line until the
    // deadline (10 s); a busy machine alone delays some by a second or so
    // (1.07 s seen on 2 cores under a parallel test run).
    if outcome.max_latency > LINE_LIMIT {
        return Err(io::Error::other(format!(
            "a line took {} to arrive (limit {})",
            ms(outcome.max_latency),
            ms(LINE_LIMIT)
        )));
    }
    let dave = if outcome.silent_dropped {
        "dave (never reads) dropped"
    } else {
        "dave (never reads) still buffered"
    };
    Ok(format!(
        "3 talkers x {} lines of {} B, one per ms each: {} delivered in order, none echoed; \
         slowest {}; {dave}; joins, leaves, /who, duplicate nick ok",
        plan.messages,
        plan.line_len,
        outcome.delivered,
        ms(outcome.max_latency),
    ))
}

fn chat_shutdown() -> io::Result<String> {
    let room = Room::default();
    let closer = room.clone();
    let builder = Server::builder().strategy(StrategyName::Threading.build(None));
    let running = start(stream_service(
        builder,
        &loopback(),
        room,
        Some(Box::new(move || closer.close())),
    ))?;
    let addr = running.address(0).clone();
    let mut members = Vec::new();
    for nick in ["ann", "ben", "cat"] {
        members.push(Member::join(&addr, nick, drive::STEP)?.0);
    }
    // One more connection that never sends a nickname.
    let _lurker = Member::connect(&addr, drive::STEP)?;
    let took = stop(running)?;
    for m in &mut members {
        m.expect("the shutdown notice", drive::STEP, |l| {
            l == "* server is shutting down"
        })?;
        if !m.closed_within(drive::STEP) {
            return Err(io::Error::other(format!("{} still connected", m.nick)));
        }
    }
    Ok(format!(
        "3 members + 1 connection without a nickname: told, disconnected, server closed in {}",
        ms(took)
    ))
}

fn chat_udp(strategy: StrategyName) -> io::Result<String> {
    let room = UdpRoom::new(UdpRoomConfig::default());
    let builder = Server::builder().strategy(strategy.build(None));
    let running = start(datagram_service(builder, &loopback(), room))?;
    let ordered = strategy == StrategyName::Synchronous;
    let outcome = drive::udp_chat_scenario(running.address(0), 20, ordered)?;
    stop(running)?;
    Ok(format!(
        "3 peers x 20 messages: {} relayed{}, none echoed; /nick hint, /who, /quit ok",
        outcome.delivered,
        if ordered { " in order" } else { "" }
    ))
}

/// A fresh directory under the system's temp dir, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(what: &str) -> io::Result<ScratchDir> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
        let path = std::env::temp_dir().join(format!(
            "demos-showcase-{what}-{}-{}",
            std::process::id(),
            crate::files::hex(&random)
        ));
        std::fs::create_dir(&path)?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> io::Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what}: got {got:?}, expected {want:?}"
        )))
    }
}

fn shell_check() -> io::Result<String> {
    use crate::shell::{client::Session, Shell, ShellConfig};
    use socketserver::auth::Key;

    let dir = ScratchDir::new("shell")?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| io::Error::other(e.to_string()))?;
    let key_file = dir.0.join("shell.key");
    std::fs::write(&key_file, crate::files::hex(&secret))?;
    let key = Key::from_file(&key_file)?;
    let mut config = ShellConfig::new(key.clone())?;
    config.start_dir = dir.0.clone();
    config.timeout = Duration::from_secs(5);
    let shell = Shell::new(config);
    let builder = shell.configure(Server::builder().strategy(StrategyName::Threading.build(None)));
    let running = start(stream_service(builder, &loopback(), shell, None))?;
    let addr = running.address(0).clone();

    let mut session = Session::connect(&addr, &key, drive::STEP)?;
    let r = session.run("echo hi")?;
    expect(
        "echo hi",
        (r.stdout.as_slice(), r.header.exit_code),
        (&b"hi\n"[..], Some(0)),
    )?;
    let r = session.run("echo oops >&2; exit 3")?;
    expect("exit 3", r.header.exit_code, Some(3))?;
    expect(
        "stderr apart",
        (r.stdout.len(), r.stderr.as_slice()),
        (0, &b"oops\n"[..]),
    )?;
    let wrong = Key::new("not the key")?;
    match Session::connect(&addr, &wrong, drive::STEP) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
        Err(e) => return Err(io::Error::other(format!("wrong key: unexpected error {e}"))),
        Ok(_) => return Err(io::Error::other("a wrong key was accepted")),
    }
    drop(session);
    stop(running)?;
    Ok(
        "random key in a temp file: `echo hi` -> \"hi\", exit 0; `exit 3` -> 3, stderr \
        apart; a wrong key refused"
            .into(),
    )
}

fn files_check() -> io::Result<String> {
    use crate::files::{client::Client, FileServer, FilesConfig};

    let dir = ScratchDir::new("files")?;
    let root = dir.0.join("root");
    std::fs::create_dir(&root)?;
    let handler = FileServer::new(FilesConfig::new(&root))?;
    let builder =
        handler.configure(Server::builder().strategy(StrategyName::Threading.build(None)));
    let running = start(stream_service(builder, &loopback(), handler, None))?;
    let mut client = Client::connect(running.address(0), None, drive::STEP)?;

    let data = drive::pattern(MIB + 1, 11);
    let put = client.put_bytes("data.bin", &data)?;
    let listed = client.list()?;
    expect(
        "list",
        listed
            .iter()
            .map(|e| (e.name.as_str(), e.size))
            .collect::<Vec<_>>(),
        vec![("data.bin", data.len() as u64)],
    )?;
    let back = client.get_bytes("data.bin")?;
    compare("get data.bin", &data, &back)?;
    let refused = match client.put_bytes("../escape", b"x") {
        Err(e) if e.to_string().contains("is a path") => "refused",
        Err(e) => return Err(e),
        Ok(_) => return Err(io::Error::other("../escape was accepted")),
    };
    let outside = std::fs::read_dir(&dir.0)?.count();
    expect("entries next to the root", outside, 1)?;
    drop(client);
    stop(running)?;
    let sha = put.sha256.unwrap_or_default();
    Ok(format!(
        "put/list/get of {} bytes, sha256 {}... checked both ways; `../escape` {refused}, \
         nothing written",
        data.len(),
        &sha[..12.min(sha.len())]
    ))
}
