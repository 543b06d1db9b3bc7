//! One session's state (its directory) and the `cd` builtin that changes
//! it: which command lines count as `cd`, and where they go.

use std::io;
use std::path::{Path, PathBuf};

use super::protocol::Reply;

/// One session's state: its directory and the one before (`cd -`).
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) dir: PathBuf,
    previous: Option<PathBuf>,
}

impl Session {
    pub(crate) fn new(dir: PathBuf) -> Session {
        Session {
            dir,
            previous: None,
        }
    }

    /// The `cd` builtin: exit code 0 (with the new directory on stdout for
    /// `cd -`, as a shell does) or 1 with the reason on stderr.
    pub(crate) fn cd(&mut self, request: Result<CdTarget, String>, start: &Path) -> Reply {
        let target = match request {
            Ok(t) => t,
            Err(why) => return Reply::failure(1, format!("cd: {why}")),
        };
        let home = || {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| start.to_path_buf())
        };
        let (shown, path, print) = match target {
            CdTarget::Home => ("~".to_owned(), home(), false),
            CdTarget::Previous => match &self.previous {
                Some(p) => ("-".to_owned(), p.clone(), true),
                None => return Reply::failure(1, "cd: no previous directory".into()),
            },
            CdTarget::Path(p) => {
                let expanded = match p.strip_prefix('~') {
                    Some("") => home(),
                    Some(rest) if rest.starts_with('/') => {
                        home().join(rest.trim_start_matches('/'))
                    }
                    _ => PathBuf::from(&p),
                };
                (p, self.dir.join(expanded), false)
            }
        };
        let resolved = match std::fs::canonicalize(&path) {
            Ok(r) => r,
            Err(e) => return Reply::failure(1, format!("cd: {shown}: {}", os_message(&e))),
        };
        if !resolved.is_dir() {
            return Reply::failure(1, format!("cd: {shown}: Not a directory"));
        }
        self.previous = Some(std::mem::replace(&mut self.dir, resolved));
        let stdout = if print {
            let mut s = self.dir.as_os_str().as_encoded_bytes().to_vec();
            s.push(b'\n');
            s
        } else {
            Vec::new()
        };
        Reply::new(Some(0), stdout, Vec::new(), false, false)
    }
}

/// An I/O error's message without the ` (os error N)` tail.
fn os_message(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Where a `cd` builtin goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdTarget {
    /// `cd` alone: `HOME` (or the start directory if `HOME` is unset).
    Home,
    /// `cd -`: the directory before the last `cd`.
    Previous,
    /// `cd PATH`, relative to the session's directory; a leading `~` is
    /// `HOME`.
    Path(String),
}

/// Whether `line` is the session's `cd` builtin, and where it goes.
///
/// A line is the builtin when its first word is `cd` and it holds no
/// command separator or redirection (`;`, `&`, `|`, `<`, `>`, `(`, `)`,
/// newline) outside quotes: `cd /tmp`, `cd 'my dir'`, `cd "a b"`,
/// `cd a\ b`, `cd ~/src`, `cd -`, `cd`. Such a line never reaches the
/// shell. `Some(Err(..))` is a builtin that cannot be done: more than one
/// argument, or an expansion (`$`, backquote, `*`, `?`, `[`) that only a
/// shell could perform.
///
/// Other lines (`cd /tmp && ls`, `echo cd`) run in `/bin/sh`, where a `cd`
/// lasts only for that command.
///
/// ```
/// use demos::shell::{cd_request, CdTarget};
/// assert_eq!(cd_request("cd /tmp"), Some(Ok(CdTarget::Path("/tmp".into()))));
/// assert_eq!(cd_request("  cd  'my dir' "), Some(Ok(CdTarget::Path("my dir".into()))));
/// assert_eq!(cd_request("cd"), Some(Ok(CdTarget::Home)));
/// assert_eq!(cd_request("cd -"), Some(Ok(CdTarget::Previous)));
/// assert!(cd_request("cd a b").unwrap().is_err());
/// assert!(cd_request("cd $HOME").unwrap().is_err());
/// assert_eq!(cd_request("cd /tmp && ls"), None);
/// assert_eq!(cd_request("cdrom"), None);
/// ```
pub fn cd_request(line: &str) -> Option<Result<CdTarget, String>> {
    let rest = line.trim().strip_prefix("cd")?;
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None;
    }
    let words = match split_words(rest) {
        Words::Separator => return None,
        Words::Expansion(c) => {
            return Some(Err(format!(
                "{c:?}: the session's cd takes a plain path (no variables, substitutions or \
                 patterns)"
            )))
        }
        Words::Unterminated => return Some(Err("unterminated quote".into())),
        Words::Ok(w) => w,
    };
    Some(match words.as_slice() {
        [] => Ok(CdTarget::Home),
        [w] if w == "-" => Ok(CdTarget::Previous),
        [w] => Ok(CdTarget::Path(w.clone())),
        _ => Err("too many arguments".into()),
    })
}

