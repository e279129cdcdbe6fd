//! No two modules of a crate import each other, directly or through a loop: the layering the
//! architecture promises (a kernel file does not reach into another's policy, a report section
//! does not call back into the one that called it). Paths through `crate::`, `super::` and
//! `self::` (brace groups included) count; a module's use of its own ancestors (the items its
//! parent re-exports) does not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use scalelab_tests::repo_root;

type Module = Vec<String>;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

/// The tokens of Rust source that paths are made of; comments and string literals are dropped.
fn tokens(src: &str) -> Vec<Token> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(Token::Other);
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == ':' && next == Some(':') {
            out.push(Token::PathSep);
            i += 2;
        } else {
            out.push(match c {
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                _ => Token::Other,
            });
            i += 1;
        }
    }
    out
}

/// Reads the path that continues at `at` (after a `::`) with `prefix` before it, pushing every
/// full path it names (one per item of a brace group); returns where it stopped.
fn read_path(
    toks: &[Token],
    mut at: usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix;
    loop {
        match toks.get(at) {
            Some(Token::Ident(name)) => {
                path.push(name.clone());
                at += 1;
                if toks.get(at) == Some(&Token::PathSep) {
                    at += 1;
                    continue;
                }
                out.push(path);
                return at;
            }
            Some(Token::Open) => {
                at += 1;
                while at < toks.len() && toks[at] != Token::Close {
                    if toks[at] == Token::Comma {
                        at += 1;
                        continue;
                    }
                    at = read_path(toks, at, path.clone(), out);
                    while at < toks.len() && !matches!(toks[at], Token::Comma | Token::Close) {
                        at += 1;
                    }
                }
                return at + 1;
            }
            _ => {
                out.push(path);
                return at;
            }
        }
    }
}

/// Every `crate::`, `super::` or `self::` path in `src`, as written.
fn paths(src: &str) -> Vec<Vec<String>> {
    let toks = tokens(src);
    let mut out = Vec::new();
    let mut at = 0;
    while at + 1 < toks.len() {
        match (&toks[at], &toks[at + 1]) {
            (Token::Ident(head), Token::PathSep)
                if ["crate", "super", "self"].contains(&head.as_str())
                    && (at == 0 || toks[at - 1] != Token::PathSep) =>
            {
                at = read_path(&toks, at + 2, vec![head.clone()], &mut out);
            }
            _ => at += 1,
        }
    }
    out
}

/// The module a path names, seen from `from`: its longest prefix that is a module of the crate.
fn target(from: &Module, path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let mut base: Module = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("self") => {
            base = from.clone();
            rest = &path[1..];
        }
        _ => {
            base = from.clone();
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
        }
    }
    (0..=rest.len()).rev().find_map(|n| {
        let mut m = base.clone();
        m.extend(rest[..n].iter().cloned());
        modules.contains(&m).then_some(m)
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file below `src`.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut m: Module = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(m.last().map(String::as_str), Some("lib" | "main" | "mod")) {
        m.pop();
    }
    m
}

/// The edges between modules that are not ancestors of each other.
fn module_graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let from = module_of(src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let to: BTreeSet<Module> = paths(&text)
            .iter()
            .filter_map(|p| target(&from, p, &modules))
            .filter(|t| !from.starts_with(t))
            .collect();
        graph.insert(from, to);
    }
    graph
}

/// A loop of modules, if any: a depth-first search for an edge back into the current path.
fn find_loop(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        m: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        path: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            return Some(path[i..].to_vec());
        }
        if !done.insert(m.clone()) {
            return None;
        }
        path.push(m.clone());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_modules_import_each_other() {
    let root = repo_root();
    let mut crates = vec![root.join("kernels/src"), root.join("tests/src")];
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        crates.push(entry.unwrap().path().join("src"));
    }
    let mut checked = 0;
    for src in crates.iter().filter(|s| s.is_dir()) {
        let graph = module_graph(src);
        checked += graph.len();
        if let Some(cycle) = find_loop(&graph) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            panic!(
                "{}: modules import each other: {}",
                src.display(),
                names.join(" -> ")
            );
        }
    }
    assert!(checked > 50, "only {checked} modules found");
}

#[test]
fn the_check_sees_loops_through_brace_groups_and_super() {
    let src = "use super::{b::Thing, c};\nfn f() { crate::a::g(); }";
    assert_eq!(
        paths(src),
        vec![
            vec!["super".to_string(), "b".into(), "Thing".into()],
            vec!["super".to_string(), "c".into()],
            vec!["crate".to_string(), "a".into(), "g".into()],
        ]
    );
    let modules: BTreeSet<Module> = [vec![], vec!["a".into()], vec!["b".into()]].into();
    let from: Module = vec!["a".into()];
    let to = target(&from, &["super".into(), "b".into(), "X".into()], &modules);
    assert_eq!(to, Some(vec!["b".to_string()]));
    let graph: BTreeMap<Module, BTreeSet<Module>> = [
        (vec!["a".to_string()], [vec!["b".to_string()]].into()),
        (vec!["b".to_string()], [vec!["a".to_string()]].into()),
    ]
    .into();
    assert!(find_loop(&graph).is_some());
}
