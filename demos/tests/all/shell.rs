//! The remote shell: servers started in this process through the
//! library API, driven by `demos::shell::client::Session` and raw sockets;
//! the CLI contract through the `demos` binary.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::{exe, within, DEADLINE};
use demos::service::{stream_service, Running, DEFAULT_DRAIN};
use demos::shell::client::Session;
use demos::shell::{Reply, Shell, ShellConfig};
use demos::showcase::drive::ServerProcess;
use demos::strategy::StrategyName;
use socketserver::auth::{self, Key};
use socketserver::{framing, Address, Server};
use tempfile::TempDir;

const MIB: usize = 1 << 20;

/// A shell server running in this process, with its key file and a
/// directory of its own (where sessions start).
struct ShellServer {
    running: Option<Running>,
    addr: Address,
    key: Key,
    key_file: PathBuf,
    dir: TempDir,
}

impl ShellServer {
    fn start(tune: impl FnOnce(&mut ShellConfig)) -> ShellServer {
        Self::start_with(StrategyName::Threading, tune)
    }

    fn start_with(strategy: StrategyName, tune: impl FnOnce(&mut ShellConfig)) -> ShellServer {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("shell.key");
        std::fs::write(&key_file, "a test key, 32 bytes or more, ok\n").unwrap();
        let key = Key::from_file(&key_file).unwrap();
        let mut config = ShellConfig::new(key.clone()).unwrap();
        config.start_dir = dir.path().canonicalize().unwrap();
        config.timeout = Duration::from_secs(10);
        tune(&mut config);
        let shell = Shell::new(config);
        let builder = shell.configure(Server::builder().strategy(strategy.build(Some(4))));
        let loopback: Address = "127.0.0.1:0".parse().unwrap();
        let service = stream_service(builder, &loopback, shell, None).unwrap();
        let running = Running::start(vec![service], DEFAULT_DRAIN).unwrap();
        let addr = running.address(0).clone();
        ShellServer {
            running: Some(running),
            addr,
            key,
            key_file,
            dir,
        }
    }

    fn session(&self) -> Session {
        Session::connect(&self.addr, &self.key, DEADLINE).expect("connect and authenticate")
    }

    fn start_dir(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    fn stop(&mut self, limit: Duration) -> Duration {
        self.running.take().unwrap().stop(limit).unwrap()
    }
}

/// Runs `command` in a fresh session, with the test's deadline.
fn run(server: &ShellServer, command: &str) -> Reply {
    let addr = server.addr.clone();
    let key = server.key.clone();
    let command = command.to_owned();
    within(DEADLINE, &format!("run {command:?}"), move || {
        let mut s = Session::connect(&addr, &key, DEADLINE).unwrap();
        s.run(&command).unwrap()
    })
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

/// Processes of process group `pgid` that are still alive (not zombies),
/// from /proc.
fn live_members(pgid: i32) -> Vec<i32> {
    let mut live = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // gone meanwhile
        };
        // pid (comm) state ppid pgrp ...; comm may hold spaces and ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (state, pgrp) = (fields[0], fields[2].parse::<i32>().unwrap_or(0));
        if pgrp == pgid && state != "Z" && state != "X" {
            live.push(pid);
        }
    }
    live
}

