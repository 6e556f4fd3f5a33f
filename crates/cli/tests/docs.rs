//! The documentation's examples, run: every ```console block in `docs/*.md`
//! is a shell session. A line `$ COMMAND` runs (lines right after it that
//! begin with `> ` continue it, as bash's second prompt shows them); the
//! lines after it, up to the next `$`, are what it must print (stdout and stderr together), where a line `...` stands for
//! any number of lines and `[..]` for any text within a line; a last line
//! `? N` says it exits with status N (0 when absent). Each page runs as
//! one bash session, so variables and files carry from block to block, in
//! a fresh folder that holds the repository's `data/` and `crates/` (as a
//! reader's clone does) with `veil` on the PATH.
//!
//! A command ending in `&` (a server) runs in the background, its output
//! not compared; the session then waits for the port it listens on
//! (`--listen HOST:PORT`, else 8080 for `veil serve` and 8090 for
//! `veil aggregator serve`) and stops it when the page ends.
//!
//! `VEIL_DOCS_PAGE=serve` runs one page; `VEIL_DOCS_SHOW=1` prints what
//! each command printed, for writing a new example.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Example {
    /// Where it is: `docs/serve.md:42`.
    place: String,
    command: String,
    expected: Vec<String>,
    status: i32,
}

/// The examples of one page, in order.
fn examples(page: &Path, text: &str) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    let mut in_block = false;
    for (n, line) in text.lines().enumerate() {
        if !in_block {
            in_block = line.trim_end() == "```console";
            continue;
        }
        if line.trim_end() == "```" {
            in_block = false;
            continue;
        }
        let continued = line.strip_prefix("> ").or((line == ">").then_some(""));
        if let (Some(rest), Some(last)) = (continued, out.last_mut().filter(|e| e.expected.is_empty())) {
            last.command.push('\n');
            last.command.push_str(rest);
        } else if let Some(command) = line.strip_prefix("$ ") {
            out.push(Example {
                place: format!("{}:{}", page.display(), n + 1),
                command: command.to_string(),
                expected: Vec::new(),
                status: 0,
            });
        } else if let Some(last) = out.last_mut() {
            match line.strip_prefix("? ").map(str::parse) {
                Some(Ok(status)) => last.status = status,
                _ => last.expected.push(line.to_string()),
            }
        } else {
            panic!("{}:{}: output before any `$ ` command", page.display(), n + 1);
        }
    }
    assert!(!in_block, "{}: a ```console block is not closed", page.display());
    out
}

/// Whether `line` matches `pattern`, where `[..]` stands for any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Whether `lines` match `expected`, where a line `...` stands for any
/// number of lines.
fn lines_match(expected: &[String], lines: &[&str]) -> bool {
    match expected.split_first() {
        None => lines.is_empty(),
        Some((first, rest)) if first == "..." => (0..=lines.len()).any(|skip| lines_match(rest, &lines[skip..])),
        Some((first, rest)) => {
            lines.first().is_some_and(|line| line_matches(first, line)) && lines_match(rest, &lines[1..])
        }
    }
}

/// The port a background command will listen on.
fn port_of(command: &str) -> Option<u16> {
    let words: Vec<&str> = command.split_whitespace().collect();
    if let Some(i) = words.iter().position(|w| *w == "--listen") {
        return words.get(i + 1)?.rsplit(':').next()?.parse().ok();
    }
    if command.contains("aggregator serve") {
        Some(8090)
    } else if command.contains("veil serve") {
        Some(8080)
    } else {
        None
    }
}

/// The bash session for a page's examples: each command's output framed by
/// markers, with its status.
fn session(examples: &[Example]) -> String {
    let mut script = String::from("trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT\n");
    for (i, e) in examples.iter().enumerate() {
        match e.command.trim_end().strip_suffix('&') {
            Some(background) => {
                let port = port_of(background);
                if let Some(port) = port {
                    // Another server there would answer in its place.
                    script += &format!(
                        "if (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; then echo 'port {port} is taken: stop what listens there' >&2; exit 3; fi\n"
                    );
                }
                script += &format!("echo '@@veil-docs-start {i}@@'\n");
                // Not in braces: bash then runs the server itself as the
                // job, so that stopping the job stops the server.
                script += &format!("{background} > .background-{i}.log 2>&1 &\n");
                if let Some(port) = port {
                    script += &format!(
                        "for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.1; done\n"
                    );
                }
                script += "status=0\n";
            }
            None => script += &format!("echo '@@veil-docs-start {i}@@'\n{{ {}\n}} 2>&1\nstatus=$?\n", e.command),
        }
        script += &format!("echo; echo \"@@veil-docs-end {i} $status@@\"\n");
    }
    script
}

