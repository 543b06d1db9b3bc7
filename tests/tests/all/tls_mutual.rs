//! Mutual TLS (`tls::mutual_server_config`, `ClientAuth::Required` and
//! `Optional`) and `StreamHandler::verify_tls`: which clients are served,
//! what the handler sees of their certificates, and that a refused client
//! never reaches the handler (counted in `Stats`). Clients: rustls,
//! `openssl s_client`, Python `ssl`. Certificates are made per run with the
//! `openssl` command line in a temp dir.

use std::sync::Arc;
use std::time::Duration;

use socketserver::tls::{mutual_server_config, ClientAuth, ServerConfig, TlsInfo};
use socketserver::Threading;
use socketserver_tests::tls::*;
use socketserver_tests::*;

const MSG: &[u8] = b"hello over mutual TLS\n";

/// A server certificate (its own CA), a CA for clients, two clients it
/// signed (`alice`, `bob`), and `mallory`, signed by another CA.
struct Pki {
    _dir: TempDir,
    server: Cert,
    clients_ca: std::path::PathBuf,
    alice: Cert,
    bob: Cert,
    mallory: Cert,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let server = make_cert(&dir, "server");
        let clients = Ca::new(&dir, "clients");
        let alice = clients.issue("alice", "alice", Role::Client, Validity::OneDay);
        let bob = clients.issue("bob", "bob", Role::Client, Validity::OneDay);
        let other = Ca::new(&dir, "other");
        let mallory = other.issue("mallory", "mallory", Role::Client, Validity::OneDay);
        Pki {
            server,
            clients_ca: clients.cert.clone(),
            alice,
            bob,
            mallory,
            _dir: dir,
        }
    }

    fn config(&self, mode: ClientAuth) -> Arc<ServerConfig> {
        mutual_server_config(&self.server.cert, &self.server.key, &self.clients_ca, mode)
            .expect("mutual TLS config")
    }

    fn server(&self, mode: ClientAuth, allow: Option<Allow>) -> TlsServer {
        TlsServer::with_config(
            Threading::new(),
            self.config(mode),
            Duration::from_secs(10),
            allow,
        )
    }

    /// A rustls client trusting the server's CA, presenting `identity`.
    fn rustls_echo(&self, server: &TlsServer, identity: Option<&Cert>) -> std::io::Result<Vec<u8>> {
        let mut client = rustls_client(&server.address, client_config(&self.server.ca, identity));
        let back = rustls_echo(&mut client, MSG);
        if back.is_ok() {
            client.conn.send_close_notify();
            let _ = std::io::Write::flush(&mut client);
        }
        back
    }
}

/// Waits for `failed` failed handshakes, then checks the handler never ran.
fn assert_refused_at_handshake(server: &TlsServer, failed: u64) {
    wait_until(DEADLINE, "the failed handshake is counted", || {
        server.stats().failed == failed
    });
    assert_eq!(server.calls(), 0, "the handler ran");
    assert_eq!(
        server
            .seen
            .verified
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "verify_tls ran"
    );
    assert!(server.seen.data.lock().is_empty());
}

fn handler_info(server: &TlsServer) -> TlsInfo {
    server
        .seen
        .info
        .lock()
        .clone()
        .expect("tls_info in the handler")
}

#[test]
fn required_a_client_with_a_certificate_of_the_client_ca_is_served_and_the_handler_sees_its_chain()
{
    let pki = Pki::new("mtls-served");
    let server = pki.server(ClientAuth::Required, None);
    assert_eq!(pki.rustls_echo(&server, Some(&pki.alice)).unwrap(), MSG);
    let info = handler_info(&server);
    assert_eq!(
        info.peer_certificates.len(),
        1,
        "the client sent its cert only"
    );
    assert_eq!(
        info.peer_certificates[0].as_ref(),
        pki.alice.der(),
        "the DER of alice-cert.pem"
    );
    wait_until(DEADLINE, "the request completes", || {
        server.stats().completed == 1
    });
    assert_eq!(server.stats().failed, 0);
}

