//! The house reads from the ground up: the validated model of `services.json` and the
//! environment at the bottom, the runtime pieces built from it above, the request path and
//! the process on top (README, "Layout"). This test holds the plan to the code: no file
//! of `src/` imports from a floor above its own, and no files import each other in a
//! circle, however long the way round.
//!
//! What counts as an import is read from the source text, not guessed from `use` lines
//! alone: every path that starts with `crate::`, `super::`, `self::`, a child module's name
//! or (in `main.rs`) `beat_gateway::`, in `use` items and in code (types, calls, macros),
//! comments and string literals skipped, unit tests included. A path is followed to the file
//! that defines the name: through the longest module prefix that is a file, then through
//! that file's own `use` items, so a name a facade (`mod.rs`) re-exports counts as an arrow
//! to the file that defines it, not to the facade.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The floors, ground first, and the rooms (top-level modules of `src/`) on each. A file
/// may import from its own floor (no circle allowed) and from any floor below.
const FLOORS: &[(&str, &[&str])] = &[
    (
        "the model: services.json validated, the environment",
        &["config", "settings"],
    ),
    (
        "built from the model alone: routes, upstreams, counters, log lines",
        &["router", "upstream", "metrics", "logging"],
    ),
    (
        "edge filters: auth, CORS, rate limits, TLS, connections",
        &["edge"],
    ),
    ("the live table and its reloads", &["live"]),
    ("the admin listener", &["admin"]),
    ("the request path", &["proxy"]),
    (
        "the process: the server, its memory upkeep, or the demo's stand-ins",
        &["server", "memory", "demo"],
    ),
    ("entry points", &["main", "lib", "fuzz"]),
];

