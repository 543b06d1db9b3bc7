//! The buffered reader and writer of a stream request (Python's `rfile` and
//! `wfile`): big writes, lines and exact reads, flushing before a blocking
//! read and after `finish`, `echo`, binary data.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;
use socketserver::{Server, StreamHandler, StreamRequest, Threading};
use socketserver_tests::*;

/// Deterministic bytes covering all 256 values, in no simple period.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn start(handler: impl StreamHandler) -> Running {
    Running::start(
        Server::builder()
            .strategy(Threading::new())
            .tcp("127.0.0.1:0", handler)
            .unwrap(),
    )
}

const BIG: usize = 16 * 1024 * 1024 + 1;

#[test]
fn sixteen_mib_plus_one_written_in_one_write_all_arrive_complete() {
    let dir = TempDir::new("big");
    let big = |req: &mut StreamRequest| req.write_all(&pattern(BIG));
    let tcp = start(big);
    let unix = Running::start(
        Server::builder()
            .strategy(Threading::new())
            .unix(dir.join("big.sock"), big)
            .unwrap(),
    );
    let (t, u) = (tcp.address.clone(), unix.address.clone());
    // 32 MiB generated, sent, received and compared in a test build: over
    // 10 s on a saturated machine. A hang is still caught.
    within(
        Duration::from_secs(60),
        "16 MiB + 1 over TCP and Unix",
        move || {
            let expected = pattern(BIG);
            let mut got = Vec::with_capacity(BIG);
            tcp_client(&t).read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), BIG, "TCP: every byte arrives");
            assert!(got == expected, "TCP: the bytes arrive intact");
            got.clear();
            unix_client(&u).read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), BIG, "Unix: every byte arrives");
            assert!(got == expected, "Unix: the bytes arrive intact");
        },
    );
    tcp.stop();
    unix.stop();
}

/// A message is a line `SIZE N` and then N bytes; the reply is `N:` and the
/// bytes reversed, then a newline.
fn sized_messages(req: &mut StreamRequest) -> io::Result<()> {
    let mut header = String::new();
    while req.rfile().read_line(&mut header)? > 0 {
        let n: usize = header
            .trim_end()
            .strip_prefix("SIZE ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, header.clone()))?;
        let mut body = vec![0; n];
        req.rfile().read_exact(&mut body)?;
        body.reverse();
        write!(req.wfile(), "{n}:")?;
        req.wfile().write_all(&body)?;
        req.wfile().write_all(b"\n")?;
        header.clear();
    }
    Ok(())
}

#[test]
fn read_line_and_read_exact_through_rfile_keep_the_stream_in_step() {
    let running = start(sized_messages);
    let addr = running.address.clone();
    within(DEADLINE, "sized messages", move || {
        let bodies: Vec<Vec<u8>> = [0, 1, 5, 100, 8191, 8192, 8193, 70_000]
            .iter()
            .map(|&n| pattern(n))
            .collect();
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for body in &bodies {
            writeln!(wire, "SIZE {}", body.len()).unwrap();
            wire.extend_from_slice(body);
            write!(expected, "{}:", body.len()).unwrap();
            expected.extend(body.iter().rev());
            expected.push(b'\n');
        }
        // All at once (headers and bodies share the reader's buffer), then
        // in 7-byte pieces (every read waits for more).
        for chunk in [wire.len(), 7] {
            let c = tcp_client(&addr);
            let mut writer = c.try_clone().unwrap();
            let wire = wire.clone();
            let sending = thread::spawn(move || {
                for piece in wire.chunks(chunk) {
                    writer.write_all(piece).unwrap();
                }
                writer.shutdown(Shutdown::Write).unwrap();
            });
            let mut got = Vec::new();
            BufReader::new(c).read_to_end(&mut got).unwrap();
            sending.join().unwrap();
            assert!(got == expected, "replies in {chunk}-byte pieces");
        }
    });
    running.stop();
}

#[test]
fn a_prompt_is_flushed_before_the_handler_blocks_reading_the_answer() {
    let running = start(|req: &mut StreamRequest| {
        loop {
            req.wfile().write_all(b"name? ")?; // buffered, no newline
            let mut name = String::new();
            if req.rfile().read_line(&mut name)? == 0 {
                return Ok(());
            }
            writeln!(req.wfile(), "hello {}", name.trim_end())?;
        }
    });
    let addr = running.address.clone();
    within(DEADLINE, "prompt and answer", move || {
        let mut c = BufReader::new(tcp_client(&addr));
        for name in ["ada", "grace"] {
            // Without the flush this read times out: a deadlock.
            let mut prompt = [0u8; 6];
            c.read_exact(&mut prompt).unwrap();
            assert_eq!(&prompt, b"name? ");
            writeln!(c.get_mut(), "{name}").unwrap();
            let mut reply = String::new();
            c.read_line(&mut reply).unwrap();
            assert_eq!(reply, format!("hello {name}\n"));
        }
    });
    running.stop();
}

/// Writes in `handle` and in `finish`; nothing flushes explicitly.
struct Bye;

impl StreamHandler for Bye {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        req.wfile().write_all(b"hello, ")
    }
    fn finish(&self, req: &mut StreamRequest) -> io::Result<()> {
        req.wfile().write_all(b"bye\n")
    }
}

