//! Expired certificates: a server whose certificate expired is refused by
//! every client (`openssl s_client -verify_return_error`, Python `ssl`,
//! rustls), and under mutual TLS a client whose certificate expired is
//! refused by the server before the handler runs. The expired certificates
//! (valid 1 to 2 January 2020) are signed with `openssl ca` per run.

use std::time::Duration;

use socketserver::tls::{mutual_server_config, ClientAuth};
use socketserver::Threading;
use socketserver_tests::tls::*;
use socketserver_tests::*;

/// A TLS echo server whose certificate (for localhost) expired in 2020.
fn expired_server(dir: &TempDir) -> (Cert, TlsServer) {
    let cert = Ca::new(dir, "server").issue("server", "localhost", Role::Server, Validity::Expired);
    let server = TlsServer::start(Threading::new(), &cert, Duration::from_secs(10));
    (cert, server)
}

/// The server saw a failed handshake (the client's alert) and no request.
fn assert_never_served(server: &TlsServer) {
    wait_until(DEADLINE, "the failed handshake is counted", || {
        server.stats().failed == 1
    });
    assert_eq!(server.calls(), 0);
    assert_eq!(server.stats().completed, 0);
}

#[test]
fn openssl_s_client_refuses_an_expired_server_certificate() {
    let dir = TempDir::new("tls-expired-openssl");
    let (cert, server) = expired_server(&dir);
    let out = s_client(server.port(), &cert.ca, None, &[], "hello");
    println!("s_client: {}", out.stderr.trim());
    assert_eq!(out.line, "", "no echo; stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("certificate has expired"),
        "stderr: {}",
        out.stderr
    );
    assert_never_served(&server);
}

#[test]
fn python_ssl_refuses_an_expired_server_certificate() {
    let dir = TempDir::new("tls-expired-python");
    let (cert, server) = expired_server(&dir);
    let Some((stdout, stderr)) = python_client(
        "python_ssl_refuses_an_expired_server_certificate",
        server.port(),
        &cert.ca,
        None,
    ) else {
        return;
    };
    println!("python: {stdout}");
    assert!(
        stdout.starts_with("refused:") && stdout.contains("certificate has expired"),
        "stdout: {stdout}; stderr: {stderr}"
    );
    assert_never_served(&server);
}

#[test]
fn the_rustls_client_refuses_an_expired_server_certificate() {
    let dir = TempDir::new("tls-expired-rustls");
    let (cert, server) = expired_server(&dir);
    let mut client = rustls_client(&server.address, client_config(&cert.ca, None));
    let err = rustls_echo(&mut client, b"hello\n").expect_err("refused");
    println!("rustls: {err}");
    assert!(err.to_string().contains("expired"), "client error: {err}");
    assert_never_served(&server);
}

#[test]
fn under_mutual_tls_an_expired_client_certificate_is_refused_before_the_handler() {
    let dir = TempDir::new("tls-expired-client");
    let server_cert = make_cert(&dir, "server");
    let clients = Ca::new(&dir, "clients");
    let expired = clients.issue("old", "old", Role::Client, Validity::Expired);
    let current = clients.issue("new", "new", Role::Client, Validity::OneDay);
    let config = mutual_server_config(
        &server_cert.cert,
        &server_cert.key,
        &clients.cert,
        ClientAuth::Required,
    )
    .unwrap();
    let server = TlsServer::with_config(Threading::new(), config, Duration::from_secs(10), None);
    // rustls, presenting the expired certificate.
    let mut client = rustls_client(
        &server.address,
        client_config(&server_cert.ca, Some(&expired)),
    );
    let err = rustls_echo(&mut client, b"hello\n").expect_err("refused");
    println!("rustls client with an expired certificate: {err}");
    assert!(
        err.to_string().contains("CertificateExpired"),
        "client error: {err}"
    );
    assert_never_served(&server);
    // openssl s_client, presenting it too.
    let out = s_client(server.port(), &server_cert.ca, Some(&expired), &[], "hello");
    assert_eq!(out.line, "", "no echo; stderr: {}", out.stderr);
    wait_until(DEADLINE, "the second failed handshake is counted", || {
        server.stats().failed == 2
    });
    assert_eq!(server.calls(), 0);
    // The same CA's current certificate is served.
    let mut client = rustls_client(
        &server.address,
        client_config(&server_cert.ca, Some(&current)),
    );
    assert_eq!(rustls_echo(&mut client, b"hello\n").unwrap(), b"hello\n");
    assert_eq!(server.calls(), 1);
}