/// A fresh folder like a reader's clone, for one page.
fn workspace(root: &Path, page: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("veil-docs-{page}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for shared in ["data", "crates"] {
        std::os::unix::fs::symlink(root.join(shared), dir.join(shared)).unwrap();
    }
    dir
}

#[test]
fn every_documented_example_runs_as_shown() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let veil_dir = Path::new(env!("CARGO_BIN_EXE_veil")).parent().unwrap().to_path_buf();
    let only = std::env::var("VEIL_DOCS_PAGE").ok();
    let show = std::env::var_os("VEIL_DOCS_SHOW").is_some();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    let mut failures = Vec::new();
    let mut count = 0;
    for page in &pages {
        let name = page.file_stem().unwrap().to_string_lossy().into_owned();
        if only.as_ref().is_some_and(|o| *o != name) {
            continue;
        }
        let text = std::fs::read_to_string(page).unwrap();
        let relative = page.strip_prefix(&root).unwrap();
        let examples = examples(relative, &text);
        if examples.is_empty() {
            continue;
        }
        count += examples.len();
        let dir = workspace(&root, &name);
        let path = format!("{}:{}", veil_dir.display(), std::env::var("PATH").unwrap_or_default());
        let output = Command::new("bash")
            .arg("-c")
            .arg(session(&examples))
            .current_dir(&dir)
            .env_clear()
            .env("PATH", path)
            .env("HOME", &dir)
            .env("LANG", "C.UTF-8")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        for (i, e) in examples.iter().enumerate() {
            let start = format!("@@veil-docs-start {i}@@\n");
            let Some(from) = stdout.find(&start) else {
                failures.push(format!(
                    "{}: `{}` never ran\n{}",
                    e.place,
                    e.command,
                    String::from_utf8_lossy(&output.stderr)
                ));
                break;
            };
            let body = &stdout[from + start.len()..];
            let end = body.find(&format!("@@veil-docs-end {i} ")).expect("an end marker after a start");
            let status: i32 =
                body[end..].split_whitespace().nth(2).and_then(|s| s.trim_end_matches("@@").parse().ok()).unwrap();
            let printed = body[..end].strip_suffix('\n').unwrap_or(&body[..end]);
            let lines: Vec<&str> = if printed.is_empty() { Vec::new() } else { printed.lines().collect() };
            if show {
                eprintln!("{} $ {}\n{}\n? {status}\n", e.place, e.command, printed);
            }
            if status != e.status || !lines_match(&e.expected, &lines) {
                failures.push(format!(
                    "{}: `{}`\n  exited {status} (expected {}) and printed:\n{}\n  expected:\n{}",
                    e.place,
                    e.command,
                    e.status,
                    printed,
                    e.expected.join("\n")
                ));
            }
        }
        if failures.is_empty() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} documented examples differ:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    if only.is_none() {
        assert!(count >= 20, "only {count} examples found under docs/: is the ```console fence spelled right?");
    }
}

#[test]
fn the_matcher_matches_what_it_says() {
    assert!(line_matches(
        "veil serve: [..] on http://127.0.0.1:[..]",
        "veil serve: listening on http://127.0.0.1:8080"
    ));
    assert!(!line_matches("a[..]c", "abd"));
    assert!(line_matches("[..]", ""));
    let expected: Vec<String> = ["first", "...", "last [..]"].map(String::from).to_vec();
    assert!(lines_match(&expected, &["first", "x", "y", "last line"]));
    assert!(lines_match(&expected, &["first", "last one"]));
    assert!(!lines_match(&expected, &["first", "x"]));
    assert!(!lines_match(&["only".to_string()], &["only", "more"]));
}
