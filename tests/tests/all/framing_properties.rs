//! Property tests of the framing headers (`socketserver::framing`): every
//! payload, under every header, goes out as exactly the header the format
//! says (checked against an encoding written here, not the library's) and
//! comes back equal; every truncation of a stream of frames is refused with
//! `UnexpectedEof` (or is a clean end at a frame boundary); every byte flip
//! is read or refused with an error, never a panic, and never yields a frame
//! over the maximum; lengths over the maximum or negative are refused before
//! any payload is read.

use std::io::{self, ErrorKind};

use proptest::collection::vec;
use proptest::prelude::*;
use socketserver::framing::{FrameError, Framing, Header};

const ALL_HEADERS: [Header; 4] = [Header::U32Be, Header::I32Le, Header::U16Be, Header::U64Be];

fn header() -> impl Strategy<Value = Header> {
    (0usize..4).prop_map(|i| ALL_HEADERS[i])
}

/// The header bytes for `len`, as the format defines them.
fn expected_header(header: Header, len: usize) -> Vec<u8> {
    match header {
        Header::U16Be => u16::try_from(len).unwrap().to_be_bytes().to_vec(),
        Header::U32Be => u32::try_from(len).unwrap().to_be_bytes().to_vec(),
        Header::I32Le => i32::try_from(len).unwrap().to_le_bytes().to_vec(),
        Header::U64Be => (len as u64).to_be_bytes().to_vec(),
    }
}

fn wire_of(framing: Framing, payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut wire = Vec::new();
    for p in payloads {
        framing.write_frame(&mut wire, p).unwrap();
    }
    wire
}

/// Reads frames until the end or an error; returns them and the error.
fn read_all(framing: Framing, mut input: &[u8]) -> (Vec<Vec<u8>>, Option<io::Error>) {
    let mut frames = Vec::new();
    loop {
        match framing.read_frame(&mut input) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_payload_goes_out_with_the_format_s_header_and_comes_back_equal(
        header in header(),
        payloads in vec(vec(any::<u8>(), 0..600), 0..6),
    ) {
        let framing = Framing::new().with_header(header);
        let wire = wire_of(framing, &payloads);
        let mut expected = Vec::new();
        for p in &payloads {
            expected.extend_from_slice(&expected_header(header, p.len()));
            expected.extend_from_slice(p);
        }
        prop_assert_eq!(&wire, &expected);
        let (frames, error) = read_all(framing, &wire);
        prop_assert!(error.is_none(), "{:?}", error);
        prop_assert_eq!(frames, payloads);
    }

    #[test]
    fn every_truncation_is_a_clean_end_at_a_boundary_or_unexpected_eof(
        header in header(),
        payloads in vec(vec(any::<u8>(), 0..64), 1..4),
    ) {
        let framing = Framing::new().with_header(header);
        let wire = wire_of(framing, &payloads);
        let mut boundaries = vec![0];
        for p in &payloads {
            boundaries.push(boundaries.last().unwrap() + header.width() + p.len());
        }
        for cut in 0..wire.len() {
            let (frames, error) = read_all(framing, &wire[..cut]);
            // The frames read are the whole ones before the cut, in order.
            let whole = boundaries.iter().filter(|&&b| b > 0 && b <= cut).count();
            prop_assert_eq!(&frames[..], &payloads[..whole]);
            if boundaries.contains(&cut) {
                prop_assert!(error.is_none(), "cut at a boundary ({}): {:?}", cut, error);
            } else {
                let kind = error.map(|e| e.kind());
                prop_assert_eq!(kind, Some(ErrorKind::UnexpectedEof), "cut at {}", cut);
            }
        }
    }

    #[test]
    fn every_byte_flip_is_read_or_refused_never_a_panic_nor_an_oversized_frame(
        header in header(),
        payloads in vec(vec(any::<u8>(), 0..48), 1..4),
        max in prop_oneof![Just(0usize), 1usize..64, Just(1 << 20)],
        mask in 1u8..=255,
    ) {
        let writer = Framing::new().with_header(header);
        let reader = writer.with_max_frame_size(max);
        let wire = wire_of(writer, &payloads);
        for i in 0..wire.len() {
            let mut flipped = wire.clone();
            flipped[i] ^= mask;
            let (frames, error) = read_all(reader, &flipped);
            prop_assert!(frames.iter().all(|f| f.len() <= max));
            if let Some(e) = error {
                prop_assert!(
                    matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::InvalidData),
                    "flip at {}: {:?}", i, e
                );
            }
        }
    }

    #[test]
    fn a_length_over_the_maximum_is_refused_before_reading_the_payload(
        header in header(),
        max in 0usize..1000,
        over in 1u64..1_000_000,
    ) {
        let announced = (max as u64 + over).min(header.max_payload());
        prop_assume!(announced > max as u64);
        let framing = Framing::new().with_header(header).with_max_frame_size(max);
        let mut wire = expected_header(header, usize::try_from(announced).unwrap());
        wire.extend_from_slice(b"the payload, never read");
        let mut input = &wire[..];
        let e = framing.read_frame(&mut input).unwrap_err();
        prop_assert_eq!(e.kind(), ErrorKind::InvalidData);
        let is_too_large = matches!(
            FrameError::of(&e),
            Some(FrameError::TooLarge { announced: a, max: m }) if *a == announced && *m == max
        );
        prop_assert!(is_too_large, "{:?}", e);
        prop_assert_eq!(input, &b"the payload, never read"[..]);
    }

    #[test]
    fn a_negative_i32le_length_is_refused(n in i32::MIN..0) {
        let mut wire = n.to_le_bytes().to_vec();
        wire.extend_from_slice(&[0; 16]);
        let e = Framing::new().with_header(Header::I32Le).read_frame(&mut &wire[..]).unwrap_err();
        prop_assert_eq!(e.kind(), ErrorKind::InvalidData);
        let is_negative = matches!(FrameError::of(&e), Some(FrameError::NegativeLength(m)) if *m == n);
        prop_assert!(is_negative, "{:?}", e);
    }

    #[test]
    fn a_payload_the_header_cannot_express_is_refused_and_nothing_written(extra in 1usize..64) {
        let framing = Framing::new().with_header(Header::U16Be);
        let payload = vec![7u8; usize::from(u16::MAX) + extra];
        let mut wire = Vec::new();
        let e = framing.write_frame(&mut wire, &payload).unwrap_err();
        prop_assert_eq!(e.kind(), ErrorKind::InvalidInput);
        prop_assert!(wire.is_empty());
    }
}