/// This crate's `src/`, or the one `LAYERING_SRC` names (to look at another checkout:
/// `LAYERING_SRC=/elsewhere/src cargo test --test layering`).
fn src() -> PathBuf {
    std::env::var_os("LAYERING_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn no_circle_of_imports_among_src_files() {
    let graph = Graph::read(&src());
    let circles = graph.circles();
    assert!(
        circles.is_empty(),
        "files of src/ that import each other, round and round:\n{}",
        circles.join("\n")
    );
}

#[test]
fn no_file_imports_from_a_floor_above_its_own() {
    let graph = Graph::read(&src());
    let (upward, unplaced) = graph.upward(FLOORS);
    assert!(
        unplaced.is_empty(),
        "modules of src/ on no floor (add them to FLOORS in {}): {unplaced:?}",
        file!()
    );
    assert!(
        upward.is_empty(),
        "imports from a floor above (FLOORS in {}):\n{}",
        file!(),
        upward.join("\n")
    );
}

#[test]
fn every_floor_names_rooms_that_exist() {
    let graph = Graph::read(&src());
    let rooms: BTreeSet<String> = graph.files.values().map(|f| f.room()).collect();
    for (floor, names) in FLOORS {
        for name in *names {
            assert!(rooms.contains(*name), "{floor}: no module '{name}' in src/");
        }
    }
}

/// The checker itself can fail: a circle and an upward arrow are seen; comments, strings
/// and raw strings are not read; re-exports and `crate::` macros lead to their files.
#[test]
fn the_checker_sees_circles_upward_arrows_and_re_exports() {
    let graph = Graph::from_sources(&[
        ("lib.rs", "pub mod low; pub mod high; pub mod facade;"),
        (
            "low/mod.rs",
            "mod inner; // crate::high::Fake in a comment\n\
             pub fn f() -> crate::high::Thing { inner::g(); todo!() }\n\
             const S: &str = \"crate::facade::X\"; const C: char = '\"';\n\
             const R: &str = r#\"crate::facade::\"X\"#;",
        ),
        ("low/inner.rs", "pub fn g() {} fn h<'a>(x: &'a str) {}"),
        (
            "high.rs",
            "use crate::low::{self, inner::g};\nuse crate::made;\n\
             #[cfg(test)] mod tests { use super::*; }",
        ),
        ("facade/mod.rs", "mod real; pub use real::Thing;"),
        (
            "facade/real.rs",
            "pub struct Thing;\n#[macro_export] macro_rules! made { () => {} }",
        ),
        ("main.rs", "use beat_gateway::facade::Thing;"),
    ]);
    let arrows: BTreeSet<(&str, &str)> = graph
        .arrows
        .iter()
        .map(|a| (a.from.as_str(), a.to.as_str()))
        .collect();
    assert_eq!(
        arrows,
        BTreeSet::from([
            ("facade/mod.rs", "facade/real.rs"),
            ("high.rs", "facade/real.rs"),
            ("high.rs", "low/inner.rs"),
            ("high.rs", "low/mod.rs"),
            ("low/mod.rs", "high.rs"),
            ("low/mod.rs", "low/inner.rs"),
            ("main.rs", "facade/real.rs"),
        ])
    );
    let circles = graph.circles();
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert!(circles[0].contains("high.rs") && circles[0].contains("low/mod.rs"));
    let floors: &[(&str, &[&str])] = &[
        ("ground", &["low", "facade"]),
        ("top", &["high", "main", "lib"]),
    ];
    let (upward, unplaced) = graph.upward(floors);
    assert!(unplaced.is_empty(), "{unplaced:?}");
    assert_eq!(upward.len(), 1, "{upward:?}");
    assert!(
        upward[0].starts_with("low/mod.rs:2 -> high.rs"),
        "{upward:?}"
    );
}

/// One source file: its module path and what it refers to.
struct File {
    /// `config::validate` for `config/validate.rs`; empty for `lib.rs`; `main` for `main.rs`.
    module: Vec<String>,
    /// Paths as written, each with the module it is written in (inline modules included)
    /// and its line.
    refs: Vec<(Vec<String>, Vec<String>, usize)>,
    /// Child modules declared in each module of the file (`mod x;` or `mod x { .. }`).
    children: BTreeMap<Vec<String>, BTreeSet<String>>,
    /// Names the file's own module brings in with `use` (`pub use` included), as paths.
    uses: BTreeMap<String, (Vec<String>, Vec<String>)>,
    /// `macro_rules!` defined here (exported ones are named from the crate root).
    macros: BTreeSet<String>,
}

impl File {
    /// The top-level module: `config` for `config/validate.rs`, `lib`, `main`.
    fn room(&self) -> String {
        self.module.first().cloned().unwrap_or_else(|| "lib".into())
    }
}

struct Arrow {
    from: String,
    to: String,
    line: usize,
    path: String,
}

struct Graph {
    files: BTreeMap<String, File>,
    arrows: Vec<Arrow>,
}

impl Graph {
    fn read(src: &Path) -> Graph {
        let mut sources = Vec::new();
        let mut dirs = vec![src.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
            for entry in entries {
                let path = entry.expect("directory entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let rel = path.strip_prefix(src).expect("under src");
                    let rel = rel.to_string_lossy().replace('\\', "/");
                    let text =
                        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
                    sources.push((rel, text));
                }
            }
        }
        assert!(sources.len() > 10, "no sources found under {src:?}");
        let borrowed: Vec<(&str, &str)> = sources
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        Graph::from_sources(&borrowed)
    }

    /// `sources`: paths relative to `src/` and their text.
    fn from_sources(sources: &[(&str, &str)]) -> Graph {
        let files: BTreeMap<String, File> = sources
            .iter()
            .map(|(path, text)| (path.to_string(), scan(&module_of(path), &lex(text))))
            .collect();
        let by_module: BTreeMap<&[String], &str> = files
            .iter()
            .map(|(path, f)| (f.module.as_slice(), path.as_str()))
            .collect();
        let mut arrows = Vec::new();
        for (path, file) in &files {
            let mut seen = BTreeSet::new();
            for (scope, written, line) in &file.refs {
                let Some(absolute) = absolute(file, scope, written) else {
                    continue;
                };
                let Some(to) = resolve(&absolute, &files, &by_module, 0) else {
                    continue;
                };
                if to != *path && seen.insert(to.clone()) {
                    arrows.push(Arrow {
                        from: path.clone(),
                        to,
                        line: *line,
                        path: written.join("::"),
                    });
                }
            }
        }
        Graph { files, arrows }
    }

    /// Each circle (strongly connected files, Tarjan) with the arrows that close it.
    fn circles(&self) -> Vec<String> {
        let names: Vec<&str> = self.files.keys().map(String::as_str).collect();
        let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut next = vec![Vec::new(); names.len()];
        for a in &self.arrows {
            next[index[a.from.as_str()]].push(index[a.to.as_str()]);
        }
        let components = tarjan(&next);
        components
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let members: BTreeSet<&str> = c.iter().map(|&i| names[i]).collect();
                let mut text = format!("circle of {} files:", members.len());
                for a in &self.arrows {
                    if members.contains(a.from.as_str()) && members.contains(a.to.as_str()) {
                        text += &format!("\n  {}:{} -> {} ({})", a.from, a.line, a.to, a.path);
                    }
                }
                text
            })
            .collect()
    }

    /// Arrows from a floor to one above it, and rooms on no floor.
    fn upward(&self, floors: &[(&str, &[&str])]) -> (Vec<String>, BTreeSet<String>) {
        let floor_of = |room: &str| floors.iter().position(|(_, rooms)| rooms.contains(&room));
        let mut unplaced = BTreeSet::new();
        for file in self.files.values() {
            if floor_of(&file.room()).is_none() {
                unplaced.insert(file.room());
            }
        }
        let mut upward = Vec::new();
        for a in &self.arrows {
            let (from, to) = (self.files[&a.from].room(), self.files[&a.to].room());
            if let (Some(low), Some(high)) = (floor_of(&from), floor_of(&to))
                && low < high
            {
                upward.push(format!(
                    "{}:{} -> {} ({}): '{from}' is on floor {low} ({}), '{to}' on floor {high} ({})",
                    a.from, a.line, a.to, a.path, floors[low].0, floors[high].0
                ));
            }
        }
        (upward, unplaced)
    }
}

