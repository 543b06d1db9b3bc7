//! Text that reaches somebody's terminal: which characters can hide or
//! disguise what is shown, and how the demos keep them out.
//!
//! Three kinds of character let one party spoof text on another's screen:
//!
//! * **control characters** (C0, DEL, C1): `ESC [ ...` sequences recolour,
//!   move the cursor, clear the screen, set the window title;
//! * **invisible and bidirectional format characters** ([`is_hidden`]):
//!   zero-width spaces and joiners make `alice` and `alice\u{200b}` two
//!   names that look the same; U+202E (RIGHT-TO-LEFT OVERRIDE) shows
//!   `txt.exe` as `exe.txt`; line and paragraph separators start a line
//!   that looks like the server's;
//! * **lookalikes**: `аlice` with a Cyrillic `а`, `∕etc∕passwd` with
//!   U+2215 DIVISION SLASH, `．．` with FULLWIDTH FULL STOP.
//!
//! The servers refuse them in names (chat nicknames:
//! [`chat::check_nick`](crate::chat::check_nick); file names:
//! [`files::check_name`](crate::files::check_name)) and replace them in
//! relayed text ([`chat::clean`](crate::chat::clean)); the clients show
//! what a server sends through [`escape_for_terminal`], so that a hostile
//! server cannot drive the user's terminal either.

/// Whether `c` is an invisible or bidirectional format character: shown as
/// nothing (or as a break), yet it changes what text looks like or how two
/// strings compare. The bidirectional controls (U+061C, U+200E, U+200F,
/// U+202A-U+202E, U+2066-U+2069), the zero-width characters (U+200B-U+200D,
/// U+2060, U+FEFF), the other format characters of Unicode's category Cf
/// in common use (soft hyphen U+00AD, U+034F, U+180E, U+2061-U+2064,
/// U+206A-U+206F, U+FFF9-U+FFFB, the tag characters U+E0000-U+E007F), and
/// the line and paragraph separators U+2028 and U+2029.
///
/// ```
/// use demos::text::is_hidden;
/// assert!(is_hidden('\u{202e}') && is_hidden('\u{200b}') && is_hidden('\u{feff}'));
/// assert!(!is_hidden('a') && !is_hidden('é') && !is_hidden(' '));
/// ```
pub fn is_hidden(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{034f}'
            | '\u{061c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{e0000}'..='\u{e007f}'
    )
}

/// Whether `c` is a letter that renders as blank space although Unicode
/// calls it a letter (the Hangul fillers, U+2800 BRAILLE PATTERN BLANK):
/// a name made of them looks empty.
pub fn is_blank_letter(c: char) -> bool {
    matches!(
        c,
        '\u{115f}' | '\u{1160}' | '\u{2800}' | '\u{3164}' | '\u{ffa0}'
    )
}

/// Whether `c` may not be shown as it is on a terminal: a control
/// character (C0, DEL, C1) or a [hidden](is_hidden) one.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || is_hidden(c)
}