enum Words {
    Ok(Vec<String>),
    Separator,
    Expansion(char),
    Unterminated,
}

/// Splits like a shell, without expansions: whitespace separates words;
/// `'...'` is literal; `"..."` is literal except `\"`, `\\`; `\x` is `x`.
fn split_words(s: &str) -> Words {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() && c != '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            ';' | '&' | '|' | '<' | '>' | '(' | ')' | '\n' => return Words::Separator,
            '$' | '`' | '*' | '?' | '[' => return Words::Expansion(c),
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Words::Unterminated,
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Words::Unterminated,
                        },
                        Some(c @ ('$' | '`')) => return Words::Expansion(c),
                        Some(c) => word.push(c),
                        None => return Words::Unterminated,
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Words::Unterminated,
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Words::Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cd_lines() {
        assert_eq!(
            cd_request(r"cd a\ b"),
            Some(Ok(CdTarget::Path("a b".into())))
        );
        assert_eq!(
            cd_request(r#"cd "x\"y""#),
            Some(Ok(CdTarget::Path("x\"y".into())))
        );
        assert_eq!(
            cd_request("cd\t/tmp"),
            Some(Ok(CdTarget::Path("/tmp".into())))
        );
        assert_eq!(cd_request("cd ~/x"), Some(Ok(CdTarget::Path("~/x".into()))));
        assert_eq!(cd_request("cd /tmp; ls"), None);
        assert_eq!(cd_request("cd /tmp | cat"), None);
        assert_eq!(cd_request("cd /tmp\nls"), None);
        assert_eq!(cd_request("echo cd"), None);
        assert!(cd_request("cd 'x").unwrap().is_err());
        assert!(cd_request("cd \"$HOME\"").unwrap().is_err());
        assert!(cd_request("cd *").unwrap().is_err());
        assert_eq!(
            cd_request("cd '$HOME'"),
            Some(Ok(CdTarget::Path("$HOME".into())))
        );
    }

    #[test]
    fn cd_changes_only_this_session() {
        let start = std::env::temp_dir();
        let mut a = Session::new(start.clone());
        let r = a.cd(Ok(CdTarget::Path("/".into())), &start);
        assert_eq!(r.header.exit_code, Some(0));
        assert_eq!(a.dir, Path::new("/"));
        let r = a.cd(Ok(CdTarget::Path("no-such-dir-here".into())), &start);
        assert_eq!(r.header.exit_code, Some(1));
        assert_eq!(
            String::from_utf8_lossy(&r.stderr),
            "cd: no-such-dir-here: No such file or directory\n"
        );
        assert_eq!(a.dir, Path::new("/"), "a failed cd changes nothing");
        let r = a.cd(Ok(CdTarget::Previous), &start);
        assert_eq!(r.header.exit_code, Some(0));
        assert_eq!(a.dir, start.canonicalize().unwrap());
        let r = a.cd(Ok(CdTarget::Path("/etc/passwd".into())), &start);
        assert_eq!(
            String::from_utf8_lossy(&r.stderr),
            "cd: /etc/passwd: Not a directory\n"
        );
    }
}