/// `config/validate.rs` -> `config::validate`; `config/mod.rs` -> `config`; `lib.rs` -> the
/// crate root; `main.rs` -> `main` (the binary, a crate of its own).
fn module_of(path: &str) -> Vec<String> {
    let stem = path.strip_suffix(".rs").unwrap_or(path);
    let mut parts: Vec<String> = stem.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod") || parts == ["lib"] {
        parts.pop();
    }
    parts
}

/// The absolute module path of `written`, as seen from module `scope` of `file`; `None`
/// when it names something outside the crate (`std::..`, a local variable's method).
/// A first name the file imported with `use` (`metrics::..` after `use crate::metrics;`)
/// is replaced by what it imports.
fn absolute(file: &File, scope: &[String], written: &[String]) -> Option<Vec<String>> {
    plain_absolute(file, scope, written).or_else(|| {
        let (first, rest) = written.split_first()?;
        let (from, target) = file.uses.get(first)?;
        let expanded: Vec<String> = target.iter().chain(rest).cloned().collect();
        plain_absolute(file, from, &expanded)
    })
}

fn plain_absolute(file: &File, scope: &[String], written: &[String]) -> Option<Vec<String>> {
    let (first, mut rest) = written.split_first()?;
    let mut out: Vec<String> = match first.as_str() {
        // The binary's `crate` is itself; the library is `beat_gateway` there.
        "crate" if file.module == ["main"] => vec!["main".into()],
        "crate" | "beat_gateway" => Vec::new(),
        "self" => scope.to_vec(),
        "super" => {
            let mut base = scope.to_vec();
            base.pop()?;
            while let Some((_, after)) = rest.split_first().filter(|(s, _)| *s == "super") {
                base.pop()?;
                rest = after;
            }
            base
        }
        name if file.children.get(scope).is_some_and(|c| c.contains(name)) => {
            let mut base = scope.to_vec();
            base.push(name.to_owned());
            base
        }
        _ => return None,
    };
    out.extend(rest.iter().cloned());
    Some(without_self(out))
}

