//! `max_per_ip` frees a client's place before the client can see its
//! connection end: a client that waits for the end of one connection before
//! opening the next is never refused, in plain TCP and under TLS (where the
//! end it sees first is the server's `close_notify`).

use std::io::{self, BufRead, Read, Write};

use socketserver::{Green, Pool, Server, Strategy, StreamRequest, Threading};
use socketserver_tests::tls::{client_config, make_cert, rustls_client};
use socketserver_tests::*;

const ROUNDS: usize = 300;

/// Answers one line, then the server ends the connection.
fn one_answer(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    req.read_line(&mut line)?;
    req.write_all(line.as_bytes())
}

fn one_connection_at_a_time_is_never_refused_in_plain_tcp(strategy: impl Strategy) {
    let server = Server::builder()
        .strategy(strategy)
        .max_per_ip(Some(1))
        .busy_message("BUSY\n")
        .tcp("127.0.0.1:0", one_answer)
        .unwrap();
    let s = Serving::start(server);
    for i in 0..ROUNDS {
        let mut c = tcp_client(&s.address());
        c.write_all(b"ping\n").unwrap();
        let mut all = Vec::new();
        // To the end: the reply, then end-of-file.
        c.read_to_end(&mut all).unwrap();
        assert_eq!(
            all,
            b"ping\n",
            "round {i}: {:?}",
            String::from_utf8_lossy(&all)
        );
    }
    assert_eq!(s.stats().refused, 0, "{:?}", s.stats());
}

fn one_connection_at_a_time_is_never_refused_under_tls(strategy: impl Strategy) {
    let dir = TempDir::new("per-ip-tls");
    let cert = make_cert(&dir, "server");
    let config = socketserver::tls::server_config(&cert.cert, &cert.key).unwrap();
    let server = Server::builder()
        .strategy(strategy)
        .max_per_ip(Some(1))
        .tls(config)
        .tcp("127.0.0.1:0", one_answer)
        .unwrap();
    let s = Serving::start(server);
    let client = client_config(&cert.ca, None);
    for i in 0..ROUNDS / 3 {
        let mut c = rustls_client(&s.address(), client.clone());
        c.write_all(b"ping\n").unwrap();
        let mut line = String::new();
        io::BufReader::new(&mut c).read_line(&mut line).unwrap();
        assert_eq!(line, "ping\n", "round {i}");
        // The server's close_notify: a clean end, as the client sees it.
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
    }
    assert_eq!(s.stats().refused, 0, "{:?}", s.stats());
}

per_strategy! {
    [
        one_connection_at_a_time_is_never_refused_in_plain_tcp,
        one_connection_at_a_time_is_never_refused_under_tls,
    ]
    threading: Threading::new();
    pool: Pool::new(4);
    green: Green::new().threads(2);
}
