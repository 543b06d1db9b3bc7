//! Integration tests for `socketserver::framing`: round trips, truncation at every
//! byte, hostile headers, partial writes, random input (proptest), JSON helpers,
//! and interop with a real Python peer using `struct.pack('i', n)`.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use socketserver::framing::{self, Framing, Header, DEFAULT_MAX_FRAME_SIZE};

const ALL_HEADERS: [Header; 4] = [Header::U32Be, Header::I32Le, Header::U16Be, Header::U64Be];

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn encode(framing: Framing, payloads: &[&[u8]]) -> Vec<u8> {
    let mut wire = Vec::new();
    for p in payloads {
        framing.write_frame(&mut wire, p).unwrap();
    }
    wire
}

/// A reader that hands out at most `sizes[i]` bytes per call, cycling through `sizes`.
struct ChunkedReader<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    call: usize,
}

impl Read for ChunkedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let limit = self.sizes[self.call % self.sizes.len()].max(1);
        self.call += 1;
        let n = limit.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A writer that accepts at most `sizes[i]` bytes per call (across all slices of a
/// vectored write), cycling through `sizes`, and fails with `Interrupted` every
/// `interrupt_every` calls if that is non-zero.
#[derive(Default)]
struct ChunkedWriter {
    out: Vec<u8>,
    sizes: Vec<usize>,
    interrupt_every: usize,
    calls: usize,
    vectored_calls: usize,
}

impl ChunkedWriter {
    fn new(sizes: Vec<usize>, interrupt_every: usize) -> Self {
        ChunkedWriter {
            sizes,
            interrupt_every,
            ..Default::default()
        }
    }

    fn budget(&mut self) -> io::Result<usize> {
        self.calls += 1;
        if self.interrupt_every != 0 && self.calls.is_multiple_of(self.interrupt_every) {
            return Err(io::Error::new(ErrorKind::Interrupted, "interrupted"));
        }
        Ok(self.sizes[self.calls % self.sizes.len()].max(1))
    }
}

impl Write for ChunkedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.budget()?.min(buf.len());
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.vectored_calls += 1;
        let mut budget = self.budget()?;
        let mut written = 0;
        for b in bufs {
            let n = budget.min(b.len());
            self.out.extend_from_slice(&b[..n]);
            written += n;
            budget -= n;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that counts the bytes it has handed out.
struct CountingReader<R> {
    inner: R,
    count: usize,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n;
        Ok(n)
    }
}

#[test]
fn round_trip_at_boundary_sizes_for_every_header() {
    let framing_default = Framing::new();
    assert_eq!(framing_default.max_frame_size(), DEFAULT_MAX_FRAME_SIZE);
    for header in ALL_HEADERS {
        let framing = Framing::new().with_header(header);
        for size in [0, 1, 65_535, DEFAULT_MAX_FRAME_SIZE] {
            if size as u64 > header.max_payload() {
                continue;
            }
            let payload = pattern(size);
            let mut wire = Vec::new();
            framing.write_frame(&mut wire, &payload).unwrap();
            assert_eq!(wire.len(), header.width() + size, "{header:?} {size}");
            let mut input = &wire[..];
            let got = framing.read_frame(&mut input).unwrap();
            assert!(got.as_deref() == Some(&payload[..]), "{header:?} {size}");
            assert_eq!(framing.read_frame(&mut input).unwrap(), None);
        }
    }
}

#[test]
fn header_layouts_match_their_names() {
    let payload = pattern(258); // 258 = 0x0102
    let expected: [(Header, &[u8]); 4] = [
        (Header::U32Be, &[0, 0, 1, 2]),
        (Header::I32Le, &[2, 1, 0, 0]),
        (Header::U16Be, &[1, 2]),
        (Header::U64Be, &[0, 0, 0, 0, 0, 0, 1, 2]),
    ];
    for (header, head) in expected {
        let wire = encode(Framing::new().with_header(header), &[&payload]);
        assert_eq!(&wire[..head.len()], head, "{header:?}");
        assert_eq!(&wire[head.len()..], &payload[..]);
    }
}

#[test]
fn free_functions_use_the_default_framing() {
    assert_eq!(Framing::default(), Framing::new());
    assert_eq!(Framing::new().header(), Header::U32Be);
    assert_eq!(Header::default(), Header::U32Be);
    let mut wire = Vec::new();
    framing::write_frame(&mut wire, b"abc").unwrap();
    assert_eq!(wire, b"\0\0\0\x03abc");
    let mut input = &wire[..];
    assert_eq!(
        framing::read_frame(&mut input).unwrap(),
        Some(b"abc".to_vec())
    );
    assert_eq!(framing::read_frame(&mut input).unwrap(), None);
}

#[test]
fn every_truncation_point_is_a_clean_error() {
    let payload = b"0123456789";
    for header in ALL_HEADERS {
        let framing = Framing::new().with_header(header);
        let wire = encode(framing, &[payload]);
        let width = header.width();
        for cut in 0..wire.len() {
            let result = framing.read_frame(&mut &wire[..cut]);
            if cut == 0 {
                assert_eq!(result.unwrap(), None, "{header:?}: empty stream");
                continue;
            }
            let err = result.expect_err("a truncated frame must be an error");
            assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{header:?} cut {cut}");
            let msg = err.to_string();
            if cut < width {
                assert_eq!(
                    msg,
                    format!("truncated frame header: got {cut} of {width} header bytes")
                );
            } else {
                let got = cut - width;
                assert_eq!(
                    msg,
                    format!("truncated frame: got {got} of 10 payload bytes")
                );
            }
        }
        let mut whole = &wire[..];
        assert_eq!(
            framing.read_frame(&mut whole).unwrap(),
            Some(payload.to_vec())
        );
        assert_eq!(framing.read_frame(&mut whole).unwrap(), None);
    }
}

/// Reads one frame through a counting reader; returns the error, the bytes
/// consumed and the capacity the buffer ended with.
fn read_hostile(framing: Framing, wire: &[u8]) -> (io::Error, usize, usize) {
    let mut reader = CountingReader {
        inner: wire,
        count: 0,
    };
    let mut buf = Vec::new();
    let start = Instant::now();
    let err = framing
        .read_frame_into(&mut reader, &mut buf)
        .expect_err("hostile frame must be refused");
    assert!(start.elapsed() < Duration::from_secs(2), "took too long");
    assert!(buf.is_empty(), "buffer must be left empty on error");
    (err, reader.count, buf.capacity())
}

#[test]
fn hostile_lengths_are_refused_before_reading_the_payload() {
    let junk = vec![0xAA; 1000];
    let with_junk = |head: &[u8]| [head, &junk[..]].concat();

    // 2^31 - 1 under the default 16 MiB maximum.
    let (err, consumed, cap) = read_hostile(Framing::new(), &with_junk(&[0x7f, 0xff, 0xff, 0xff]));
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert_eq!(
        err.to_string(),
        "frame of 2147483647 bytes exceeds the maximum of 16777216"
    );
    assert_eq!((consumed, cap), (4, 0));

    // Negative lengths in a Python-style header.
    let python = Framing::new().with_header(Header::I32Le);
    for n in [-1i32, i32::MIN] {
        let (err, consumed, cap) = read_hostile(python, &with_junk(&n.to_le_bytes()));
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert_eq!(
            err.to_string(),
            format!("negative frame length {n} in an I32Le header")
        );
        assert_eq!((consumed, cap), (4, 0));
    }

    // One byte over a configured maximum, for each header kind.
    for header in ALL_HEADERS {
        let framing = Framing::new().with_header(header).with_max_frame_size(100);
        let head = encode(Framing::new().with_header(header), &[&[0; 101]]);
        let (err, consumed, cap) = read_hostile(framing, &head);
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{header:?}");
        assert_eq!(
            err.to_string(),
            "frame of 101 bytes exceeds the maximum of 100"
        );
        assert_eq!((consumed, cap), (header.width(), 0), "{header:?}");
    }

    // The largest 8-byte header.
    let (err, consumed, _) = read_hostile(
        Framing::new().with_header(Header::U64Be),
        &with_junk(&[0xff; 8]),
    );
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(err
        .to_string()
        .starts_with("frame of 18446744073709551615 bytes exceeds"));
    assert_eq!(consumed, 8);
}

#[test]
fn huge_announced_lengths_allocate_only_what_arrives() {
    // Even with no practical maximum, a 2 GiB announcement followed by 10 bytes
    // must not allocate 2 GiB.
    let unlimited = Framing::new().with_max_frame_size(usize::MAX);
    let wire = [&[0x7f, 0xff, 0xff, 0xff][..], b"0123456789"].concat();
    let (err, consumed, cap) = read_hostile(unlimited, &wire);
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(
        err.to_string(),
        "truncated frame: got 10 of 2147483647 payload bytes"
    );
    assert_eq!(consumed, 14);
    assert!(cap <= 64 * 1024, "capacity {cap} after 10 bytes");

    // 1 MiB really sent: the buffer grows with the data, at most doubling.
    let mib = 1 << 20;
    let wire = [&[0x7f, 0xff, 0xff, 0xff][..], &pattern(mib)].concat();
    let (err, consumed, cap) = read_hostile(unlimited, &wire);
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(consumed, 4 + mib);
    assert!(cap <= 2 * mib + 64 * 1024, "capacity {cap} after 1 MiB");

    // Same with an 8-byte header announcing a terabyte.
    let u64be = unlimited.with_header(Header::U64Be);
    let wire = [&(1u64 << 40).to_be_bytes()[..], b"abc"].concat();
    let (err, _, cap) = read_hostile(u64be, &wire);
    assert_eq!(
        err.to_string(),
        "truncated frame: got 3 of 1099511627776 payload bytes"
    );
    assert!(cap <= 64 * 1024);
}

#[test]
fn buffer_never_grows_beyond_the_announced_size() {
    let framing = Framing::new();
    let mut buf = Vec::new();
    for size in [1, 100, 65_537, 200_000] {
        let wire = encode(framing, &[&pattern(size)]);
        let mut fresh = Vec::new();
        assert!(framing.read_frame_into(&mut &wire[..], &mut fresh).unwrap());
        assert_eq!(fresh.capacity(), size, "fresh buffer for {size} bytes");
        // A reused buffer keeps its allocation.
        assert!(framing.read_frame_into(&mut &wire[..], &mut buf).unwrap());
        assert_eq!(buf, pattern(size));
    }
}

#[test]
fn oversized_writes_are_refused_and_write_nothing() {
    let small = Framing::new().with_max_frame_size(10);
    let mut wire = Vec::new();
    small.write_frame(&mut wire, &[0; 10]).unwrap();
    wire.clear();
    let err = small.write_frame(&mut wire, &[0; 11]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "frame of 11 bytes exceeds the maximum of 10"
    );
    assert!(wire.is_empty());

    // The header's own limit applies whatever the maximum.
    let u16be = Framing::new().with_header(Header::U16Be);
    let err = u16be.write_frame(&mut wire, &vec![0; 65_536]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "frame of 65536 bytes does not fit a U16Be header (at most 65535 bytes)"
    );
    assert!(wire.is_empty());
}

#[test]
fn header_and_payload_go_out_in_one_vectored_write() {
    for size in [0, 1, 1000, 100_000] {
        let mut w = ChunkedWriter::new(vec![usize::MAX], 0);
        framing::write_frame(&mut w, &pattern(size)).unwrap();
        assert_eq!(w.calls, 1, "one call for a {size}-byte frame");
        assert_eq!(w.vectored_calls, 1);
        assert_eq!(w.out, encode(Framing::new(), &[&pattern(size)]));
    }
}

#[test]
fn partial_and_interrupted_writes_still_produce_correct_frames() {
    let chunkings: [&[usize]; 6] = [&[1], &[1, 2, 3], &[3, 1], &[5], &[4, 7, 1], &[5000, 1]];
    for header in ALL_HEADERS {
        let framing = Framing::new().with_header(header);
        for size in [0, 1, 3, 100, 70_000] {
            if size as u64 > header.max_payload() {
                continue;
            }
            let payload = pattern(size);
            let expected = encode(framing, &[&payload, b"next"]);
            for sizes in chunkings {
                for interrupt_every in [0, 3] {
                    let mut w = ChunkedWriter::new(sizes.to_vec(), interrupt_every);
                    framing.write_frame(&mut w, &payload).unwrap();
                    framing.write_frame(&mut w, b"next").unwrap();
                    assert!(
                        w.out == expected,
                        "{header:?} size {size} chunks {sizes:?} interrupt {interrupt_every}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_writer_that_stops_accepting_is_an_error() {
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Ok(0)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let err = framing::write_frame(&mut Full, b"data").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WriteZero);
}

#[test]
fn read_frame_into_reads_a_sequence_and_reuses_the_buffer() {
    let framing = Framing::new().with_header(Header::U16Be);
    let wire = encode(framing, &[b"one", b"", b"three"]);
    let mut input = &wire[..];
    let mut buf = b"stale".to_vec();
    let mut frames = Vec::new();
    while framing.read_frame_into(&mut input, &mut buf).unwrap() {
        frames.push(buf.clone());
    }
    assert_eq!(frames, [&b"one"[..], b"", b"three"]);
    assert!(buf.is_empty());
}

#[test]
fn json_frames_round_trip() {
    let put = BTreeMap::from([("op", "put"), ("name", "notes.txt"), ("sha256", "ab12")]);
    let tuple = ("hello".to_string(), 42u64, true, vec![1.5f64, -2.0]);
    let mut wire = Vec::new();
    framing::write_json(&mut wire, &put).unwrap();
    framing::write_json(&mut wire, &tuple).unwrap();
    let mut input = &wire[..];

    let back: BTreeMap<String, String> = framing::read_json(&mut input).unwrap().unwrap();
    assert_eq!(back["op"], "put");
    assert_eq!(back["name"], "notes.txt");
    let back: (String, u64, bool, Vec<f64>) = framing::read_json(&mut input).unwrap().unwrap();
    assert_eq!(back, tuple);
    let end: Option<BTreeMap<String, String>> = framing::read_json(&mut input).unwrap();
    assert!(end.is_none());

    // With a non-default framing, the header kind is honoured.
    let python = Framing::new().with_header(Header::I32Le);
    let mut wire = Vec::new();
    python.write_json(&mut wire, &[1, 2, 3]).unwrap();
    assert_eq!(wire, b"\x07\0\0\0[1,2,3]");
    let back: Vec<i32> = python.read_json(&mut &wire[..]).unwrap().unwrap();
    assert_eq!(back, [1, 2, 3]);
}

#[test]
fn bad_json_is_invalid_data_with_serdes_message() {
    for bad in [&b"{not json"[..], b"", b"[1,2]", b"{\"op\":1}", b"\xff"] {
        let mut wire = Vec::new();
        framing::write_frame(&mut wire, bad).unwrap();
        let err = framing::read_json::<_, BTreeMap<String, String>>(&mut &wire[..]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{bad:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("invalid JSON frame: "), "{msg}");
        assert!(
            msg.contains("line 1 column"),
            "serde's position missing: {msg}"
        );
    }
    // A value JSON cannot represent is refused on the way out.
    let mut wire = Vec::new();
    let err = framing::write_json(&mut wire, &BTreeMap::from([((1, 2), 3)])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("key must be a string"), "{err}");
    assert!(wire.is_empty());
}

#[test]
fn json_header_then_raw_bytes_like_a_file_upload() {
    let body = pattern(100_000);
    let mut wire = Vec::new();
    let header = BTreeMap::from([("op", "put"), ("name", "a.bin")]);
    framing::write_json(&mut wire, &header).unwrap();
    framing::copy_exact(&mut &body[..], &mut wire, body.len() as u64).unwrap();
    framing::write_json(&mut wire, &BTreeMap::from([("op", "list")])).unwrap();

    let mut input = ChunkedReader {
        data: &wire,
        sizes: vec![7, 1, 4096],
        call: 0,
    };
    let got: BTreeMap<String, String> = framing::read_json(&mut input).unwrap().unwrap();
    assert_eq!(got["name"], "a.bin");
    let mut file = Vec::new();
    framing::copy_exact(&mut input, &mut file, body.len() as u64).unwrap();
    assert!(file == body);
    let next: BTreeMap<String, String> = framing::read_json(&mut input).unwrap().unwrap();
    assert_eq!(next["op"], "list");
}

#[test]
fn copy_exact_stops_at_n_and_reports_short_streams() {
    let mut input = &b"0123456789abc"[..];
    let mut out = Vec::new();
    framing::copy_exact(&mut input, &mut out, 10).unwrap();
    assert_eq!(out, b"0123456789");
    assert_eq!(input, b"abc");

    framing::copy_exact(&mut input, &mut out, 0).unwrap();
    let err = framing::copy_exact(&mut input, &mut io::sink(), 100).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(err.to_string(), "stream ended after 3 of 100 bytes");
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_reader(
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        header_index in 0usize..4,
        max in prop_oneof![Just(0usize), 0usize..4096, Just(usize::MAX)],
    ) {
        let framing = Framing::new().with_header(ALL_HEADERS[header_index]).with_max_frame_size(max);
        let mut input = &data[..];
        let mut buf = Vec::new();
        // Each successful read consumes at least one byte, so this ends.
        while let Ok(true) = framing.read_frame_into(&mut input, &mut buf) {
            prop_assert!(buf.len() <= max);
        }
        prop_assert!(buf.capacity() <= data.len().max(64 * 1024));
    }

    #[test]
    fn arbitrary_payloads_survive_arbitrary_chunking(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 0..8),
        read_sizes in proptest::collection::vec(1usize..64, 1..8),
        write_sizes in proptest::collection::vec(1usize..64, 1..8),
        header_index in 0usize..4,
    ) {
        let framing = Framing::new().with_header(ALL_HEADERS[header_index]);
        let mut w = ChunkedWriter::new(write_sizes, 5);
        for p in &payloads {
            framing.write_frame(&mut w, p).unwrap();
        }
        let mut r = ChunkedReader { data: &w.out, sizes: read_sizes, call: 0 };
        for p in &payloads {
            prop_assert_eq!(framing.read_frame(&mut r).unwrap(), Some(p.clone()));
        }
        prop_assert_eq!(framing.read_frame(&mut r).unwrap(), None);
    }
}

// --- Interop with Python's struct.pack('i', n) ---------------------------------

/// The Python peer: sends each message as `struct.pack('i', len) + data`, reads the
/// reply the same way and checks that it is the message reversed.
const PYTHON_PEER: &str = r#"
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)

def recv_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            sys.exit("rust side closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf

messages = [b"", b"hello", "h\u00e9llo w\u00f6rld".encode(), bytes(range(256)) * 400]
for m in messages:
    s.sendall(struct.pack("i", len(m)) + m)
    (n,) = struct.unpack("i", recv_exact(4))
    reply = recv_exact(n)
    if reply != m[::-1]:
        sys.exit("bad reply to a %d-byte message: %r" % (len(m), reply[:32]))
s.close()
print("python peer done")
"#;

const DEADLINE: Duration = Duration::from_secs(20);

/// Waits for the child until the deadline, killing it then; returns its status
/// and what it wrote on stdout and stderr.
fn finish(mut child: Child, deadline: Instant) -> (ExitStatus, String) {
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut output = String::new();
    for pipe in [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut pipe = pipe;
        let _ = pipe.read_to_string(&mut output);
    }
    (status, output)
}

#[test]
fn python_struct_pack_i_peer_interoperates() {
    if !socketserver_tests::python3_available("python_struct_pack_i_peer_interoperates") {
        return;
    }
    let deadline = Instant::now() + DEADLINE;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut child = match Command::new("python3")
        .arg("-c")
        .arg(PYTHON_PEER)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("cannot start python3: {e}"),
    };

    // Accept with a deadline, noticing a Python peer that died early.
    listener.set_nonblocking(true).unwrap();
    let mut conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let exited = child.try_wait().unwrap().is_some();
                if exited || Instant::now() > deadline {
                    let (status, output) = finish(child, deadline);
                    panic!("python peer never connected ({status}):\n{output}");
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    let python = Framing::new().with_header(Header::I32Le);
    let mut served = 0;
    let result = (|| -> io::Result<()> {
        while let Some(mut msg) = python.read_frame(&mut conn)? {
            msg.reverse();
            python.write_frame(&mut conn, &msg)?;
            served += 1;
        }
        Ok(())
    })();
    drop(conn);
    let (status, output) = finish(child, deadline);
    if let Err(e) = result {
        panic!("rust side failed after {served} frames: {e}\npython ({status}):\n{output}");
    }
    assert!(status.success(), "python peer failed ({status}):\n{output}");
    assert_eq!(served, 4, "python output:\n{output}");
    assert!(output.contains("python peer done"), "{output}");
}

/// Starts the Python peer against `port` (the caller checked that python3
/// runs).
fn spawn_python_peer(port: u16) -> Child {
    match Command::new("python3")
        .arg("-c")
        .arg(PYTHON_PEER)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("cannot start python3: {e}"),
    }
}

/// A frame server built the way a user would: a `StreamHandler` on a real
/// `socketserver` server, reading `struct.pack('i', n)` frames
/// ([`Header::I32Le`]) and answering each with its payload reversed.
struct ReverseFrames {
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl socketserver::StreamHandler for ReverseFrames {
    fn handle(&self, req: &mut socketserver::StreamRequest) -> io::Result<()> {
        req.stream()
            .set_read_timeout(Some(Duration::from_secs(5)))?;
        let python = Framing::new().with_header(Header::I32Le);
        while let Some(mut msg) = python.read_frame(req)? {
            msg.reverse();
            python.write_frame(req, &msg)?;
            req.flush()?;
            self.served
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }
}

#[test]
fn python_struct_pack_i_client_talks_to_a_socketserver_frame_server() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    if !socketserver_tests::python3_available(
        "python_struct_pack_i_client_talks_to_a_socketserver_frame_server",
    ) {
        return;
    }

    let deadline = Instant::now() + DEADLINE;
    let served = Arc::new(AtomicUsize::new(0));
    let server = socketserver::ThreadingTcpServer::bind(
        "127.0.0.1:0",
        ReverseFrames {
            served: served.clone(),
        },
    )
    .unwrap();
    let running = socketserver_tests::Running::start(server);
    let port = running.address.as_inet().unwrap().port();
    let (status, output) = finish(spawn_python_peer(port), deadline);
    running.stop();
    assert!(status.success(), "python peer failed ({status}):\n{output}");
    assert!(output.contains("python peer done"), "{output}");
    assert_eq!(served.load(Ordering::SeqCst), 4, "python output:\n{output}");
}