/// Waits (at most `limit`) until no process of group `pgid` is alive.
fn assert_group_gone(pgid: i32, limit: Duration) {
    assert!(pgid > 1, "bad process group id {pgid}");
    let end = Instant::now() + limit;
    loop {
        let live = live_members(pgid);
        if live.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "process group {pgid} still has live members {live:?} after {limit:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for a file to appear and returns its trimmed contents.
fn wait_for_file(path: &Path, limit: Duration) -> String {
    let end = Instant::now() + limit;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s.trim().to_owned();
            }
        }
        assert!(Instant::now() < end, "{} never appeared", path.display());
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn echo_exit_codes_and_separate_streams() {
    let server = ShellServer::start(|_| {});
    let mut s = server.session();
    let r = s.run("echo hi").unwrap();
    assert_eq!(r.stdout, b"hi\n");
    assert_eq!(r.stderr, b"");
    assert_eq!(r.header.exit_code, Some(0));
    assert!(!r.header.truncated && !r.header.timed_out);

    // The same connection serves further commands.
    let r = s.run("exit 3").unwrap();
    assert_eq!(r.header.exit_code, Some(3));
    assert_eq!((r.stdout.len(), r.stderr.len()), (0, 0));

    let r = s.run("echo out; echo err >&2; echo out2; exit 1").unwrap();
    assert_eq!(text(&r.stdout), "out\nout2\n");
    assert_eq!(text(&r.stderr), "err\n");
    assert_eq!(r.header.exit_code, Some(1));
    assert_eq!((r.header.stdout, r.header.stderr), (9, 4));

    // Killed by a signal: no exit code, and stderr says which.
    let r = s.run("echo before; kill -KILL $$").unwrap();
    assert_eq!(r.header.exit_code, None);
    assert!(!r.header.timed_out);
    assert_eq!(text(&r.stdout), "before\n");
    assert_eq!(
        text(&r.stderr),
        "demos shell: killed by signal 9 (SIGKILL)\n"
    );

    // stdin is /dev/null: a command that reads it does not hang.
    let r = s.run("cat; echo done").unwrap();
    assert_eq!(text(&r.stdout), "done\n");
}

#[test]
fn non_utf8_output_passes_through_as_bytes() {
    let server = ShellServer::start(|_| {});
    // "你好" in GBK (what a Chinese Windows console writes), then bytes valid in no
    // encoding, on both streams.
    let r = run(
        &server,
        r"printf '\304\343\272\303\n\377\376\000\001'; printf '\377err' >&2",
    );
    assert_eq!(r.stdout, b"\xc4\xe3\xba\xc3\n\xff\xfe\x00\x01");
    assert_eq!(r.stderr, b"\xfferr");
    assert_eq!(r.header.exit_code, Some(0));

    // A command line that is not UTF-8 is refused, not run.
    let mut conn = raw_authenticated(&server);
    framing::write_frame(&mut conn, b"touch \xff\xfe").unwrap();
    let header: demos::shell::ReplyHeader = framing::read_json(&mut conn).unwrap().unwrap();
    let _stdout = framing::read_frame(&mut conn).unwrap().unwrap();
    let stderr = framing::read_frame(&mut conn).unwrap().unwrap();
    assert_eq!(header.exit_code, Some(2));
    assert!(
        text(&stderr).contains("not valid UTF-8"),
        "{}",
        text(&stderr)
    );
    let names: Vec<_> = std::fs::read_dir(server.dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "only the key file: {names:?}");
}

#[test]
fn ten_megabytes_of_output_are_capped_and_the_server_stays_responsive() {
    let server = ShellServer::start(|c| c.max_output = MIB);
    let mut s = server.session();
    let t = Instant::now();
    let r = s
        .run("head -c 10000000 /dev/zero; head -c 10000000 /dev/zero >&2; echo tail")
        .unwrap();
    assert_eq!(r.stdout.len(), MIB);
    assert_eq!(r.stderr.len(), MIB);
    assert!(r.stdout.iter().all(|&b| b == 0));
    assert!(r.header.truncated);
    assert_eq!(r.header.exit_code, Some(0), "the command ran to its end");
    assert!(!r.header.timed_out);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // Meanwhile another session is served at once, and this one goes on:
    // the second session's answer comes while the busy one still runs.
    let addr = server.addr.clone();
    let key = server.key.clone();
    let busy = thread::spawn(move || {
        let mut s = Session::connect(&addr, &key, DEADLINE).unwrap();
        s.run("head -c 50000000 /dev/zero; sleep 3").unwrap()
    });
    thread::sleep(Duration::from_millis(100));
    let r = run(&server, "echo still here");
    assert_eq!(r.stdout, b"still here\n");
    assert!(
        !busy.is_finished(),
        "the second session waited for the busy one"
    );
    let r = s.run("echo next").unwrap();
    assert_eq!(r.stdout, b"next\n");
    assert!(!r.header.truncated);
    let big = busy.join().unwrap();
    assert!(big.header.truncated && big.stdout.len() == MIB);
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let server = ShellServer::start(|c| c.timeout = Duration::from_secs(1));
    let mut s = server.session();
    let t = Instant::now();
    // The shell, a background subshell and its sleep, and a foreground
    // sleep: all in the command's process group.
    let r = s.run("echo $$; (sleep 30; echo never) & sleep 30").unwrap();
    let took = t.elapsed();
    assert!(r.header.timed_out);
    assert_eq!(r.header.exit_code, None);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(
        text(&r.stderr).contains("timed out after 1 s"),
        "{}",
        text(&r.stderr)
    );
    let pgid: i32 = text(&r.stdout).trim().parse().unwrap();
    assert_group_gone(pgid, Duration::from_secs(5));
    // The session goes on.
    assert_eq!(s.run("echo ok").unwrap().stdout, b"ok\n");
}

#[test]
fn cd_is_a_session_builtin() {
    let server = ShellServer::start(|_| {});
    std::fs::create_dir(server.dir.path().join("sub")).unwrap();
    let mut s = server.session();
    let r = s.run("pwd").unwrap();
    assert_eq!(
        text(&r.stdout).trim_end(),
        server.start_dir().to_str().unwrap()
    );

    let r = s.run("cd /tmp").unwrap();
    assert_eq!((r.header.exit_code, r.stdout.len()), (Some(0), 0));
    let tmp = Path::new("/tmp").canonicalize().unwrap();
    let r = s.run("pwd").unwrap();
    assert_eq!(text(&r.stdout), format!("{}\n", tmp.display()));

    // A failed cd says why with exit code 1 and changes nothing.
    let r = s.run("cd /no/such/dir").unwrap();
    assert_eq!(r.header.exit_code, Some(1));
    assert_eq!(
        text(&r.stderr),
        "cd: /no/such/dir: No such file or directory\n"
    );
    assert_eq!(
        s.run("pwd").unwrap().stdout,
        format!("{}\n", tmp.display()).as_bytes()
    );

    // Relative to the session's directory; `cd -` goes back and prints it.
    let start = server.start_dir();
    s.run(&format!("cd '{}'", start.display())).unwrap();
    assert_eq!(s.run("cd sub").unwrap().header.exit_code, Some(0));
    assert_eq!(
        text(&s.run("pwd").unwrap().stdout),
        format!("{}\n", start.join("sub").display())
    );
    let r = s.run("cd -").unwrap();
    assert_eq!(text(&r.stdout), format!("{}\n", start.display()));
    // Commands run there: a relative path works.
    assert_eq!(s.run("ls").unwrap().stdout, b"shell.key\nsub\n");

    // Inside a compound command, cd is the shell's and lasts one command.
    let r = s.run("cd /tmp && pwd").unwrap();
    assert_eq!(text(&r.stdout), format!("{}\n", tmp.display()));
    assert_eq!(
        text(&s.run("pwd").unwrap().stdout),
        format!("{}\n", start.display())
    );
}

#[test]
fn two_sessions_at_once_do_not_share_a_directory() {
    let server = ShellServer::start(|_| {});
    let start = server.start_dir();
    std::fs::create_dir(start.join("a")).unwrap();
    let mut a = server.session();
    let mut b = server.session();
    assert_eq!(a.run("cd a").unwrap().header.exit_code, Some(0));
    assert_eq!(b.run("cd /").unwrap().header.exit_code, Some(0));
    assert_eq!(
        text(&a.run("pwd").unwrap().stdout),
        format!("{}\n", start.join("a").display())
    );
    assert_eq!(b.run("pwd").unwrap().stdout, b"/\n");
    // A new session starts where every session starts.
    let mut c = server.session();
    assert_eq!(
        text(&c.run("pwd").unwrap().stdout),
        format!("{}\n", start.display())
    );
}

/// A TCP connection that passed the handshake, for raw frames.
fn raw_authenticated(server: &ShellServer) -> TcpStream {
    let mut conn = raw(server);
    auth::client_handshake(&mut conn, &server.key).unwrap();
    conn
}

fn raw(server: &ShellServer) -> TcpStream {
    let conn = TcpStream::connect(server.addr.as_inet().unwrap()).unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    conn.set_write_timeout(Some(DEADLINE)).unwrap();
    conn
}

/// Reads until the server closes the connection (at most the read
/// timeout); returns what came.
fn read_to_close(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match conn.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("waiting for the server to close: {e}"),
    }
    got
}

