//! The message deadline, the defence against slow clients (slowloris): once
//! a message's first byte is in, the whole message must arrive within
//! `message_timeout`, extended by `min_data_rate`; `read_timeout` alone is a
//! per-read timer that every byte resets.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socketserver::{
    Address, Green, RequestError, Server, Strategy, StreamHandler, StreamRequest, Threading,
};
use socketserver_tests::*;

/// Echoes lines; records how each request ended.
#[derive(Default, Clone)]
struct Lines {
    errors: Arc<Mutex<Vec<String>>>,
}

impl StreamHandler for Lines {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let mut line = String::new();
        while req.read_line(&mut line)? > 0 {
            req.write_all(line.as_bytes())?;
            line.clear();
        }
        Ok(())
    }
    fn handle_error(&self, _peer: &Address, error: &RequestError) {
        self.errors.lock().push(error.to_string());
    }
}

fn serve(
    strategy: impl Strategy,
    handler: Lines,
    message: Duration,
    rate: Option<u32>,
    read: Duration,
) -> (Running, Address) {
    let server = Server::builder()
        .strategy(strategy)
        .message_timeout(Some(message))
        .min_data_rate(rate)
        .read_timeout(Some(read))
        .tcp("127.0.0.1:0", handler)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    (running, addr)
}

/// Whether the server closed `c` (EOF or reset) by now.
fn closed(c: &mut TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    let gone = match c.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    c.set_nonblocking(false).unwrap();
    gone
}