/// `use a::b::{self}` names `a::b`.
fn without_self(mut path: Vec<String>) -> Vec<String> {
    if path.last().is_some_and(|s| s == "self") {
        path.pop();
    }
    path
}

/// The file that defines what `path` names: the longest prefix that is a file's module,
/// then, when the next name is one that file brings in with `use`, where that leads.
fn resolve(
    path: &[String],
    files: &BTreeMap<String, File>,
    by_module: &BTreeMap<&[String], &str>,
    depth: usize,
) -> Option<String> {
    let (len, file) = (0..=path.len())
        .rev()
        .find_map(|n| by_module.get(&path[..n]).map(|f| (n, *f)))?;
    let rest = &path[len..];
    let here = &files[file];
    if let Some((name, after)) = rest.split_first()
        && depth < 16
    {
        if let Some((scope, target)) = here.uses.get(name)
            && let Some(mut next) = plain_absolute(here, scope, target)
        {
            next.extend(after.iter().cloned());
            if let Some(found) = resolve(&next, files, by_module, depth + 1) {
                return Some(found);
            }
        }
        if len == 0 && !here.macros.contains(name) {
            // `crate::some_macro`: the file that defines it.
            if let Some((path, _)) = files.iter().find(|(_, f)| f.macros.contains(name)) {
                return Some(path.clone());
            }
        }
    }
    Some(file.to_owned())
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

/// The file's tokens with their lines, comments and literals left out.
fn lex(text: &str) -> Vec<(Token, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    // Skip from `i` to past the closing quote of a string (escapes honoured).
    let skip_string = |mut i: usize, line: &mut usize| {
        while i < c.len() && c[i] != '"' {
            if c[i] == '\\' {
                i += 1;
            }
            if at(i) == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i + 1
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(i + 1, &mut line);
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\u{..}'), else a lifetime or label ('a).
            if at(i + 1) == '\\' {
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            if raw_prefix && (at(i) == '"' || at(i) == '#') {
                let mut hashes = 0;
                while at(i + hashes) == '#' {
                    hashes += 1;
                }
                if at(i + hashes) == '"' {
                    // A raw string: to the quote followed by as many '#'.
                    i += hashes + 1;
                    while i < c.len() && !(c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#')) {
                        if c[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                    i += hashes + 1;
                    continue;
                }
                if word == "r" && hashes == 1 {
                    // A raw identifier: r#type.
                    i += 1;
                    let start = i;
                    while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                        i += 1;
                    }
                    out.push((Token::Ident(c[start..i].iter().collect()), line));
                    continue;
                }
            }
            if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                i = skip_string(i + 1, &mut line);
                continue;
            }
            out.push((Token::Ident(word), line));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((Token::Sep, line));
            i += 2;
        } else {
            out.push((Token::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// The references, child modules, `use` names and macros of one file.
fn scan(module: &[String], tokens: &[(Token, usize)]) -> File {
    let mut file = File {
        module: module.to_vec(),
        refs: Vec::new(),
        children: BTreeMap::new(),
        uses: BTreeMap::new(),
        macros: BTreeSet::new(),
    };
    let ident = |i: usize| match tokens.get(i) {
        Some((Token::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    let is = |i: usize, t: &Token| tokens.get(i).is_some_and(|(x, _)| x == t);
    // The inline modules open at this point, and the brace depth each was opened at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let scope: Vec<String> = module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(n, _)| n.clone()))
            .collect();
        let line = tokens[i].1;
        match &tokens[i].0 {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            Token::Ident(w) if w == "mod" => {
                if let Some(name) = ident(i + 1) {
                    file.children
                        .entry(scope.clone())
                        .or_default()
                        .insert(name.to_owned());
                    if is(i + 2, &Token::Punct('{')) {
                        inline.push((name.to_owned(), depth + 1));
                    }
                    i += 2;
                    continue;
                }
            }
            Token::Ident(w) if w == "macro_rules" && is(i + 1, &Token::Punct('!')) => {
                if let Some(name) = ident(i + 2) {
                    file.macros.insert(name.to_owned());
                }
            }
            Token::Ident(w) if w == "use" => {
                let mut trees = Vec::new();
                i = use_tree(tokens, i + 1, Vec::new(), &mut trees);
                for (path, name) in trees {
                    let path = without_self(path);
                    if inline.is_empty() && name != "*" && name != "_" {
                        file.uses.insert(name, (scope.clone(), path.clone()));
                    }
                    file.refs.push((scope.clone(), path, line));
                }
                continue;
            }
            Token::Ident(_) if is(i + 1, &Token::Sep) && !(i > 0 && is(i - 1, &Token::Sep)) => {
                let mut path = Vec::new();
                while let Some(w) = ident(i) {
                    path.push(w.to_owned());
                    if !is(i + 1, &Token::Sep) {
                        break;
                    }
                    i += 2;
                }
                file.refs.push((scope, path, line));
            }
            _ => {}
        }
        i += 1;
    }
    file
}

/// Parse a `use` tree from `i` (after `use`, or inside braces) on top of `prefix`: each leaf
/// path and the name it binds. Returns the index after the tree (past `;` at the top).
fn use_tree(
    tokens: &[(Token, usize)],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, String)>,
) -> usize {
    if matches!(tokens.get(i), Some((Token::Sep, _))) {
        i += 1; // `use ::std::..`
    }
    loop {
        match tokens.get(i).map(|(t, _)| t) {
            Some(Token::Ident(w)) => {
                prefix.push(w.clone());
                i += 1;
                match tokens.get(i).map(|(t, _)| t) {
                    Some(Token::Sep) => i += 1,
                    Some(Token::Ident(a)) if a == "as" => {
                        let alias = match tokens.get(i + 1) {
                            Some((Token::Ident(n), _)) => n.clone(),
                            _ => "_".into(),
                        };
                        out.push((prefix, alias));
                        return skip_to_end(tokens, i + 2);
                    }
                    _ => {
                        let name = prefix.last().cloned().unwrap_or_default();
                        let name = if name == "self" {
                            prefix.iter().rev().nth(1).cloned().unwrap_or_default()
                        } else {
                            name
                        };
                        out.push((prefix, name));
                        return skip_to_end(tokens, i);
                    }
                }
            }
            Some(Token::Punct('*')) => {
                out.push((prefix, "*".into()));
                return skip_to_end(tokens, i + 1);
            }
            Some(Token::Punct('{')) => {
                i += 1;
                loop {
                    match tokens.get(i).map(|(t, _)| t) {
                        Some(Token::Punct('}')) => return skip_to_end(tokens, i + 1),
                        Some(Token::Punct(',')) => i += 1,
                        None => return i,
                        _ => i = use_tree(tokens, i, prefix.clone(), out),
                    }
                }
            }
            _ => return skip_to_end(tokens, i),
        }
    }
}

/// Past the `;` that ends a `use`, or at the `,`/`}` that ends a branch of its braces.
fn skip_to_end(tokens: &[(Token, usize)], i: usize) -> usize {
    match tokens.get(i).map(|(t, _)| t) {
        Some(Token::Punct(';')) => i + 1,
        _ => i,
    }
}

/// Strongly connected components of `next` (Tarjan, iterative).
fn tarjan(next: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = next.len();
    let (mut index, mut low) = (vec![usize::MAX; n], vec![0; n]);
    let (mut on_stack, mut stack, mut out) = (vec![false; n], Vec::new(), Vec::new());
    let mut counter = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0)];
        while let Some(&mut (v, ref mut child)) = work.last_mut() {
            if *child == 0 && index[v] == usize::MAX {
                index[v] = counter;
                low[v] = counter;
                counter += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = next[v].get(*child) {
                *child += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                out.push(component);
            }
        }
    }
    out
}