#[test]
fn a_wrong_key_runs_nothing() {
    let server = ShellServer::start(|_| {});
    let marker = server.dir.path().join("marker");
    let touch = format!("touch '{}'", marker.display());

    // The client with the wrong key is refused.
    let wrong = Key::new("not the key").unwrap();
    let e = Session::connect(&server.addr, &wrong, DEADLINE).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("authentication refused"), "{e}");

    // Answering the challenge wrongly, then sending a command anyway.
    let mut conn = raw(&server);
    let challenge = framing::read_frame(&mut conn).unwrap().unwrap();
    assert_eq!(challenge.len(), 32);
    framing::write_frame(&mut conn, &[0u8; 32]).unwrap();
    let _ = framing::write_frame(&mut conn, touch.as_bytes());
    assert_eq!(read_to_close(&mut conn), b"", "no OK, no reply");

    // Skipping the handshake: the command is taken for the answer.
    let mut conn = raw(&server);
    framing::read_frame(&mut conn).unwrap().unwrap();
    framing::write_frame(&mut conn, touch.as_bytes()).unwrap();
    assert_eq!(read_to_close(&mut conn), b"");

    // A hand-made answer with the wrong key, then the command.
    let mut conn = raw(&server);
    let _ = auth::client_handshake(&mut conn, &wrong);
    let _ = framing::write_frame(&mut conn, touch.as_bytes());
    assert_eq!(read_to_close(&mut conn), b"");

    assert!(!marker.exists(), "a command ran without the key");
    // The control: with the key, the same command does run.
    assert_eq!(run(&server, &touch).header.exit_code, Some(0));
    assert!(marker.exists());
}

