//! `write_timeout` bounds a whole write, not each `write(2)`: a client that
//! reads a little now and then (so every system call makes some progress)
//! cannot stretch one reply past the timeout, and the error says the
//! timeout it ran into.

use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use socketserver::{Green, Pool, Server, Strategy, StreamRequest, Threading};
use socketserver_tests::*;

const TIMEOUT: Duration = Duration::from_secs(1);

fn a_slowly_reading_client_ends_a_large_write_within_the_timeout(strategy: impl Strategy) {
    let (tx, rx) = mpsc::channel::<(Duration, io::Error)>();
    let tx = parking_lot::Mutex::new(tx);
    let server = Server::builder()
        .strategy(strategy)
        .write_timeout(Some(TIMEOUT))
        .tcp("127.0.0.1:0", move |req: &mut StreamRequest| {
            if let Some(tcp) = req.stream().as_tcp() {
                socket2::SockRef::from(tcp).set_send_buffer_size(64 * 1024)?;
            }
            let mut line = String::new();
            io::BufRead::read_line(req, &mut line)?;
            let chunk = vec![b'x'; 1 << 20];
            let started = Instant::now();
            // 64 MiB: minutes at the client's pace.
            for _ in 0..64 {
                if let Err(e) = req.write_all(&chunk).and_then(|()| req.flush()) {
                    let _ = tx.lock().send((started.elapsed(), e));
                    return Ok(());
                }
            }
            Ok(())
        })
        .unwrap();
    let s = Serving::start(server);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.connect_timeout(&s.addr.into(), DEADLINE).unwrap();
    let mut client: std::net::TcpStream = socket.into();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    client.write_all(b"send\n").unwrap();
    // Reads 16 KiB every 100 ms: progress for every write(2), far below
    // the server's pace. Bounded: it stops when the server gave up.
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        for _ in 0..400 {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    let (elapsed, err) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the write ended");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(err.to_string().contains("after 1s"), "{err}");
    assert!(
        elapsed < TIMEOUT + PROMPT,
        "gave up after {elapsed:?} with a {TIMEOUT:?} write timeout"
    );
    eprintln!("write_timeout {TIMEOUT:?}: gave up after {elapsed:?}");
    within(DEADLINE, "the slow reader ends", move || {
        reader.join().unwrap()
    });
}

per_strategy! {
    [a_slowly_reading_client_ends_a_large_write_within_the_timeout]
    threading: Threading::new();
    pool: Pool::new(2);
    green: Green::new().threads(2);
}