#[test]
fn output_written_in_finish_is_flushed() {
    let running = start(Bye);
    let addr = running.address.clone();
    let got = within(DEADLINE, "read to EOF", move || {
        let mut got = String::new();
        tcp_client(&addr).read_to_string(&mut got).unwrap();
        got
    });
    assert_eq!(got, "hello, bye\n");
    running.stop();
}

#[test]
fn echo_returns_the_byte_count_including_buffered_input() {
    let (tx, counts) = mpsc::channel();
    let tx = Mutex::new(tx);
    let running = start(move |req: &mut StreamRequest| {
        let mut first = String::new();
        req.read_line(&mut first)?;
        req.write_all(first.to_uppercase().as_bytes())?;
        // Whatever came with the first line sits in the buffer: echoed too.
        let n = req.echo()?;
        tx.lock().send(n).unwrap();
        Ok(())
    });
    let addr = running.address.clone();
    let body = pattern(300_000);
    let sent = body.len() as u64;
    let got = within(DEADLINE, "echo", move || {
        let c = tcp_client(&addr);
        let mut writer = c.try_clone().unwrap();
        let sending = thread::spawn(move || {
            let mut first = b"first line\n".to_vec();
            first.extend_from_slice(&body[..1000]); // in the same write
            writer.write_all(&first).unwrap();
            writer.write_all(&body[1000..]).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        BufReader::new(c).read_to_end(&mut got).unwrap();
        sending.join().unwrap();
        got
    });
    let mut expected = b"FIRST LINE\n".to_vec();
    expected.extend_from_slice(&pattern(300_000));
    assert!(
        got == expected,
        "the reply is the first line, then the echo"
    );
    let n = counts.recv_timeout(DEADLINE).unwrap();
    assert_eq!(n, sent, "echo() counts every byte it echoed");
    running.stop();
}

#[test]
fn binary_data_round_trips_through_rfile_and_wfile() {
    // Copies through the buffered reader and writer, not `echo`.
    let running = start(|req: &mut StreamRequest| {
        let mut buf = [0u8; 3000];
        loop {
            let n = req.rfile().read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            req.wfile().write_all(&buf[..n])?;
        }
    });
    let addr = running.address.clone();
    within(DEADLINE, "1 MiB of binary data", move || {
        let data = pattern(1 << 20);
        assert!((0..=255u8).all(|b| data.contains(&b)));
        let c = tcp_client(&addr);
        let mut writer = c.try_clone().unwrap();
        let sent = data.clone();
        let sending = thread::spawn(move || {
            // Odd piece sizes, crossing the 8 KiB buffer boundaries.
            for piece in sent.chunks(12_345) {
                writer.write_all(piece).unwrap();
            }
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        BufReader::new(c).read_to_end(&mut got).unwrap();
        sending.join().unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "every byte comes back unchanged");
    });
    running.stop();
}

#[test]
fn writes_of_mixed_sizes_arrive_in_order() {
    // Sizes from 1 byte to well over the 8 KiB buffer, interleaved.
    let sizes: Vec<usize> = (0..400).map(|i| (i * 7919) % 20_000 + 1).collect();
    let total: usize = sizes.iter().sum();
    let running = start(move |req: &mut StreamRequest| {
        let data = pattern(total);
        let mut at = 0;
        for &n in &sizes {
            req.wfile().write_all(&data[at..at + n])?;
            at += n;
        }
        Ok(())
    });
    let addr = running.address.clone();
    within(DEADLINE, "mixed writes", move || {
        let mut got = Vec::new();
        tcp_client(&addr).read_to_end(&mut got).unwrap();
        assert!(got == pattern(total), "{total} bytes in order");
    });
    running.stop();
}
