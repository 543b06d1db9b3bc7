//! The guide has no broken link: every relative link and every `#anchor` in
//! README.md, CHANGELOG.md and docs/**/*.md resolves. Anchors are GitHub's
//! heading slugs (lower case, punctuation dropped, spaces to hyphens, `-1`,
//! `-2` ... for repeated headings) or an explicit `<a id="...">`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// The Markdown files the checker reads: the two at the root and every
/// `.md` under docs/.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.retain(|f| f.exists());
    files.sort();
    files
}

/// The lines of `text` outside fenced code blocks, with their numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = if trimmed.starts_with("```") {
            Some("```")
        } else if trimmed.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => out.push((n + 1, line)),
            _ => {}
        }
    }
    out
}

/// `line` with inline code spans removed (links inside them are examples).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + ticks..];
        let closing = "`".repeat(ticks);
        match after.find(&closing) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// GitHub's anchor for a heading's text: formatting marks dropped, lower
/// case, letters, digits, `-` and `_` kept, spaces turned into hyphens.
fn slug(heading: &str) -> String {
    let text = strip_inline_markup(heading);
    let mut s = String::new();
    for c in text.trim().chars() {
        if c.is_alphanumeric() || c == '-' || c == '_' {
            s.extend(c.to_lowercase());
        } else if c == ' ' {
            s.push('-');
        }
    }
    s
}

/// A heading's visible text: `[text](url)` becomes `text`, backticks and
/// emphasis marks go (GitHub slugs the rendered text).
fn strip_inline_markup(heading: &str) -> String {
    let mut out = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match (after.find("]("), after.find(']')) {
            (Some(close), Some(first)) if close == first => {
                out.push_str(&after[..close]);
                let tail = &after[close + 2..];
                rest = tail.find(')').map_or("", |p| &tail[p + 1..]);
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace(['`', '*'], "")
}

/// Every anchor a Markdown file offers: heading slugs (repeats numbered as
/// GitHub does) and explicit `id="..."` / `name="..."` attributes.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let trimmed = line.trim_start();
        if let Some(heading) = trimmed.strip_prefix('#') {
            let heading = heading.trim_start_matches('#');
            if heading.starts_with(' ') {
                let base = slug(heading.trim_end_matches('#'));
                let n = seen.entry(base.clone()).or_insert(0);
                out.insert(if *n == 0 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                });
                *n += 1;
            }
        }
        for attr in ["id=\"", "name=\""] {
            let mut rest = line;
            while let Some(p) = rest.find(attr) {
                let after = &rest[p + attr.len()..];
                if let Some(end) = after.find('"') {
                    out.insert(after[..end].to_string());
                }
                rest = after;
            }
        }
    }
    out
}

/// A link found in a file: its target and the line it is on.
#[derive(Debug)]
struct Link {
    line: usize,
    target: String,
}

/// Inline links `[text](target)` and `![alt](target)`, and HTML
/// `src="..."` / `href="..."`, outside code.
fn links(text: &str) -> Vec<Link> {
    let mut out = Vec::new();
    for (n, raw) in prose_lines(text) {
        let line = without_code_spans(raw);
        let mut rest = line.as_str();
        while let Some(p) = rest.find("](") {
            let after = &rest[p + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            out.push(Link {
                line: n,
                target: target.to_string(),
            });
            rest = &after[end..];
        }
        for attr in ["src=\"", "href=\""] {
            let mut rest = line.as_str();
            while let Some(p) = rest.find(attr) {
                let after = &rest[p + attr.len()..];
                if let Some(end) = after.find('"') {
                    out.push(Link {
                        line: n,
                        target: after[..end].to_string(),
                    });
                }
                rest = after;
            }
        }
    }
    out
}

/// `base/relative`, with `.` and `..` resolved lexically.
fn join(base: &Path, relative: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(relative).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every broken link of the files, as `file:line: target: why`.
fn broken_links(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut anchor_cache: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let text = fs::read_to_string(file).expect("a Markdown file");
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for link in links(&text) {
            let t = link.target.as_str();
            if t.is_empty()
                || t.contains("://")
                || t.starts_with("mailto:")
                || t.starts_with("data:")
            {
                continue;
            }
            let (path_part, anchor) = match t.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (t, None),
            };
            let target = if path_part.is_empty() {
                file.clone()
            } else {
                join(file.parent().expect("a file has a directory"), path_part)
            };
            if !target.exists() {
                problems.push(format!("{shown}:{}: {t}: no such file", link.line));
                continue;
            }
            if !target.starts_with(root) {
                problems.push(format!(
                    "{shown}:{}: {t}: outside the repository",
                    link.line
                ));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if target.extension().is_none_or(|e| e != "md") {
                problems.push(format!(
                    "{shown}:{}: {t}: an anchor into a file that is not Markdown",
                    link.line
                ));
                continue;
            }
            let offered = anchor_cache
                .entry(target.clone())
                .or_insert_with(|| anchors(&fs::read_to_string(&target).expect("a Markdown file")));
            if !offered.contains(anchor) {
                problems.push(format!("{shown}:{}: {t}: no such anchor", link.line));
            }
        }
    }
    problems
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let root = repo_root();
    let files = markdown_files(&root);
    assert!(
        files.len() >= 10,
        "expected README.md and the docs/ chapters, found {files:?}"
    );
    let problems = broken_links(&root, &files);
    assert!(
        problems.is_empty(),
        "{} broken link(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn slugs_follow_githubs_rules() {
    assert_eq!(
        slug(" Threading: a thread per connection"),
        "threading-a-thread-per-connection"
    );
    assert_eq!(
        slug(" `green::blocking`, `sleep` and `yield_now`"),
        "greenblocking-sleep-and-yield_now"
    );
    assert_eq!(
        slug(" PreFork vs. Forking (2.6-2.9x)"),
        "prefork-vs-forking-26-29x"
    );
    assert_eq!(
        slug(" See [the guide](README.md) first"),
        "see-the-guide-first"
    );
    let text = "# Title\n## Measured\n```\n# not a heading\n```\n## Measured\n<a id=\"tls\"></a>\n";
    let found = anchors(text);
    let want: BTreeSet<String> = ["title", "measured", "measured-1", "tls"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, want);
}

#[test]
fn the_checker_reports_a_missing_file_and_a_missing_anchor() {
    let dir = std::env::temp_dir().join(format!("doc-links-{}", std::process::id()));
    fs::create_dir_all(dir.join("docs")).expect("temp dir");
    fs::write(
        dir.join("docs/a.md"),
        "# A\n\nSee [b](b.md#there), [gone](gone.md), [self](#a), [bad](#nope), \
         `[in code](nowhere.md)`, [web](https://example.com/x.md).\n\n```\n[fenced](nowhere.md)\n```\n",
    )
    .expect("write a.md");
    fs::write(dir.join("docs/b.md"), "# B\n\n## There\n").expect("write b.md");
    let files = vec![dir.join("docs/a.md"), dir.join("docs/b.md")];
    let problems = broken_links(&dir, &files);
    fs::remove_dir_all(&dir).expect("remove temp dir");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("gone.md: no such file"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("#nope: no such anchor"),
        "{problems:?}"
    );
}