#[test]
fn a_client_that_resets_kills_its_running_command() {
    let server = ShellServer::start(|c| c.timeout = Duration::from_secs(60));
    let pidfile = server.dir.path().join("pid");
    let mut conn = raw_authenticated(&server);
    let command = format!("echo $$ > '{}'; sleep 30", pidfile.display());
    framing::write_frame(&mut conn, command.as_bytes()).unwrap();
    let pgid: i32 = wait_for_file(&pidfile, DEADLINE).parse().unwrap();
    assert!(!live_members(pgid).is_empty());
    // What a ^C'd `demos shell run` does: its socket resets (SO_LINGER 0).
    socket2::SockRef::from(&conn)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(conn);
    // Long before the command's 30 s sleep or its 60 s timeout.
    assert_group_gone(pgid, Duration::from_secs(5));
}

#[test]
fn shutdown_kills_running_commands_after_the_drain() {
    let mut server = ShellServer::start(|c| c.timeout = Duration::from_secs(60));
    let pidfile = server.dir.path().join("pid");
    let mut conn = raw_authenticated(&server);
    let command = format!("echo $$ > '{}'; sleep 30", pidfile.display());
    framing::write_frame(&mut conn, command.as_bytes()).unwrap();
    let pgid: i32 = wait_for_file(&pidfile, DEADLINE).parse().unwrap();
    // Stops accepting, waits DEFAULT_DRAIN (1 s), cuts the connection:
    // the cut kills the command.
    let took = server.stop(Duration::from_secs(5));
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert_group_gone(pgid, Duration::from_secs(5));
    let _ = conn.write_all(b"x");
}

