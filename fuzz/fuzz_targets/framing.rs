//! Length-prefixed frames under every header and a small maximum: reading
//! any bytes never panics, errors are `UnexpectedEof` or `InvalidData`, a
//! frame never exceeds the maximum, and every frame read, written again,
//! gives back the very bytes it was read from. The same bytes read as JSON
//! frames never panic either.
#![no_main]

use std::io::ErrorKind;

use libfuzzer_sys::fuzz_target;
use socketserver::framing::{Framing, Header};

const HEADERS: [Header; 4] = [Header::U32Be, Header::I32Le, Header::U16Be, Header::U64Be];

fuzz_target!(|data: &[u8]| {
    let Some((&choice, stream)) = data.split_first() else {
        return;
    };
    let max = [0, 1, 16, 300, 1 << 16][usize::from(choice >> 2) % 5];
    let framing = Framing::new()
        .with_header(HEADERS[usize::from(choice & 3)])
        .with_max_frame_size(max);
    let mut input = stream;
    let mut buf = Vec::new();
    loop {
        let before = input;
        match framing.read_frame_into(&mut input, &mut buf) {
            Ok(true) => {
                assert!(buf.len() <= max);
                let used = before.len() - input.len();
                let mut again = Vec::new();
                framing.write_frame(&mut again, &buf).unwrap();
                assert_eq!(again, before[..used]);
            }
            Ok(false) => {
                assert!(input.is_empty());
                break;
            }
            Err(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::InvalidData),
                    "{e:?}"
                );
                assert!(buf.is_empty(), "the buffer is left empty on error");
                break;
            }
        }
    }
    let mut input = stream;
    while let Ok(Some(_)) = framing.read_json::<_, serde_json::Value>(&mut input) {}
});
