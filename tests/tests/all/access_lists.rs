//! The allow and deny lists (`Builder::allow`, `Builder::deny`): checked at
//! admission against the socket's peer, or behind the PROXY protocol
//! against the client its header names; refused clients are closed unserved
//! and counted in `Stats::refused_by.denied`. Clients come from 127.0.0.2
//! and 127.0.0.3 (loopback source addresses).

use std::io::{self, Read, Write};
use std::net::TcpStream;

use socketserver::proxy::ProxyProtocol;
use socketserver::{Green, IpNet, Pool, Server, Strategy, StreamRequest, Synchronous, Threading};
use socketserver_tests::*;

fn echo(req: &mut StreamRequest) -> io::Result<()> {
    req.echo().map(drop)
}

/// Whether `msg` came back, or the connection was closed unserved.
fn served(mut c: TcpStream, msg: &[u8]) -> bool {
    if c.write_all(msg).is_err() {
        return false;
    }
    let mut back = vec![0; msg.len()];
    c.read_exact(&mut back).is_ok() && back == msg
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn deny_refuses_a_listed_address_and_serves_the_others(strategy: impl Strategy) {
    let server = Server::builder()
        .strategy(strategy)
        .allow(net("127.0.0.0/8"))
        .deny(net("127.0.0.3"))
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let s = Serving::start(server);
    assert!(served(tcp_client_from("127.0.0.2", s.addr), b"allowed\n"));
    assert!(!served(tcp_client_from("127.0.0.3", s.addr), b"denied\n"));
    assert!(served(
        tcp_client_from("127.0.0.1", s.addr),
        b"allowed too\n"
    ));
    wait_until(DEADLINE, "both served clients finished", || {
        s.stats().completed == 2
    });
    let stats = s.stats();
    assert_eq!(
        (stats.refused, stats.refused_by.denied),
        (1, 1),
        "{stats:?}"
    );
}

fn an_allow_list_refuses_every_address_outside_it(strategy: impl Strategy) {
    let server = Server::builder()
        .strategy(strategy)
        .allow(net("127.0.0.2/32"))
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let s = Serving::start(server);
    assert!(served(tcp_client_from("127.0.0.2", s.addr), b"in\n"));
    assert!(!served(tcp_client_from("127.0.0.3", s.addr), b"out\n"));
    assert!(!served(tcp_client_from("127.0.0.1", s.addr), b"out\n"));
    wait_until(DEADLINE, "both refusals counted", || {
        s.stats().refused_by.denied == 2
    });
}

fn behind_a_proxy_the_lists_apply_to_the_client_its_header_names(strategy: impl Strategy) {
    let server = Server::builder()
        .strategy(strategy)
        .proxy_protocol(ProxyProtocol::Required {
            trusted: vec![net("127.0.0.1")],
        })
        .deny(net("127.0.0.3"))
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let s = Serving::start(server);
    let proxied = |client: &str, msg: &[u8]| {
        let mut c = tcp_client_from("127.0.0.1", s.addr);
        let header = format!("PROXY TCP4 {client} 127.0.0.1 40000 {}\r\n", s.addr.port());
        c.write_all(header.as_bytes()).unwrap();
        served(c, msg)
    };
    assert!(proxied("127.0.0.2", b"through the proxy\n"));
    assert!(!proxied("127.0.0.3", b"denied behind the proxy\n"));
    // The proxy's own address is not what the lists judge.
    wait_until(DEADLINE, "the proxied client finished", || {
        s.stats().completed == 1
    });
    wait_until(DEADLINE, "the refusal counted", || {
        s.stats().refused_by.denied == 1
    });
}

per_strategy! {
    [
        deny_refuses_a_listed_address_and_serves_the_others,
        an_allow_list_refuses_every_address_outside_it,
        behind_a_proxy_the_lists_apply_to_the_client_its_header_names,
    ]
    synchronous: Synchronous;
    threading: Threading::new();
    pool: Pool::new(2);
    green: Green::new().threads(2);
}