#[test]
fn every_strategy_in_process_serves_sessions() {
    for s in [StrategyName::Synchronous, StrategyName::Pool] {
        let server = ShellServer::start_with(s, |_| {});
        let r = run(&server, "echo $0 && exit 5");
        assert_eq!(
            (text(&r.stdout), r.header.exit_code),
            ("/bin/sh\n", Some(5)),
            "{s}"
        );
    }
}

// --- Through the binary --------------------------------------------------

/// `demos args...` with stdin, bytes out; at most DEADLINE.
fn demos_bytes(args: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let (status, out, err) = common::run_demos_bytes(args, stdin, DEADLINE);
    (status.code().unwrap_or(-1), out, err)
}

#[test]
fn the_client_exits_with_the_remote_status_and_passes_bytes_through() {
    let server = ShellServer::start(|c| c.timeout = Duration::from_secs(1));
    let addr = server.addr.to_string();
    let key = server.key_file.to_str().unwrap();
    let base = ["shell", "run", "--connect", &addr, "--key-file", key];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }

    let (code, out, err) = demos_bytes(
        &with(&base, &["echo", "hi;", "echo", "oops", ">&2;", "exit", "3"]),
        b"",
    );
    assert_eq!(
        (code, out.as_slice(), err.as_str()),
        (3, &b"hi\n"[..], "oops\n")
    );
    let (code, out, _) = demos_bytes(&with(&base, &[r"printf '\304\343\377'"]), b"");
    assert_eq!((code, out.as_slice()), (0, &b"\xc4\xe3\xff"[..]));
    // Options after the command belong to the command.
    let (code, out, _) = demos_bytes(&with(&base, &["echo", "-n", "--timeout", "x"]), b"");
    assert_eq!((code, out.as_slice()), (0, &b"--timeout x"[..]));

    // No exit code: status 1 and a message.
    let (code, _, err) = demos_bytes(&with(&base, &["sleep", "10"]), b"");
    assert_eq!(code, 1);
    assert!(err.contains("timed out"), "{err}");

    // Without COMMAND: each line of stdin; the last status counts.
    let (code, out, _) = demos_bytes(&with(&base, &[]), b"cd /\npwd\n\necho two\nexit 4\n");
    assert_eq!((code, out.as_slice()), (4, &b"/\ntwo\n"[..]));
    let (code, out, _) = demos_bytes(&with(&base, &[]), b"echo one\nexit\necho never\n");
    assert_eq!((code, out.as_slice()), (0, &b"one\n"[..]));

    // A wrong key: status 1, one line.
    let bad = server.dir.path().join("bad.key");
    std::fs::write(&bad, "wrong").unwrap();
    let (code, out, err) = demos_bytes(
        &[
            "shell",
            "run",
            "--connect",
            &addr,
            "--key-file",
            bad.to_str().unwrap(),
            "true",
        ],
        b"",
    );
    assert_eq!((code, out.len()), (1, 0));
    assert!(
        err.starts_with("demos: ") && err.contains("authentication refused"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // A missing key file: status 2.
    let (code, _, err) = demos_bytes(
        &[
            "shell",
            "run",
            "--connect",
            &addr,
            "--key-file",
            "/no/such/key",
            "true",
        ],
        b"",
    );
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_non_loopback_address_is_refused_without_allow_remote() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, "key").unwrap();
    let key = key.to_str().unwrap();
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let (code, out, err) = demos_bytes(
            &[
                "shell",
                "serve",
                "--allow-root",
                "--listen",
                addr,
                "--key-file",
                key,
            ],
            b"",
        );
        assert_eq!(code, 2, "{addr}: {err}");
        assert!(out.is_empty(), "{addr}: nothing may be listening");
        assert!(err.contains("--allow-remote"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // A bad --max-output is refused too, before binding.
    let (code, _, err) = demos_bytes(
        &[
            "shell",
            "serve",
            "--allow-root",
            "--key-file",
            key,
            "--max-output",
            "1G",
        ],
        b"",
    );
    assert_eq!(code, 2, "{err}");
}

#[test]
fn the_binary_serves_with_threading_forking_and_green() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, "the key\n").unwrap();
    let key = key.to_str().unwrap();
    for strategy in ["threading", "forking", "green"] {
        let mut server = ServerProcess::start(
            exe(),
            &[
                "shell",
                "serve",
                "--allow-root",
                "--listen",
                "127.0.0.1:0",
                "--key-file",
                key,
                "--strategy",
                strategy,
                "--timeout",
                "1",
            ],
            1,
        )
        .unwrap();
        let (scheme, addr) = server.listening(0);
        assert_eq!(scheme, "tcp");
        let addr = addr.clone();
        let k = Key::from_file(key).unwrap();
        within(DEADLINE, strategy, move || {
            // Two sessions at once, each with its own directory.
            let mut a = Session::connect(&addr, &k, DEADLINE).unwrap();
            let mut b = Session::connect(&addr, &k, DEADLINE).unwrap();
            a.run("cd /").unwrap();
            assert_eq!(a.run("pwd").unwrap().stdout, b"/\n");
            assert_ne!(b.run("pwd").unwrap().stdout, b"/\n");
            let r = b.run("echo $$; sleep 5").unwrap();
            assert!(r.header.timed_out);
            let pgid: i32 = text(&r.stdout).trim().parse().unwrap();
            assert_group_gone(pgid, Duration::from_secs(2));
        });
        let (_, status) = server.terminate(Duration::from_secs(3)).unwrap();
        assert!(status.success(), "{strategy}: {status}");
    }
}