/// `U+202E`, the code point of `c`, for messages.
pub fn code_point(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// `s` safe to print on a terminal: every control character (but tab)
/// and every [hidden](is_hidden) character is shown as a visible escape
/// (`\u{1b}`, `\u{202e}`), so that a server's text can neither send
/// escape sequences to the user's terminal nor disguise itself. A line
/// end at the very end is kept.
///
/// ```
/// use demos::text::escape_for_terminal;
/// assert_eq!(escape_for_terminal("\x1b[2Jhi\n"), "\\u{1b}[2Jhi\n");
/// assert_eq!(escape_for_terminal("a\u{202e}txt.exe"), "a\\u{202e}txt.exe");
/// assert_eq!(escape_for_terminal("café\tok"), "café\tok");
/// ```
pub fn escape_for_terminal(s: &str) -> String {
    let (body, end) = match s.strip_suffix('\n') {
        Some(b) => (b, "\n"),
        None => (s, ""),
    };
    let mut out = String::with_capacity(s.len());
    for c in body.chars() {
        if c != '\t' && is_unsafe(c) {
            use std::fmt::Write as _;
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out.push_str(end);
    out
}

/// Which of the scripts most often confused with each other a letter
/// belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Basic Latin and the Latin supplements and extensions.
    Latin,
    /// Greek and Coptic, Greek Extended.
    Greek,
    /// Cyrillic and its supplement.
    Cyrillic,
}

/// The script of `c` among [`Script`]'s, if it is a letter of one of them.
pub fn script(c: char) -> Option<Script> {
    match c {
        'a'..='z' | 'A'..='Z' => Some(Script::Latin),
        '\u{00c0}'..='\u{024f}' | '\u{1e00}'..='\u{1eff}' if c.is_alphabetic() => {
            Some(Script::Latin)
        }
        '\u{0370}'..='\u{03ff}' | '\u{1f00}'..='\u{1fff}' if c.is_alphabetic() => {
            Some(Script::Greek)
        }
        '\u{0400}'..='\u{052f}' if c.is_alphabetic() => Some(Script::Cyrillic),
        _ => None,
    }
}

/// What a name looks like, for telling apart names a reader could mistake
/// for each other (a small part of Unicode's confusable skeletons, UTS
/// #39): lowercase; Cyrillic and Greek letters that look like Latin ones
/// become those; `0` is `o`; `1`, `I`, `|` and `i` are `l` (`i` too,
/// because it is `I` in capitals: otherwise `ALICE` would pass for a name
/// other than `alice`); `rn` is `m`, `vv` is `w`. Two names with the same
/// skeleton are the same name.
///
/// ```
/// use demos::text::skeleton;
/// assert_eq!(skeleton("Alice"), skeleton("alice"));
/// assert_eq!(skeleton("aIice"), skeleton("alice")); // capital I
/// assert_eq!(skeleton("ALICE"), skeleton("alice"));
/// assert_eq!(skeleton("alIce"), skeleton("alice"));
/// assert_eq!(skeleton("асе"), skeleton("ace")); // Cyrillic а с е
/// assert_eq!(skeleton("rnary"), skeleton("mary"));
/// assert_ne!(skeleton("bob"), skeleton("rob"));
/// ```
pub fn skeleton(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        // Capitals first: some look like Latin capitals only.
        let c = match c {
            'I' | '1' | '|' | 'ı' | 'Ι' | 'І' | 'Ӏ' | 'ӏ' => 'l',
            '0' | 'Ο' | 'ο' | 'О' | 'о' => 'o',
            'А' | 'Α' => 'a',
            'В' | 'Β' => 'b',
            'С' | 'Ϲ' => 'c',
            'Е' | 'Ε' => 'e',
            'Н' | 'Η' => 'h',
            'Ј' => 'j',
            'К' | 'Κ' => 'k',
            'М' | 'Μ' => 'm',
            'Ν' => 'n',
            'Р' | 'Ρ' => 'p',
            'Ѕ' => 's',
            'Т' | 'Τ' => 't',
            'Х' | 'Χ' => 'x',
            'Υ' | 'Ү' => 'y',
            'Ζ' => 'z',
            _ => c,
        };
        for lower in c.to_lowercase() {
            out.push(match lower {
                'а' | 'α' => 'a',
                'с' | 'ϲ' => 'c',
                'ԁ' => 'd',
                'е' => 'e',
                'һ' => 'h',
                // Lowercase i is I's, and I looks like l.
                'i' | 'і' | 'ι' => 'l',
                'ј' | 'ϳ' => 'j',
                'κ' => 'k',
                'р' | 'ρ' => 'p',
                'ԛ' => 'q',
                'ѕ' => 's',
                'υ' => 'u',
                'ν' | 'ѵ' => 'v',
                'ԝ' => 'w',
                'х' | 'χ' => 'x',
                'у' | 'γ' => 'y',
                other => other,
            });
        }
    }
    out.replace("rn", "m").replace("vv", "w")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_never_hides_a_lookalike() {
        for (a, b) in [
            ("ALICE", "alice"),
            ("alIce", "alice"),
            ("MIKE", "mike"),
            ("Mike", "mIke"),
            ("b1ll", "BILL"),
        ] {
            assert_eq!(skeleton(a), skeleton(b), "{a} / {b}");
        }
        assert_ne!(skeleton("alice"), skeleton("bob"));
    }

    #[test]
    fn hidden_and_unsafe_characters() {
        for c in [
            '\u{202a}',
            '\u{202b}',
            '\u{202c}',
            '\u{202d}',
            '\u{202e}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200e}',
            '\u{200f}',
            '\u{061c}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{2060}',
            '\u{feff}',
            '\u{2028}',
            '\u{2029}',
            '\u{e0041}',
        ] {
            assert!(is_hidden(c), "{}", code_point(c));
            assert!(is_unsafe(c));
        }
        for c in ['\x1b', '\x7f', '\u{9b}', '\0', '\r'] {
            assert!(is_unsafe(c), "{}", code_point(c));
        }
        for c in ['a', 'Z', '0', 'é', 'ж', '日', ' ', '\u{3000}'] {
            assert!(!is_unsafe(c), "{}", code_point(c));
        }
    }

    #[test]
    fn escapes_are_visible() {
        assert_eq!(escape_for_terminal("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape_for_terminal("a\r\nb\n"), "a\\u{d}\\u{a}b\n");
        assert_eq!(escape_for_terminal("x\u{2028}y"), "x\\u{2028}y");
    }

    #[test]
    fn scripts() {
        assert_eq!(script('a'), Some(Script::Latin));
        assert_eq!(script('é'), Some(Script::Latin));
        assert_eq!(script('а'), Some(Script::Cyrillic));
        assert_eq!(script('α'), Some(Script::Greek));
        assert_eq!(script('1'), None);
        assert_eq!(script('日'), None);
    }
}
