//! `bench --html DIR`: one self-contained HTML page with the measured
//! results already in the guide: every report in `docs/bench/` (their
//! tables, text and charts) and the timelines of `docs/pictures/`. Images
//! are inlined as `data:` URIs, so the page needs no other file; nothing
//! is measured.
//!
//! The page's own script marks each image `data-loaded="yes"` (or
//! `"error"`) once the browser has decoded it, and when all are settled it
//! writes `N of M images loaded, T tables, E empty` into
//! `#report-status` and sets `data-ready` on `<html>`: what a headless
//! browser test reads back.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

/// The reports of `docs/bench/` in the order the page shows them (others
/// found there follow, by name).
const REPORTS: [&str; 6] = [
    "results.md",
    "green.md",
    "tls-prefork.md",
    "focused.md",
    "keep-alive.md",
    "microbench.md",
];

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Standard base64 (with padding) of `bytes`.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An `<img>` of the SVG file `path`, inlined, or a note when it cannot be
/// read.
fn image(path: &Path, alt: &str) -> String {
    match std::fs::read(path) {
        Ok(bytes) => format!(
            "<figure><img alt=\"{}\" src=\"data:image/svg+xml;base64,{}\"><figcaption>{}</figcaption></figure>\n",
            esc(alt),
            base64(&bytes),
            esc(alt)
        ),
        Err(e) => format!(
            "<p class=\"missing\">image {} not found: {}</p>\n",
            esc(&path.display().to_string()),
            esc(&e.to_string())
        ),
    }
}