#[test]
fn help_has_examples() {
    for args in [
        vec!["shell", "--help"],
        vec!["shell", "serve", "--help"],
        vec!["shell", "run", "--help"],
    ] {
        let out = common::run_demos(&args, b"", DEADLINE);
        assert!(out.status.success(), "{args:?}");
        assert!(out.stdout.contains("EXAMPLE"), "{args:?}: no examples");
    }
}

#[test]
fn sigterm_to_the_server_kills_running_commands_under_threading_and_forking() {
    for strategy in ["threading", "forking"] {
        sigterm_kills_the_running_command(strategy, &[], "sleep 30");
    }
}

/// Under Synchronous the command runs in the loop's own thread: the stop
/// still obeys `--drain-secs` (the request is cut at the deadline, which
/// kills the command's group), instead of waiting for the command.
#[test]
fn sigterm_to_a_synchronous_server_kills_the_running_command_at_the_drain_deadline() {
    sigterm_kills_the_running_command("synchronous", &["--drain-secs", "1"], "sleep 50");
}

/// Starts `demos shell serve --strategy STRATEGY EXTRA`, runs `command` in a
/// session, sends SIGTERM: the server exits 0 within 4 s, the command's
/// process group is gone, and the client is told.
fn sigterm_kills_the_running_command(strategy: &str, extra: &[&str], command: &str) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("k");
    std::fs::write(&key_file, "the key").unwrap();
    let key = Key::from_file(&key_file).unwrap();
    let mut args = vec![
        "shell",
        "serve",
        "--allow-root",
        "--key-file",
        key_file.to_str().unwrap(),
        "--strategy",
        strategy,
        "--timeout",
        "60",
    ];
    args.extend_from_slice(extra);
    let mut server = ServerProcess::start(exe(), &args, 1).unwrap();
    let pidfile = dir.path().join(format!("pid-{strategy}"));
    let script = format!("echo $$ > '{}'; {command}", pidfile.display());
    let (addr, k) = (server.address(0).clone(), key.clone());
    let client = thread::spawn(move || {
        let mut s = Session::connect(&addr, &k, DEADLINE).unwrap();
        s.run(&script)
    });
    let pgid: i32 = wait_for_file(&pidfile, DEADLINE).parse().unwrap();
    assert!(!live_members(pgid).is_empty());
    let (took, status) = server.terminate(Duration::from_secs(8)).unwrap();
    assert!(status.success(), "{strategy}: {status}");
    assert!(took < Duration::from_secs(4), "{strategy}: {took:?}");
    eprintln!("{strategy} {extra:?}: SIGTERM with `{command}` running -> exit in {took:?}");
    assert_group_gone(pgid, Duration::from_secs(5));
    // The client is told: a reply with no exit code, or a closed
    // connection.
    match client.join().unwrap() {
        Ok(reply) => assert_eq!(reply.header.exit_code, None, "{strategy}"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ),
            "{strategy}: {e}"
        ),
    }
}