/// Sends one byte every 100 ms on `c` until the server closes it (at most
/// 10 s); returns how long that took.
fn dribble_until_cut(mut c: TcpStream) -> Duration {
    let start = Instant::now();
    within(DEADLINE, "the dribbler is cut", move || {
        for _ in 0..100 {
            if c.write_all(b"x").is_err() || closed(&mut c) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("still connected after 10 s of dribbling");
    })
}

fn a_client_dribbling_a_line_is_cut_at_the_message_deadline_although_every_read_is_quick(
    strategy: impl Strategy,
) {
    let handler = Lines::default();
    let errors = Arc::clone(&handler.errors);
    // The read timeout (2 s) never runs out: a byte comes every 100 ms.
    let (running, addr) = serve(
        strategy,
        handler,
        Duration::from_millis(500),
        None,
        Duration::from_secs(2),
    );
    let c = tcp_client(&addr);
    let cut_after = dribble_until_cut(c);
    eprintln!("dribbler cut after {} ms", cut_after.as_millis());
    assert!(cut_after >= Duration::from_millis(400), "{cut_after:?}");
    assert!(cut_after < Duration::from_secs(3), "{cut_after:?}");
    wait_until(DEADLINE, "the error reported", || !errors.lock().is_empty());
    let error = errors.lock()[0].clone();
    assert!(error.contains("message_timeout"), "{error}");
    running.stop();
}

fn an_idle_client_is_not_cut_by_the_message_deadline(strategy: impl Strategy) {
    let (running, addr) = serve(
        strategy,
        Lines::default(),
        Duration::from_millis(300),
        None,
        Duration::from_secs(5),
    );
    let mut c = tcp_client(&addr);
    assert_eq!(stream_roundtrip(&mut c, b"one\n").unwrap(), b"one\n");
    // Silent for more than the message deadline: the deadline starts with a
    // message's first byte, so waiting between messages is fine.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(stream_roundtrip(&mut c, b"two\n").unwrap(), b"two\n");
    running.stop();
}

fn the_minimum_data_rate_extends_the_deadline_of_a_large_message(strategy: impl Strategy) {
    let (running, addr) = serve(
        strategy,
        Lines::default(),
        Duration::from_millis(300),
        Some(10_000),
        Duration::from_secs(5),
    );
    let mut c = tcp_client(&addr);
    // 20 KB in 1 KB pieces every 30 ms: 600 ms in all, twice the base
    // deadline, but at 33 KB/s, well over the 10 KB/s minimum.
    let line: Vec<u8> = std::iter::repeat_n(b'a', 20_000)
        .chain(std::iter::once(b'\n'))
        .collect();
    within(DEADLINE, "a large, steady line", move || {
        for piece in line.chunks(1000) {
            c.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        let mut back = String::new();
        io::BufReader::new(&mut c).read_line(&mut back).unwrap();
        assert_eq!(back.len(), 20_001);
    });
    running.stop();
}

fn five_hundred_trickling_clients_are_all_cut_and_a_new_client_is_served_meanwhile(
    strategy: impl Strategy,
) {
    let (running, addr) = serve(
        strategy,
        Lines::default(),
        Duration::from_secs(1),
        Some(500),
        Duration::from_secs(10),
    );
    let n = 500;
    let mut clients: Vec<TcpStream> = (0..n).map(|_| tcp_client(&addr)).collect();
    let start = Instant::now();
    let mut fresh = Vec::new();
    let mut open = n;
    // One byte per client every 0.5 s, for at most 10 s.
    for round in 0..20 {
        open = 0;
        for c in &mut clients {
            if c.write_all(b"x").is_ok() && !closed(c) {
                open += 1;
            }
        }
        if round == 1 {
            // In the middle of the attack, a normal client.
            let t = Instant::now();
            let mut c = tcp_client(&addr);
            assert_eq!(stream_roundtrip(&mut c, b"hi\n").unwrap(), b"hi\n");
            fresh.push(t.elapsed());
        }
        if open == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let all_cut = start.elapsed();
    eprintln!(
        "{n} trickling clients all cut after {} ms; a new client was served in {} ms meanwhile",
        all_cut.as_millis(),
        fresh[0].as_millis()
    );
    assert_eq!(open, 0, "trickling clients still connected after 10 s");
    assert!(all_cut < Duration::from_secs(5), "{all_cut:?}");
    assert!(fresh[0] < Duration::from_secs(2), "{:?}", fresh[0]);
    running.stop();
}

/// Asks for a password, which must arrive whole within 500 ms of the
/// question (`read_within`), then echoes lines.
fn password_server(strategy: impl Strategy) -> (Running, Address, Arc<Mutex<Vec<String>>>) {
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&errors);
    let server = Server::builder()
        .strategy(strategy)
        .read_timeout(Some(Duration::from_secs(5)))
        .tcp("127.0.0.1:0", move |req: &mut StreamRequest| {
            req.write_all(b"password?\n")?;
            let mut answer = String::new();
            let got = req.read_within(Duration::from_millis(500), |r| r.read_line(&mut answer));
            if let Err(e) = got {
                seen.lock().push(e.to_string());
                return Err(e);
            }
            req.write_all(format!("welcome {answer}").as_bytes())?;
            req.echo().map(drop)
        })
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    (running, addr, errors)
}

fn an_answer_dribbled_past_read_within_is_cut_at_its_deadline(strategy: impl Strategy) {
    let (running, addr, errors) = password_server(strategy);
    let mut c = tcp_client(&addr);
    let mut question = [0u8; 10];
    c.read_exact(&mut question).unwrap();
    let cut_after = dribble_until_cut(c);
    assert!(cut_after >= Duration::from_millis(400), "{cut_after:?}");
    assert!(cut_after < Duration::from_secs(3), "{cut_after:?}");
    wait_until(DEADLINE, "the error seen", || !errors.lock().is_empty());
    let error = errors.lock()[0].clone();
    assert!(error.contains("read_within"), "{error}");
    running.stop();
}

fn an_answer_in_time_passes_read_within_and_the_connection_carries_on(strategy: impl Strategy) {
    let (running, addr, errors) = password_server(strategy);
    let mut c = tcp_client(&addr);
    let mut question = [0u8; 10];
    c.read_exact(&mut question).unwrap();
    assert_eq!(&question, b"password?\n");
    c.write_all(b"sesame\n").unwrap();
    let mut welcome = [0u8; 15];
    c.read_exact(&mut welcome).unwrap();
    assert_eq!(&welcome, b"welcome sesame\n");
    // Past the 500 ms: the deadline was the answer's only.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(stream_roundtrip(&mut c, b"later\n").unwrap(), b"later\n");
    assert!(errors.lock().is_empty());
    running.stop();
}

socketserver_tests::per_strategy! {
    [
        a_client_dribbling_a_line_is_cut_at_the_message_deadline_although_every_read_is_quick,
        an_idle_client_is_not_cut_by_the_message_deadline,
        the_minimum_data_rate_extends_the_deadline_of_a_large_message,
        five_hundred_trickling_clients_are_all_cut_and_a_new_client_is_served_meanwhile,
        an_answer_dribbled_past_read_within_is_cut_at_its_deadline,
        an_answer_in_time_passes_read_within_and_the_connection_carries_on,
    ]
    threading: Threading::new().stack_size(64 * 1024);
    green: Green::new().threads(2);
}