#[test]
fn required_a_rustls_client_without_a_certificate_is_refused_and_the_handler_never_runs() {
    let pki = Pki::new("mtls-rustls-none");
    let server = pki.server(ClientAuth::Required, None);
    let err = pki.rustls_echo(&server, None).expect_err("refused");
    println!("rustls client without a certificate: {err}");
    assert!(
        err.to_string().contains("CertificateRequired"),
        "client error: {err}"
    );
    assert_refused_at_handshake(&server, 1);
}

#[test]
fn required_openssl_s_client_with_a_certificate_is_served() {
    let pki = Pki::new("mtls-openssl-cert");
    let server = pki.server(ClientAuth::Required, None);
    let out = s_client(
        server.port(),
        &pki.server.ca,
        Some(&pki.bob),
        &[],
        "hello from openssl",
    );
    assert_eq!(out.line, "hello from openssl\n", "stderr: {}", out.stderr);
    assert_eq!(
        handler_info(&server).peer_certificates[0].as_ref(),
        pki.bob.der()
    );
}

#[test]
fn required_openssl_s_client_without_a_certificate_is_refused_and_the_handler_never_runs() {
    for flag in ["-tls1_3", "-tls1_2"] {
        let pki = Pki::new("mtls-openssl-none");
        let server = pki.server(ClientAuth::Required, None);
        let out = s_client(server.port(), &pki.server.ca, None, &[flag], "hello");
        println!(
            "s_client {flag} without a certificate: {}",
            out.stderr.trim()
        );
        assert_eq!(out.line, "", "no echo ({flag}); stderr: {}", out.stderr);
        assert!(
            out.stderr.contains("alert"),
            "an alert ({flag}): {}",
            out.stderr
        );
        assert_refused_at_handshake(&server, 1);
    }
}

#[test]
fn required_python_ssl_with_a_certificate_is_served_and_without_one_is_refused() {
    const TEST: &str =
        "required_python_ssl_with_a_certificate_is_served_and_without_one_is_refused";
    let pki = Pki::new("mtls-python");
    let server = pki.server(ClientAuth::Required, None);
    let Some((stdout, stderr)) =
        python_client(TEST, server.port(), &pki.server.ca, Some(&pki.alice))
    else {
        return;
    };
    assert_eq!(stdout, "TLSv1.3 hello from python", "stderr: {stderr}");
    assert_eq!(
        handler_info(&server).peer_certificates[0].as_ref(),
        pki.alice.der()
    );
    // Python closes without a close_notify: that request may end failed
    // (UnexpectedEof in the handler's read), so count from there.
    wait_until(DEADLINE, "the first request ends", || {
        let s = server.stats();
        s.completed + s.failed == 1
    });
    let failed_before = server.stats().failed;
    let (stdout, stderr) = python_client(TEST, server.port(), &pki.server.ca, None).unwrap();
    println!("python without a certificate: {stdout}");
    assert!(
        stdout.starts_with("refused:") && stdout.contains("CERTIFICATE_REQUIRED"),
        "stdout: {stdout}; stderr: {stderr}"
    );
    wait_until(DEADLINE, "the failed handshake is counted", || {
        server.stats().failed == failed_before + 1
    });
    assert_eq!(
        server.calls(),
        1,
        "the handler ran for the first client only"
    );
}

#[test]
fn required_a_client_certificate_signed_by_another_ca_is_refused_and_the_handler_never_runs() {
    let pki = Pki::new("mtls-other-ca");
    let server = pki.server(ClientAuth::Required, None);
    let err = pki
        .rustls_echo(&server, Some(&pki.mallory))
        .expect_err("refused");
    println!("rustls client with another CA's certificate: {err}");
    assert!(
        err.to_string().contains("UnknownCA") || err.to_string().contains("BadCertificate"),
        "client error: {err}"
    );
    assert_refused_at_handshake(&server, 1);
    // openssl s_client with it too.
    let out = s_client(
        server.port(),
        &pki.server.ca,
        Some(&pki.mallory),
        &[],
        "hello",
    );
    assert_eq!(out.line, "", "no echo; stderr: {}", out.stderr);
    assert_refused_at_handshake(&server, 2);
}