/// Starts `echo $$ > pidfile; sleep 30` on a raw authenticated connection
/// and returns the connection and the command's process group.
fn start_sleeper(server: &ShellServer, name: &str) -> (TcpStream, i32) {
    let pidfile = server.dir.path().join(name);
    let mut conn = raw_authenticated(server);
    let command = format!("echo $$ > '{}'; sleep 30", pidfile.display());
    framing::write_frame(&mut conn, command.as_bytes()).unwrap();
    let pgid: i32 = wait_for_file(&pidfile, DEADLINE).parse().unwrap();
    assert!(!live_members(pgid).is_empty());
    (conn, pgid)
}

#[test]
fn a_client_that_closes_normally_kills_its_running_command() {
    let server = ShellServer::start(|c| c.timeout = Duration::from_secs(60));
    let (conn, pgid) = start_sleeper(&server, "pid");
    let t = Instant::now();
    drop(conn); // FIN, not a reset
    assert_group_gone(pgid, Duration::from_secs(5));
    println!("command killed {:?} after the client's FIN", t.elapsed());
}

#[test]
fn a_client_that_half_closes_kills_its_running_command_and_is_closed() {
    let server = ShellServer::start(|c| c.timeout = Duration::from_secs(60));
    let (mut conn, pgid) = start_sleeper(&server, "pid");
    let t = Instant::now();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    assert_group_gone(pgid, Duration::from_secs(5));
    println!(
        "command killed {:?} after the client's half-close",
        t.elapsed()
    );
    assert_eq!(read_to_close(&mut conn), b"", "no reply, a close");
}

#[test]
fn when_the_client_binary_gives_up_waiting_the_command_is_killed() {
    let server = ShellServer::start(|c| c.timeout = Duration::from_secs(60));
    let pidfile = server.dir.path().join("pid");
    let addr = server.addr.to_string();
    let command = format!("echo $$ > '{}'; sleep 30", pidfile.display());
    let t = Instant::now();
    let (code, _, err) = demos_bytes(
        &[
            "shell",
            "run",
            "--connect",
            &addr,
            "--key-file",
            server.key_file.to_str().unwrap(),
            "--timeout",
            "1",
            &command,
        ],
        b"",
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no reply in time"), "{err}");
    let pgid: i32 = wait_for_file(&pidfile, DEADLINE).parse().unwrap();
    assert_group_gone(pgid, Duration::from_secs(5));
    println!(
        "client gave up and the command was gone {:?} after the start",
        t.elapsed()
    );
}

#[test]
fn a_full_16_mib_stderr_with_a_note_still_reaches_the_client() {
    let server = ShellServer::start(|c| {
        c.max_output = 16 * MIB;
        c.timeout = Duration::from_secs(3);
    });
    let addr = server.addr.clone();
    let key = server.key.clone();
    let r = within(Duration::from_secs(30), "16 MiB reply", move || {
        let mut s = Session::connect(&addr, &key, DEADLINE).unwrap();
        s.run("head -c 17000000 /dev/zero >&2; sleep 30").unwrap()
    });
    assert!(r.header.timed_out && r.header.truncated, "{:?}", r.header);
    assert_eq!(r.stderr.len(), 16 * MIB, "the frame limit, exactly");
    assert!(
        r.stderr.ends_with(
            b"demos shell: timed out after 3 s; the command's process group was killed (SIGKILL)\n"
        ),
        "{:?}",
        String::from_utf8_lossy(&r.stderr[r.stderr.len() - 120..])
    );
}