/// Inline Markdown of one line: code spans, bold, links (their text; the
/// page stands alone), everything else escaped.
fn inline(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('`')
            && let Some(end) = after.find('`')
        {
            let _ = write!(out, "<code>{}</code>", esc(&after[..end]));
            rest = &after[end + 1..];
            continue;
        }
        if let Some(after) = rest.strip_prefix("**")
            && let Some(end) = after.find("**")
        {
            let _ = write!(out, "<b>{}</b>", inline(&after[..end]));
            rest = &after[end + 2..];
            continue;
        }
        if let Some(after) = rest.strip_prefix('[')
            && let Some(close) = after.find("](")
            && let Some(end) = after[close..].find(')')
        {
            let url = &after[close + 2..close + end];
            let text = inline(&after[..close]);
            if url.starts_with("http://") || url.starts_with("https://") {
                let _ = write!(out, "<a href=\"{}\">{text}</a>", esc(url));
            } else {
                out.push_str(&text);
            }
            rest = &after[close + end + 1..];
            continue;
        }
        let c = rest.chars().next().expect("rest is not empty");
        out.push_str(&esc(&c.to_string()));
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The cells of a Markdown table row (`\|` is a literal bar).
fn cells(line: &str) -> Vec<String> {
    let t = line.trim().trim_start_matches('|');
    let t = t.strip_suffix('|').unwrap_or(t);
    let mut out = vec![String::new()];
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().expect("one cell").push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            _ => out.last_mut().expect("one cell").push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

fn is_separator(line: &str) -> bool {
    let t = line.trim();
    t.starts_with('|') && t.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

/// The Markdown `text` of a file in `dir` as HTML: headings (shifted down
/// by `shift` levels), tables, fenced code, lists, images (inlined from
/// `dir`), paragraphs.
pub fn markdown(text: &str, dir: &Path, shift: usize) -> String {
    let mut out = String::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    let mut para: Vec<&str> = Vec::new();
    let flush = |para: &mut Vec<&str>, out: &mut String| {
        if !para.is_empty() {
            let _ = writeln!(out, "<p>{}</p>", inline(&para.join(" ")));
            para.clear();
        }
    };
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim();
        if t.starts_with("```") {
            flush(&mut para, &mut out);
            let mut code = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim().starts_with("```") {
                code.push(lines[i]);
                i += 1;
            }
            let _ = writeln!(out, "<pre><code>{}</code></pre>", esc(&code.join("\n")));
        } else if t.starts_with('#') && t.trim_start_matches('#').starts_with(' ') {
            flush(&mut para, &mut out);
            let level = (t.len() - t.trim_start_matches('#').len() + shift).min(6);
            let _ = writeln!(
                out,
                "<h{level}>{}</h{level}>",
                inline(t.trim_start_matches('#').trim())
            );
        } else if t.starts_with('|') {
            flush(&mut para, &mut out);
            let mut rows = Vec::new();
            while i < lines.len() && lines[i].trim().starts_with('|') {
                rows.push(lines[i]);
                i += 1;
            }
            out.push_str("<table>\n");
            let has_head = rows.len() > 1 && is_separator(rows[1]);
            if has_head {
                out.push_str("<thead><tr>");
                for c in cells(rows[0]) {
                    let _ = write!(out, "<th>{}</th>", inline(&c));
                }
                out.push_str("</tr></thead>\n");
            }
            out.push_str("<tbody>\n");
            for r in rows.iter().skip(if has_head { 2 } else { 0 }) {
                out.push_str("<tr>");
                for c in cells(r) {
                    let _ = write!(out, "<td>{}</td>", inline(&c));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</tbody></table>\n");
            continue;
        } else if let Some(img) = t.strip_prefix("![") {
            flush(&mut para, &mut out);
            if let Some((alt, rest)) = img.split_once("](") {
                let file = rest.trim_end_matches(')');
                out.push_str(&image(&dir.join(file), alt));
            }
        } else if t.starts_with("- ") || t.starts_with("* ") {
            flush(&mut para, &mut out);
            out.push_str("<ul>\n");
            while i < lines.len() {
                let l = lines[i].trim();
                if l.starts_with("- ") || l.starts_with("* ") {
                    let _ = writeln!(out, "<li>{}", inline(&l[2..]));
                } else if !l.is_empty() && lines[i].starts_with("  ") {
                    let _ = writeln!(out, "{}", inline(l));
                } else {
                    break;
                }
                i += 1;
            }
            out.push_str("</ul>\n");
            continue;
        } else if t.is_empty() {
            flush(&mut para, &mut out);
        } else {
            para.push(t);
        }
        i += 1;
    }
    flush(&mut para, &mut out);
    out
}

/// The script that marks images as loaded and reports when all are.
const SCRIPT: &str = r#"<script>
(function () {
  var imgs = Array.prototype.slice.call(document.images);
  var settled = 0, loaded = 0;
  function finish() {
    var tables = document.querySelectorAll('table'), empty = 0;
    for (var i = 0; i < tables.length; i++) {
      if (tables[i].querySelectorAll('tbody tr').length === 0) { empty++; }
    }
    document.getElementById('report-status').textContent =
      loaded + ' of ' + imgs.length + ' images loaded, ' + tables.length + ' tables, ' + empty + ' empty';
    document.documentElement.setAttribute('data-ready', '1');
  }
  function mark(img, ok) {
    if (img.getAttribute('data-loaded')) { return; }
    img.setAttribute('data-loaded', ok ? 'yes' : 'error');
    if (ok) { loaded++; }
    settled++;
    if (settled === imgs.length) { finish(); }
  }
  if (imgs.length === 0) { finish(); }
  imgs.forEach(function (img) {
    if (img.complete) { mark(img, img.naturalWidth > 0); return; }
    img.addEventListener('load', function () { mark(img, img.naturalWidth > 0); });
    img.addEventListener('error', function () { mark(img, false); });
  });
})();
</script>
"#;

const STYLE: &str = "<style>
body { font-family: sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; }
th { background: #f0f0f0; }
img { max-width: 100%; border: 1px solid #ddd; }
figure { margin: 1em 0; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; font-size: 0.85em; }
section { border-top: 2px solid #1f77b4; margin-top: 2em; }
#report-status { color: #555; font-size: 0.85em; }
</style>
";

/// The reports to show: those of [`REPORTS`] present in `bench_dir`, then
/// any other `.md` there but `README.md`.
fn report_files(bench_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = REPORTS
        .iter()
        .map(|f| bench_dir.join(f))
        .filter(|p| p.exists())
        .collect();
    let mut others: Vec<PathBuf> = std::fs::read_dir(bench_dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "md")
                        && p.file_name().is_some_and(|n| n != "README.md")
                        && !out.contains(p)
                })
                .collect()
        })
        .unwrap_or_default();
    others.sort();
    out.extend(others);
    out
}

/// The page for the guide in `docs` (its `bench/` reports and charts, its
/// `pictures/` timelines).
pub fn page(docs: &Path) -> io::Result<String> {
    let bench_dir = docs.join("bench");
    let pictures = docs.join("pictures");
    let reports = report_files(&bench_dir);
    if reports.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no reports (*.md) in {}", bench_dir.display()),
        ));
    }
    let mut body = String::new();
    let mut toc = String::from(
        "<ul>\n<li><a href=\"#timelines\">Timelines: a picture of each strategy</a></li>\n",
    );
    // Timelines first: the pictures of the models.
    body.push_str("<section id=\"timelines\"><h2>Timelines: a picture of each strategy</h2>\n");
    let scenario_files = std::iter::once(("all", "Every strategy on one time axis"))
        .chain(crate::timeline::SCENARIOS.iter().map(|s| (s.0, s.1)));
    let mut any = false;
    for (id, title) in scenario_files {
        let p = pictures.join(format!("{id}.svg"));
        if p.exists() {
            body.push_str(&image(&p, title));
            any = true;
        }
    }
    if !any {
        let _ = writeln!(
            body,
            "<p class=\"missing\">no timelines in {} (run <code>bench timeline</code>)</p>",
            esc(&pictures.display().to_string())
        );
    }
    body.push_str("</section>\n");
    let mut used_svgs = Vec::new();
    for (n, path) in reports.iter().enumerate() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
        for l in text.lines() {
            if let Some(img) = l.trim().strip_prefix("![")
                && let Some((_, rest)) = img.split_once("](")
            {
                used_svgs.push(rest.trim_end_matches(')').to_owned());
            }
        }
        let name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            toc,
            "<li><a href=\"#report-{n}\">docs/bench/{}</a></li>",
            esc(&name)
        );
        let _ = writeln!(
            body,
            "<section id=\"report-{n}\"><p><code>docs/bench/{}</code></p>\n{}</section>",
            esc(&name),
            markdown(&text, &bench_dir, 1)
        );
    }
    // Charts no report shows.
    let mut charts: Vec<PathBuf> = std::fs::read_dir(&bench_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
        .filter(|p| {
            p.file_name()
                .is_some_and(|f| !used_svgs.iter().any(|u| u == &*f.to_string_lossy()))
        })
        .collect();
    charts.sort();
    if !charts.is_empty() {
        toc.push_str("<li><a href=\"#charts\">Other charts</a></li>\n");
        body.push_str("<section id=\"charts\"><h2>Other charts</h2>\n");
        for c in charts {
            let name = c
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            body.push_str(&image(&c, &name));
        }
        body.push_str("</section>\n");
    }
    toc.push_str("</ul>\n");
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>socketserver-rs: measured results</title>\n{STYLE}</head>\n<body>\n<h1>socketserver-rs: measured results</h1>\n<p>Every report of <code>docs/bench/</code> and the timelines of <code>docs/pictures/</code>, gathered by <code>bench --html</code>; nothing here was measured anew. How to read them: <code>docs/benchmarks.md</code>.</p>\n<p id=\"report-status\">loading images ...</p>\n{toc}{body}{SCRIPT}</body>\n</html>\n"
    ))
}

/// `bench --html DIR`: writes `DIR/index.html` for the guide in `docs`;
/// returns its path.
pub fn write(dir: &Path, docs: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    let path = dir.join("index.html");
    std::fs::write(&path, page(docs)?)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
    }

    #[test]
    fn tables_headings_code_and_lists_become_html() {
        let md = "# Title\n\nSome `code` and **bold** [link](x.md).\n\n| a | b \\| c |\n|---|--:|\n| 1 | <2> |\n\n```\nx < y\n```\n- one\n- two\n  more\n";
        let html = markdown(md, Path::new("."), 1);
        assert!(html.contains("<h2>Title</h2>"), "{html}");
        assert!(
            html.contains("<code>code</code>") && html.contains("<b>bold</b> link."),
            "{html}"
        );
        assert!(html.contains("<th>b | c</th>"), "{html}");
        assert!(
            html.contains("<tr><td>1</td><td>&lt;2&gt;</td></tr>"),
            "{html}"
        );
        assert!(html.contains("<pre><code>x &lt; y</code></pre>"), "{html}");
        assert!(html.contains("<li>two\nmore"), "{html}");
    }
}