#[test]
fn optional_a_client_without_a_certificate_is_served_with_no_peer_certificates() {
    let pki = Pki::new("mtls-optional-none");
    let server = pki.server(ClientAuth::Optional, None);
    assert_eq!(pki.rustls_echo(&server, None).unwrap(), MSG);
    assert!(handler_info(&server).peer_certificates.is_empty());
    let out = s_client(server.port(), &pki.server.ca, None, &[], "hello");
    assert_eq!(out.line, "hello\n", "stderr: {}", out.stderr);
    assert!(handler_info(&server).peer_certificates.is_empty());
    assert_eq!(server.calls(), 2);
}

#[test]
fn optional_a_client_certificate_is_visible_to_the_handler() {
    let pki = Pki::new("mtls-optional-cert");
    let server = pki.server(ClientAuth::Optional, None);
    assert_eq!(pki.rustls_echo(&server, Some(&pki.alice)).unwrap(), MSG);
    let info = handler_info(&server);
    assert_eq!(info.peer_certificates.len(), 1);
    assert_eq!(info.peer_certificates[0].as_ref(), pki.alice.der());
}

#[test]
fn optional_a_client_certificate_signed_by_another_ca_is_still_refused() {
    let pki = Pki::new("mtls-optional-other");
    let server = pki.server(ClientAuth::Optional, None);
    pki.rustls_echo(&server, Some(&pki.mallory))
        .expect_err("refused");
    assert_refused_at_handshake(&server, 1);
}

#[test]
fn verify_tls_pinning_one_certificate_refuses_another_validly_signed_client() {
    let pki = Pki::new("mtls-pinned");
    let pinned = pki.alice.der();
    let allow: Allow = Box::new(move |tls: &TlsInfo| {
        tls.peer_certificates
            .first()
            .is_some_and(|c| c.as_ref() == pinned.as_slice())
    });
    let server = pki.server(ClientAuth::Required, Some(allow));
    let err = pki
        .rustls_echo(&server, Some(&pki.bob))
        .expect_err("bob is refused");
    println!("bob, refused by verify_tls: {err}");
    wait_until(DEADLINE, "the refusal is counted", || {
        server.stats().refused == 1
    });
    assert_eq!(server.calls(), 0, "the handler never ran for bob");
    assert!(server.seen.data.lock().is_empty());
    assert_eq!(pki.rustls_echo(&server, Some(&pki.alice)).unwrap(), MSG);
    assert_eq!(server.calls(), 1);
    let stats = server.stats();
    assert_eq!(
        server
            .seen
            .verified
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    assert_eq!((stats.refused, stats.failed), (1, 0), "{stats:?}");
}

/// Whether `der` holds `needle` (the subject CN appears as its bytes).
fn contains(der: &[u8], needle: &[u8]) -> bool {
    der.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn verify_tls_by_the_subject_cn_refuses_other_names_under_openssl_s_client() {
    let pki = Pki::new("mtls-cn");
    let allow: Allow = Box::new(|tls: &TlsInfo| {
        tls.peer_certificates
            .first()
            .is_some_and(|c| contains(c.as_ref(), b"alice"))
    });
    let server = pki.server(ClientAuth::Required, Some(allow));
    let out = s_client(server.port(), &pki.server.ca, Some(&pki.bob), &[], "bob");
    assert_eq!(out.line, "", "bob gets no echo; stderr: {}", out.stderr);
    wait_until(DEADLINE, "the refusal is counted", || {
        server.stats().refused == 1
    });
    assert_eq!(server.calls(), 0);
    let out = s_client(
        server.port(),
        &pki.server.ca,
        Some(&pki.alice),
        &[],
        "alice",
    );
    assert_eq!(out.line, "alice\n", "stderr: {}", out.stderr);
    assert_eq!(server.calls(), 1);
}
