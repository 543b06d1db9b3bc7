//! TLS under `Forking` and `PreFork`: the handshake and the session live in
//! the child that serves the connection. The servers run in the
//! single-threaded `fork_server` and `prefork_server` binaries (forking from
//! the multi-threaded test harness would be the hazard `Forking` warns
//! about), with `--tls-cert` and `--tls-key`. Every wait has a deadline; a
//! server that outlives its test is killed with its process group.

use std::io::{BufRead, BufReader, Write};

use socketserver::Address;
use socketserver_tests::tls::*;
use socketserver_tests::*;

const CLIENTS: usize = 20;

fn tls_args(cert: &Cert) -> [String; 2] {
    [
        format!("--tls-cert={}", cert.cert.display()),
        format!("--tls-key={}", cert.key.display()),
    ]
}

/// SIGTERM: exit 0 within `PROMPT`, and nothing of its process group left
/// (no child, no zombie).
fn terminate_leaving_nothing(mut server: ServerProcess) {
    let pid = server.pid();
    let (status, _) = server.terminate(PROMPT);
    assert!(
        status.success(),
        "exit status {status}; stderr: {}",
        server.stderr()
    );
    wait_until(DEADLINE, "no process of the server's group left", || {
        group_members(pid).is_empty()
    });
    let stderr = server.stderr();
    assert!(
        !stderr.contains("panicked") && !stderr.contains("forking a process with"),
        "stderr: {stderr}"
    );
}

#[test]
fn forking_serves_20_tls_clients_and_leaves_no_zombie_after_sigterm() {
    let dir = TempDir::new("tls-forking");
    let cert = make_cert(&dir, "server");
    let [tls_cert, tls_key] = tls_args(&cert);
    let server = ServerProcess::start(
        env!("CARGO_BIN_EXE_fork_server"),
        &["tcp", "127.0.0.1:0", "40", "echo", &tls_cert, &tls_key],
    );
    let addr = server.address();
    let took = rustls_clients_echo(&addr, &cert, CLIENTS, 2);
    // openssl s_client, a client nobody here wrote, too.
    let out = s_client(
        addr.as_inet().unwrap().port(),
        &cert.ca,
        None,
        &[],
        "hello from openssl",
    );
    assert_eq!(out.line, "hello from openssl\n", "stderr: {}", out.stderr);
    wait_until(DEADLINE, "every child reaped", || {
        server.children() == (0, 0)
    });
    eprintln!("forking: {CLIENTS} TLS clients echoed in {took:?}; 0 children left");
    terminate_leaving_nothing(server);
}

/// Asks `pid` over TLS: the pid of the process that holds the session.
fn serving_pid(addr: &Address, cert: &Cert) -> u32 {
    let client = rustls_client(addr, client_config(&cert.ca, None));
    let mut client = BufReader::new(client);
    client.get_mut().write_all(b"pid\n").unwrap();
    let mut line = String::new();
    client.read_line(&mut line).unwrap();
    line.trim().parse().expect("a pid")
}

#[test]
fn prefork_serves_20_tls_clients_from_its_children_and_leaves_no_zombie_after_sigterm() {
    let dir = TempDir::new("tls-prefork");
    let cert = make_cert(&dir, "server");
    let [tls_cert, tls_key] = tls_args(&cert);
    let server = ServerProcess::start(
        env!("CARGO_BIN_EXE_prefork_server"),
        &[
            "127.0.0.1:0",
            "--min=3",
            "--max=8",
            "--min-spare=1",
            "--max-spare=4",
            &tls_cert,
            &tls_key,
        ],
    );
    let addr = server.address();
    let took = rustls_clients_echo(&addr, &cert, CLIENTS, 2);
    let pid = within(DEADLINE, "the serving pid over TLS", {
        let (addr, cert) = (addr.clone(), cert.clone());
        move || serving_pid(&addr, &cert)
    });
    let children: Vec<u32> = children_of(server.pid()).iter().map(|&(p, _)| p).collect();
    assert!(
        children.contains(&pid),
        "the session is in a child: {pid} not among {children:?} (server {})",
        server.pid()
    );
    let (live, zombies) = server.children();
    eprintln!(
        "prefork: {CLIENTS} TLS clients echoed in {took:?}; {live} children, {zombies} zombies"
    );
    terminate_leaving_nothing(server);
}
