//! The layering rule of DESIGN.md §10, checked: every module imports only modules listed before
//! it in `ORDER`, so the crate has no import cycle and a reader can learn it bottom-up.
//!
//! The check reads the sources: every `crate::` path (root re-exports count as the module that
//! defines the item) and every `super::` path that climbs out of a top-level module, in library
//! code and in test modules alike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level modules, lowest first. A module may import only modules before it.
#[rustfmt::skip]
const ORDER: &[&str] = &[
    // Leaves: the error and report types, raw syscalls, constants, host paths.
    "error", "sys", "defaults", "outcome", "paths",
    // Host facts and kernel concepts, each on its own.
    "probe", "cancel", "landlock", "ns", "cgroup", "seccomp", "gpu", "interp", "terminal",
    // State records, and the only code that forks.
    "state", "spawn",
    // The egress proxy: takes the listeners the reaper made; each instance owns one.
    "egress",
    // What to run, the prepared policy, a live instance, its stateful interpreters, the warm
    // pool.
    "command", "policy", "instance", "context", "pool",
    // The public entry point.
    "sandbox",
    // The daemon, on top of the library's public API.
    "daemon",
];

/// Items defined in lib.rs itself that modules may name (the allocation check reads them).
const ROOT_ITEMS: &[&str] = &["in_sandbox_child", "CheckedAlloc"];

/// One import that breaks the rule.
#[derive(Debug, PartialEq)]
pub(crate) struct Violation {
    pub file: PathBuf,
    pub line: usize,
    pub from: String,
    pub to: String,
}

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|m| *m == module)
}

/// The top-level module a source file belongs to (`None` for lib.rs, main.rs and the CLI, which
/// sit above everything).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    match name {
        "lib" | "main" | "cli" | "layers" => None,
        _ => Some(name.to_string()),
    }
}

/// Names introduced by `pub use MODULE::{...}` lines of lib.rs: item -> defining module.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for (i, _) in lib.match_indices("\npub use ") {
        let stmt = &lib[i + 9..];
        let stmt = &stmt[..stmt.find(';').unwrap_or(stmt.len())];
        let Some((module, items)) = stmt.split_once("::") else {
            continue;
        };
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let item = item.trim().rsplit("::").next().unwrap_or("").trim();
            if !item.is_empty() {
                map.insert(item.to_string(), module.trim().to_string());
            }
        }
    }
    map
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first identifiers of each path in a `{a, b::c, d::{e, f}}` group that starts at `s[0]`.
fn group_heads(s: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = 1;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                heads.push(ident_at(s[start..i].trim_start()));
                start = i + 1;
                if c == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    heads.retain(|h| !h.is_empty());
    heads
}

/// What `crate::` names at the start of `rest`: top-level modules or root re-exports.
fn targets<'a>(rest: &'a str, reexports: &'a BTreeMap<String, String>) -> Vec<String> {
    let heads = if rest.starts_with('{') {
        group_heads(rest)
    } else {
        vec![ident_at(rest)]
    };
    heads
        .into_iter()
        .map(|h| reexports.get(h).cloned().unwrap_or_else(|| h.to_string()))
        .collect()
}

/// Checks every file under `src`; returns the imports that go up (or name unknown modules).
pub(crate) fn check(src: &Path) -> Vec<Violation> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("reading src/lib.rs");
    let reexports = root_reexports(&lib);
    let mut files = Vec::new();
    collect(src, &mut files);
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap().to_path_buf();
        let Some(from) = module_of(&rel) else {
            continue;
        };
        // Directory depth of the file's own module: src/a.rs and src/a/mod.rs are 1 deep.
        let depth = rel.components().count() - usize::from(rel.ends_with("mod.rs"));
        let text = std::fs::read_to_string(&file).expect("reading a source file");
        let mut inline = 0usize;
        for (n, line) in text.lines().enumerate() {
            let code = without_strings(line.split("//").next().unwrap_or(""));
            let code = code.as_str();
            if code.trim_start().starts_with("mod ") && code.trim_end().ends_with('{') {
                inline = 1;
            }
            let mut to = Vec::new();
            for (i, _) in code.match_indices("crate::") {
                to.extend(targets(&code[i + 7..], &reexports));
            }
            for (i, _) in code.match_indices("super::") {
                if code[..i].ends_with("super::") {
                    continue;
                }
                let (mut ups, mut after) = (0, &code[i..]);
                while let Some(rest) = after.strip_prefix("super::") {
                    ups += 1;
                    after = rest;
                }
                if ups >= depth + inline {
                    to.extend(targets(after, &reexports));
                }
            }
            for t in to {
                let ok = t == from
                    || t == "self"
                    || ROOT_ITEMS.contains(&t.as_str())
                    || matches!((rank(&from), rank(&t)), (Some(a), Some(b)) if b < a);
                if !ok {
                    out.push(Violation {
                        file: rel.clone(),
                        line: n + 1,
                        from: from.clone(),
                        to: t,
                    });
                }
            }
        }
    }
    out
}

/// The line with the contents of its string literals blanked (messages may mention paths).
fn without_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let (mut in_str, mut escaped) = (false, false);
    for c in line.chars() {
        match (in_str, escaped, c) {
            (true, false, '\\') => escaped = true,
            (true, false, '"') => {
                in_str = false;
                out.push(c);
            }
            (true, _, _) => escaped = false,
            (false, _, '"') => {
                in_str = true;
                out.push(c);
            }
            (false, _, _) => out.push(c),
        }
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir)
        .expect("reading a source directory")
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_module_imports_from_a_layer_above_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let bad = check(&src);
        let lines: Vec<String> = bad
            .iter()
            .map(|v| {
                format!(
                    "{}:{}: {} imports {}",
                    v.file.display(),
                    v.line,
                    v.from,
                    v.to
                )
            })
            .collect();
        assert!(
            bad.is_empty(),
            "imports that go up a layer (or name a module missing from layers::ORDER):\n{}",
            lines.join("\n")
        );
    }

    #[test]
    fn every_top_level_module_has_a_layer() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for e in std::fs::read_dir(&src).unwrap().flatten() {
            let Some(m) = module_of(Path::new(&e.file_name())) else {
                continue;
            };
            if m != "layers" {
                assert!(rank(&m).is_some(), "src/{m} is not in layers::ORDER");
            }
        }
    }

    #[test]
    fn the_check_sees_an_upward_import() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        std::fs::write(
            src.join("lib.rs"),
            "mod x;\npub use sandbox::{Sandbox, SandboxBuilder};\n",
        )
        .unwrap();
        std::fs::create_dir(src.join("cgroup")).unwrap();
        std::fs::write(
            src.join("cgroup/mod.rs"),
            "use crate::error::Error;\nuse crate::{probe, instance::Usage};\nfn f(_: crate::Sandbox) {}\nmod tests {\n    use super::super::daemon;\n}\n",
        )
        .unwrap();
        std::fs::write(src.join("error.rs"), "use crate::outcome::Outcome;\n").unwrap();
        let bad: Vec<(usize, String)> = check(src).into_iter().map(|v| (v.line, v.to)).collect();
        assert_eq!(
            bad,
            vec![
                (2, "instance".to_string()),
                (3, "sandbox".to_string()),
                (5, "daemon".to_string()),
                (1, "outcome".to_string()),
            ]
        );
    }
}
