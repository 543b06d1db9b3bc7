//! The names of a client's certificate in `TlsInfo` (`peer_names`,
//! `peer_common_name`, `peer_has_name`): the subject's common name and its
//! subject alternative names (DNS, IP), parsed from the verified leaf; a
//! `verify_tls` pinning one name in one line serves the client that has
//! it and refuses the others (counted as refused, reason `verify`, and
//! logged at info with the refused certificate's names). Certificates are
//! made per run with the `openssl` command line in a temp dir.

use std::net::IpAddr;
use std::time::Duration;

use socketserver::counters::RefusedReason;
use socketserver::tls::{mutual_server_config, ClientAuth, PeerNames, TlsInfo};
use socketserver::Threading;
use socketserver_tests::tls::*;
use socketserver_tests::*;

const MSG: &[u8] = b"hello, named client\n";

struct Pki {
    _dir: TempDir,
    server: Cert,
    clients_ca: std::path::PathBuf,
    /// CN billing, DNS billing.internal and api.billing.internal, IP
    /// 127.0.0.2 and `::1`.
    billing: Cert,
    /// CN alice, no subject alternative names.
    alice: Cert,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let server = make_cert(&dir, "server");
        let clients = Ca::new(&dir, "clients");
        let billing = clients.issue_client_with_names(
            "billing",
            "billing",
            "DNS:billing.internal,DNS:api.billing.internal,IP:127.0.0.2,IP:::1",
        );
        let alice = clients.issue("alice", "alice", Role::Client, Validity::OneDay);
        Pki {
            server,
            clients_ca: clients.cert.clone(),
            billing,
            alice,
            _dir: dir,
        }
    }

    fn server(&self, allow: Option<Allow>) -> TlsServer {
        let config = mutual_server_config(
            &self.server.cert,
            &self.server.key,
            &self.clients_ca,
            ClientAuth::Required,
        )
        .expect("mutual TLS config");
        TlsServer::with_config(Threading::new(), config, Duration::from_secs(10), allow)
    }

    fn echo(&self, server: &TlsServer, identity: &Cert) -> std::io::Result<Vec<u8>> {
        let mut client = rustls_client(
            &server.address,
            client_config(&self.server.ca, Some(identity)),
        );
        rustls_echo(&mut client, MSG)
    }
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
fn the_handler_sees_the_common_name_and_the_dns_and_ip_alternative_names() {
    let pki = Pki::new("names-seen");
    let server = pki.server(None);
    assert_eq!(pki.echo(&server, &pki.billing).unwrap(), MSG);
    let info = handler_info(&server);
    let names = info.peer_names().expect("a parsed client certificate");
    assert_eq!(names.common_name.as_deref(), Some("billing"));
    assert_eq!(
        names.dns_names,
        ["billing.internal", "api.billing.internal"]
    );
    let ips: [IpAddr; 2] = ["127.0.0.2".parse().unwrap(), "::1".parse().unwrap()];
    assert_eq!(names.ip_addresses, ips);
    assert_eq!(info.peer_common_name().as_deref(), Some("billing"));
    assert!(info.peer_has_name("billing"), "the common name");
    assert!(
        info.peer_has_name("Billing.Internal"),
        "DNS names ignore ASCII case"
    );
    assert!(info.peer_has_name("127.0.0.2") && info.peer_has_name("::1"));
    assert!(!info.peer_has_name("127.0.0.1"));
    assert!(
        !info.peer_has_name("internal"),
        "no partial or wildcard match"
    );
    assert!(!info.peer_has_name("evil.billing.internal"));

    // A certificate without alternative names: its common name only.
    assert_eq!(pki.echo(&server, &pki.alice).unwrap(), MSG);
    let alice = handler_info(&server).peer_names().unwrap();
    assert_eq!(
        (
            alice.common_name.as_deref(),
            alice.dns_names.len(),
            alice.ip_addresses.len()
        ),
        (Some("alice"), 0, 0)
    );
    // Not a certificate.
    assert_eq!(PeerNames::from_der(b"not DER"), None);
}

#[test]
fn pinning_a_name_in_verify_tls_serves_that_client_and_refuses_the_others() {
    let logs = LogCapture::install();
    let pki = Pki::new("names-pinned");
    let allow: Allow = Box::new(|tls: &TlsInfo| tls.peer_has_name("billing.internal"));
    let server = pki.server(Some(allow));
    assert_eq!(pki.echo(&server, &pki.billing).unwrap(), MSG);
    assert_eq!(server.calls(), 1);
    // Alice's chain is valid, but she is not billing: refused after the
    // handshake, before the handler.
    assert!(pki.echo(&server, &pki.alice).is_err(), "alice was served");
    wait_until(DEADLINE, "the refusal is counted", || {
        server.stats().refused == 1
    });
    assert_eq!(server.calls(), 1, "the handler ran for alice");
    let counters = server.counters();
    let verify = counters
        .refused
        .iter()
        .find(|(r, _)| *r == RefusedReason::Verify)
        .map(|&(_, n)| n);
    assert_eq!(verify, Some(1), "{counters:?}");
    let line = logs.wait_for(log::Level::Info, &["refused by verify_tls", "\"alice\""]);
    assert!(line.contains("127.0.0.1"), "{line}");
}
