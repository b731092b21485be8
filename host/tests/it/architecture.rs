//! The layering invariants of ARCHITECTURE.md, checked on the source text so that a change
//! that breaks one fails here with the offending file and line named.
//!
//! Every `.rs` file under `host/src` is scanned. A small tokenizer drops comments, strings and
//! char literals; a scanner then resolves every path that reaches into the crate — `use` trees
//! (grouped and nested: `use crate::{store, engine::history}`), `super::`/`self::` chains
//! (followed through inline `mod` blocks), inline paths in code (`crate::store::Store` written
//! without a `use`), `glucoguard::` paths in the binary and path strings in attributes
//! (`#[serde(with = "crate::x")]`) — to the top-level module they land in. External crates
//! whose use is confined (wasmtime, DuckDB, object_store) are recognised by the first segment
//! of a path. `RULES` classifies every top-level module `lib.rs` declares; a module missing
//! from it, a rule for a module that no longer exists, a file outside every module and a path
//! into a module that does not exist all fail loudly, so no check can silently pass by
//! scanning nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------------

/// What a top-level module may import from the rest of the crate.
#[derive(Debug, Clone, Copy)]
enum Imports {
    /// Wiring and assembly modules: anything.
    Any,
    /// Anything but these modules.
    NoneOf(&'static [&'static str]),
    /// Nothing but itself.
    Nothing,
}

/// The classification of one top-level module (or crate root file).
#[derive(Debug, Clone, Copy)]
struct Rule {
    /// The module's name as `lib.rs` declares it, or `lib.rs` / `main.rs` for the roots.
    module: &'static str,
    imports: Imports,
    /// Which of the `CONFINED` external crates it may name.
    may_name: &'static [&'static str],
}

/// External crates only some modules may name.
const CONFINED: &[&str] = &[
    "wasmtime",
    "duckdb",
    "object_store",
    "rumqttc",
    "azure_messaging_eventhubs",
    "azure_core",
];

const SINKS_DOWNSTREAM: &[&str] = &["engine", "sources", "pipeline"];

/// Every top-level module of the crate, classified. ARCHITECTURE.md states these as absences.
const RULES: &[Rule] = &[
    // The crate roots: `lib.rs` only declares modules; `main.rs` is the CLI.
    Rule {
        module: "lib.rs",
        imports: Imports::Any,
        may_name: &[],
    },
    Rule {
        module: "main.rs",
        imports: Imports::Any,
        may_name: &["duckdb", "object_store"],
    },
    // Domain types: nothing else from the crate.
    Rule {
        module: "model",
        imports: Imports::Nothing,
        may_name: &[],
    },
    // Sources, engine, sinks and store never import each other (nor the pipeline).
    Rule {
        module: "sources",
        imports: Imports::NoneOf(&["engine", "sinks", "store", "pipeline"]),
        // `object_store`: the Event Hubs source's Blob checkpoint store.
        may_name: &[
            "rumqttc",
            "azure_messaging_eventhubs",
            "azure_core",
            "object_store",
        ],
    },
    Rule {
        module: "engine",
        imports: Imports::NoneOf(&["sources", "sinks", "store", "pipeline"]),
        may_name: &["wasmtime"],
    },
    Rule {
        module: "sinks",
        imports: Imports::NoneOf(&["sources", "engine", "store", "pipeline"]),
        may_name: &["azure_messaging_eventhubs", "azure_core"],
    },
    Rule {
        module: "store",
        imports: Imports::NoneOf(&["sources", "engine", "sinks", "pipeline"]),
        may_name: &[],
    },
    // Storage sinks downstream of the store. Analytics reads the OLTP store only to catch up;
    // the archive never reads it: it holds what the store may drop.
    Rule {
        module: "analytics",
        imports: Imports::NoneOf(SINKS_DOWNSTREAM),
        may_name: &["duckdb", "object_store"],
    },
    Rule {
        module: "archive",
        imports: Imports::NoneOf(&["engine", "sources", "pipeline", "store"]),
        may_name: &["duckdb", "object_store"],
    },
    Rule {
        module: "retention",
        imports: Imports::NoneOf(&["engine", "pipeline", "sources"]),
        may_name: &[],
    },
    // Wiring, assembly and tools: any module, but none of the confined crates.
    Rule {
        module: "pipeline",
        imports: Imports::Any,
        may_name: &[],
    },
    Rule {
        module: "app",
        imports: Imports::Any,
        may_name: &[],
    },
    Rule {
        module: "admin",
        imports: Imports::Any,
        may_name: &[],
    },
    // The web admin reads through the admin's role-checked handlers; it never reaches the
    // engine, a source, a sink or the archive, and names no DuckDB or wasmtime type.
    Rule {
        module: "web",
        imports: Imports::NoneOf(&["engine", "sources", "sinks", "archive", "retention"]),
        may_name: &[],
    },
    Rule {
        module: "config",
        imports: Imports::Any,
        may_name: &[],
    },
    Rule {
        module: "backtest",
        imports: Imports::Any,
        may_name: &[],
    },
    Rule {
        module: "demo",
        imports: Imports::Any,
        may_name: &[],
    },
    Rule {
        module: "telemetry",
        imports: Imports::Any,
        may_name: &[],
    },
];

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// A string literal's contents (only attributes look at them).
    Str(String),
    /// `::`
    Sep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

/// Splits Rust source into identifiers, `::`, punctuation and string literals; drops comments
/// (nested block comments included), char literals, lifetimes and numbers.
fn tokenize(text: &str) -> Vec<Token> {
    let c: Vec<char> = text.chars().collect();
    let at = |i: usize| c.get(i).copied();
    let mut out = Vec::new();
    let (mut i, mut line) = (0usize, 1usize);
    // Scans a quoted string whose opening quote is at `i`; returns (contents, index after).
    let quoted = |mut i: usize, line: &mut usize| -> (String, usize) {
        i += 1;
        let start = i;
        while i < c.len() && c[i] != '"' {
            if c[i] == '\\' {
                i += 1;
            }
            if at(i) == Some('\n') {
                *line += 1;
            }
            i += 1;
        }
        (c[start..i.min(c.len())].iter().collect(), i + 1)
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == Some('*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == Some('/') {
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
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            if matches!(word.as_str(), "r" | "br" | "cr") && matches!(at(i), Some('"' | '#')) {
                let mut j = i;
                while at(j) == Some('#') {
                    j += 1;
                }
                let hashes = j - i;
                if at(j) == Some('"') {
                    // A raw string: ends at `"` followed by as many `#`.
                    let (str_line, start) = (line, j + 1);
                    let mut k = start;
                    while k < c.len()
                        && !(c[k] == '"' && (1..=hashes).all(|h| at(k + h) == Some('#')))
                    {
                        if c[k] == '\n' {
                            line += 1;
                        }
                        k += 1;
                    }
                    out.push(Token {
                        tok: Tok::Str(c[start..k.min(c.len())].iter().collect()),
                        line: str_line,
                    });
                    i = k + 1 + hashes;
                    continue;
                }
                if word == "r" && hashes == 1 {
                    // A raw identifier `r#name`.
                    let start = j;
                    let mut k = j;
                    while k < c.len() && (c[k].is_alphanumeric() || c[k] == '_') {
                        k += 1;
                    }
                    out.push(Token {
                        tok: Tok::Ident(c[start..k].iter().collect()),
                        line,
                    });
                    i = k;
                    continue;
                }
            }
            if matches!(word.as_str(), "b" | "c") && matches!(at(i), Some('"' | '\'')) {
                continue; // a byte/C string or byte char: the literal is read next
            }
            out.push(Token {
                tok: Tok::Ident(word),
                line,
            });
        } else if ch.is_ascii_digit() {
            while i < c.len()
                && (c[i].is_alphanumeric()
                    || c[i] == '_'
                    || (c[i] == '.' && at(i + 1).is_some_and(|d| d.is_ascii_digit())))
            {
                i += 1;
            }
        } else if ch == '"' {
            let str_line = line;
            let (s, next) = quoted(i, &mut line);
            out.push(Token {
                tok: Tok::Str(s),
                line: str_line,
            });
            i = next;
        } else if ch == '\'' {
            if at(i + 1) == Some('\\') {
                // An escaped char literal: '\n', '\'', '\u{1F600}'.
                let mut k = i + 3;
                while k < c.len() && c[k] != '\'' {
                    k += 1;
                }
                i = k + 1;
            } else if at(i + 2) == Some('\'') {
                i += 3; // 'x'
            } else {
                // A lifetime or a loop label.
                i += 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
        } else if ch == ':' && at(i + 1) == Some(':') {
            out.push(Token {
                tok: Tok::Sep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Scanner
// ---------------------------------------------------------------------------------------------

/// Where a path lands.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// A top-level module of the library crate.
    Module(String),
    /// The library's crate root itself (`use super::*` from a top-level module, `use crate::*`):
    /// it reaches every module.
    CrateRoot,
    /// The first segment of a path outside the crate: an external crate (or a local name).
    Extern(String),
    /// A path the scanner cannot resolve (e.g. `super` above the crate root).
    Unresolvable(String),
}

/// One reference found in a file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Ref {
    line: usize,
    /// The top-level module (or `lib.rs` / `main.rs`) the code stands in.
    unit: String,
    target: Target,
}

/// A file's module path below `src` and whether it is the binary's root: `model/parse.rs` →
/// [model, parse]; `engine/mod.rs` → [engine]; `lib.rs`, `main.rs` → [].
fn module_path(rel: &str) -> (Vec<String>, bool) {
    match rel {
        "main.rs" => return (vec![], true),
        "lib.rs" => return (vec![], false),
        _ => {}
    }
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = rel.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    (parts, false)
}

/// Resolves one path written in module `here`.
fn resolve(
    segs: &[String],
    here: &[String],
    bin: bool,
    declared: &BTreeSet<String>,
) -> Option<Target> {
    let segs: Vec<&str> = segs
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "*")
        .collect();
    let first = *segs.first()?;
    let abs: Vec<&str> = match first {
        "::" => return segs.get(1).map(|s| Target::Extern((*s).to_owned())),
        // In the binary, `crate`, `self` and `super` are the binary's own modules.
        "crate" | "self" | "super" if bin => return None,
        "glucoguard" if bin => segs[1..].to_vec(),
        "crate" => segs[1..].to_vec(),
        "self" => here
            .iter()
            .map(String::as_str)
            .chain(segs[1..].iter().copied())
            .collect(),
        "super" => {
            let ups = segs.iter().take_while(|s| **s == "super").count();
            if ups > here.len() {
                return Some(Target::Unresolvable(format!(
                    "`{}` climbs above the crate root",
                    segs.join("::")
                )));
            }
            here[..here.len() - ups]
                .iter()
                .map(String::as_str)
                .chain(segs[ups..].iter().copied())
                .collect()
        }
        // At the crate root a bare path names a top-level module.
        other if here.is_empty() && !bin && declared.contains(other) => segs.clone(),
        other => return Some(Target::Extern(other.to_owned())),
    };
    Some(match abs.first() {
        None => Target::CrateRoot,
        Some(m) => Target::Module((*m).to_owned()),
    })
}

/// Keywords after which `::` starts a path (`as ::wasmtime::Error`) rather than continuing one.
const PRECEDE_A_PATH: &[&str] = &[
    "as", "dyn", "impl", "in", "mut", "return", "where", "const", "static", "let", "for",
];

fn tok(t: &[Token], i: usize) -> Option<&Tok> {
    t.get(i).map(|t| &t.tok)
}

fn is_punct(t: &[Token], i: usize, p: char) -> bool {
    tok(t, i) == Some(&Tok::Punct(p))
}

/// Parses the use tree at `i` under `prefix`, pushing every full path; returns the index
/// after the tree.
fn use_tree(t: &[Token], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix.to_vec();
    if tok(t, i) == Some(&Tok::Sep) {
        if path.is_empty() {
            path.push("::".to_owned()); // `use ::wasmtime::…`: an external crate
        }
        i += 1;
    }
    loop {
        match tok(t, i) {
            Some(Tok::Ident(s)) => {
                // `a::{self}` is `a` itself; a leading `self` is the current module.
                if s != "self" || path.is_empty() {
                    path.push(s.clone());
                }
                i += 1;
                if tok(t, i) == Some(&Tok::Sep) {
                    i += 1;
                    continue;
                }
                if tok(t, i) == Some(&Tok::Ident("as".to_owned())) {
                    i += 2;
                }
                out.push(path);
                return i;
            }
            Some(Tok::Punct('*')) => {
                path.push("*".to_owned());
                out.push(path);
                return i + 1;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    if is_punct(t, i, '}') || i >= t.len() {
                        return i + 1;
                    }
                    let next = use_tree(t, i, &path, out);
                    i = if next == i { i + 1 } else { next };
                    if is_punct(t, i, ',') {
                        i += 1;
                    }
                }
            }
            _ => {
                out.push(path);
                return i;
            }
        }
    }
}

/// Every reference from the file at `rel` (relative to `src`, with `/`) into the crate's
/// top-level modules and to external crates, with its line.
fn scan(rel: &str, text: &str, declared: &BTreeSet<String>) -> Vec<Ref> {
    let t = tokenize(text);
    let (file_here, bin) = module_path(rel);
    let mut refs = Vec::new();
    // Open braces; `Some(name)` for the body of an inline `mod name { … }`.
    let mut braces: Vec<Option<String>> = Vec::new();
    let mut pending_mod: Option<String> = None;
    // The index of the `]` closing the attribute being read.
    let mut attribute_end: Option<usize> = None;
    let here_of = |braces: &[Option<String>]| -> Vec<String> {
        file_here
            .iter()
            .cloned()
            .chain(braces.iter().flatten().cloned())
            .collect()
    };
    let mut push = |line: usize, here: &[String], target: Option<Target>| {
        if let Some(target) = target {
            let unit = if bin {
                "main.rs".to_owned()
            } else {
                here.first().cloned().unwrap_or_else(|| "lib.rs".to_owned())
            };
            refs.push(Ref { line, unit, target });
        }
    };
    let mut i = 0;
    while i < t.len() {
        let line = t[i].line;
        let here = here_of(&braces);
        if attribute_end.is_some_and(|end| i > end) {
            attribute_end = None;
        }
        match &t[i].tok {
            Tok::Punct('#')
                if is_punct(&t, i + 1, '[')
                    || (is_punct(&t, i + 1, '!') && is_punct(&t, i + 2, '[')) =>
            {
                let mut depth = 0;
                let mut j = i + 1;
                while j < t.len() {
                    match t[j].tok {
                        Tok::Punct('[') => depth += 1,
                        Tok::Punct(']') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                attribute_end = Some(j);
            }
            Tok::Str(s) if attribute_end.is_some() => {
                // `#[serde(with = "crate::store::x")]` names a path in a string.
                let looks_like_path = s.contains("::")
                    && s.chars()
                        .all(|ch| ch.is_alphanumeric() || ch == '_' || ch == ':' || ch == '$');
                if looks_like_path {
                    let mut segs: Vec<String> = Vec::new();
                    let body = match s.strip_prefix("::") {
                        Some(rest) => {
                            segs.push("::".to_owned());
                            rest
                        }
                        None => s.as_str(),
                    };
                    segs.extend(
                        body.split("::")
                            .map(|p| p.trim_start_matches('$').to_owned()),
                    );
                    push(line, &here, resolve(&segs, &here, bin, declared));
                }
            }
            // `#[path = "…"]` itself, not a `path = "…"` argument of another attribute
            // (askama's `#[template(path = "page.html")]`).
            Tok::Ident(k)
                if k == "path"
                    && attribute_end.is_some()
                    && i > 0
                    && is_punct(&t, i - 1, '[')
                    && is_punct(&t, i + 1, '=') =>
            {
                push(
                    line,
                    &here,
                    Some(Target::Unresolvable(
                        "a `#[path]` attribute moves a module away from its file: teach \
                         tests/it/architecture.rs about it"
                            .to_owned(),
                    )),
                );
            }
            Tok::Ident(k) if k == "mod" => {
                if let (Some(Tok::Ident(name)), true) = (tok(&t, i + 1), is_punct(&t, i + 2, '{')) {
                    pending_mod = Some(name.clone());
                }
            }
            Tok::Punct('{') => braces.push(pending_mod.take()),
            Tok::Punct('}') => {
                braces.pop();
            }
            Tok::Ident(k) if k == "use" => {
                let mut paths = Vec::new();
                let mut j = use_tree(&t, i + 1, &[], &mut paths);
                for p in &paths {
                    push(line, &here, resolve(p, &here, bin, declared));
                }
                while j < t.len() && !is_punct(&t, j, ';') {
                    j += 1;
                }
                i = j + 1;
                continue;
            }
            Tok::Ident(k)
                if k == "extern" && tok(&t, i + 1) == Some(&Tok::Ident("crate".to_owned())) =>
            {
                if let Some(Tok::Ident(name)) = tok(&t, i + 2) {
                    push(line, &here, Some(Target::Extern(name.clone())));
                }
                i += 3;
                continue;
            }
            Tok::Ident(first)
                if tok(&t, i + 1) == Some(&Tok::Sep)
                    && !matches!(tok(&t, i.wrapping_sub(1)), Some(Tok::Sep | Tok::Punct('.'))) =>
            {
                // An inline path: `crate::store::Store`, `super::super::x`, `wasmtime::Engine`.
                let mut segs = vec![first.clone()];
                let mut j = i + 1;
                while tok(&t, j) == Some(&Tok::Sep) {
                    match tok(&t, j + 1) {
                        Some(Tok::Ident(s)) => {
                            segs.push(s.clone());
                            j += 2;
                        }
                        _ => break,
                    }
                }
                push(line, &here, resolve(&segs, &here, bin, declared));
                i = j;
                continue;
            }
            Tok::Sep
                if match tok(&t, i.wrapping_sub(1)) {
                    Some(Tok::Ident(k)) => PRECEDE_A_PATH.contains(&k.as_str()),
                    Some(Tok::Punct('>')) => false,
                    _ => true,
                } =>
            {
                // A leading `::` in code: `::wasmtime::Engine`.
                if let Some(Tok::Ident(s)) = tok(&t, i + 1) {
                    push(line, &here, Some(Target::Extern(s.clone())));
                }
            }
            _ => {}
        }
        i += 1;
    }
    refs
}

/// The modules `lib.rs` declares at its top level, and which of them live in files
/// (`mod x;`) rather than inline (`mod x { … }`).
fn declared_modules(lib: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let t = tokenize(lib);
    let (mut all, mut in_files) = (BTreeSet::new(), BTreeSet::new());
    let mut depth = 0usize;
    for i in 0..t.len() {
        match &t[i].tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth = depth.saturating_sub(1),
            Tok::Ident(k) if k == "mod" && depth == 0 => {
                if let Some(Tok::Ident(name)) = tok(&t, i + 1) {
                    all.insert(name.clone());
                    if is_punct(&t, i + 2, ';') {
                        in_files.insert(name.clone());
                    }
                }
            }
            _ => {}
        }
    }
    (all, in_files)
}

// ---------------------------------------------------------------------------------------------
// Checking a tree against the rules
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum What {
    /// A module imports a module its rule forbids (or the crate root).
    Imports(String),
    /// A module names a confined external crate its rule does not allow.
    Names(String),
    /// The rules table, the module tree and the files disagree, or a path cannot be resolved.
    Structure(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Finding {
    file: String,
    line: usize,
    unit: String,
    what: What,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.what {
            What::Imports(m) => format!("`{}` imports `{m}`", self.unit),
            What::Names(c) => format!("`{}` names the `{c}` crate", self.unit),
            What::Structure(s) => s.clone(),
        };
        write!(f, "src/{}:{}: {what}", self.file, self.line)
    }
}

/// The external crate family a path root belongs to (`wasmtime_wasi` is wasmtime).
fn confined(root: &str) -> Option<&'static str> {
    CONFINED
        .iter()
        .copied()
        .find(|c| root == *c || root.strip_prefix(c).is_some_and(|r| r.starts_with('_')))
}

/// Checks `files` ((path relative to `src` with `/`, text)) against `rules`.
fn findings(files: &[(String, String)], rules: &[Rule]) -> Vec<Finding> {
    let mut out = Vec::new();
    let structure = |file: &str, line: usize, s: String| Finding {
        file: file.to_owned(),
        line,
        unit: String::new(),
        what: What::Structure(s),
    };
    let Some((_, lib)) = files.iter().find(|(p, _)| p == "lib.rs") else {
        out.push(structure(
            "lib.rs",
            0,
            "no lib.rs: nothing declares the crate's modules".into(),
        ));
        return out;
    };
    let (declared, in_files) = declared_modules(lib);
    let rule_of = |unit: &str| rules.iter().find(|r| r.module == unit);
    let roots = ["lib.rs", "main.rs"];
    for m in &declared {
        if rule_of(m).is_none() {
            out.push(structure(
                "lib.rs",
                0,
                format!("module `{m}` is not classified in RULES (tests/it/architecture.rs): say what it may import"),
            ));
        }
    }
    for r in rules {
        let is_root = roots.contains(&r.module);
        if is_root && !files.iter().any(|(p, _)| p == r.module) {
            out.push(structure(
                r.module,
                0,
                format!("RULES classifies `{}`, which does not exist", r.module),
            ));
        }
        if !is_root && !declared.contains(r.module) {
            out.push(structure(
                "lib.rs",
                0,
                format!("RULES classifies module `{}`, but lib.rs declares no such module: renamed or removed? update RULES", r.module),
            ));
        }
        if let Imports::NoneOf(forbidden) = r.imports {
            for f in forbidden {
                if !declared.contains(*f) {
                    out.push(structure(
                        "lib.rs",
                        0,
                        format!("the rule of `{}` forbids module `{f}`, which lib.rs does not declare: renamed or removed? update RULES", r.module),
                    ));
                }
            }
        }
        for c in r.may_name {
            if !CONFINED.contains(c) {
                out.push(structure(
                    "lib.rs",
                    0,
                    format!(
                        "the rule of `{}` allows `{c}`, which is not in CONFINED",
                        r.module
                    ),
                ));
            }
        }
    }
    for m in &in_files {
        let file = format!("{m}.rs");
        let dir = format!("{m}/mod.rs");
        if !files.iter().any(|(p, _)| *p == file || *p == dir) {
            out.push(structure(
                "lib.rs",
                0,
                format!("module `{m}` has neither src/{file} nor src/{dir}"),
            ));
        }
    }
    for (path, text) in files {
        let (here, bin) = module_path(path);
        if !bin
            && let Some(top) = here.first()
            && !declared.contains(top)
        {
            out.push(structure(
                path,
                0,
                format!("file belongs to no module lib.rs declares (`{top}`)"),
            ));
        }
        for r in scan(path, text, &declared) {
            let Some(rule) = rule_of(&r.unit) else {
                // Reported above (unclassified module) or just now (stray file).
                continue;
            };
            let what = match &r.target {
                Target::Module(m) if !declared.contains(m) => What::Structure(format!(
                    "a path into crate module `{m}`, which lib.rs does not declare"
                )),
                Target::Module(m) if *m == r.unit => continue,
                Target::Module(m) => match rule.imports {
                    Imports::Any => continue,
                    Imports::NoneOf(forbidden) if !forbidden.contains(&m.as_str()) => continue,
                    _ => What::Imports(m.clone()),
                },
                Target::CrateRoot => match rule.imports {
                    Imports::Any => continue,
                    _ => What::Imports("the crate root (which reaches every module)".to_owned()),
                },
                Target::Extern(root) => match confined(root) {
                    Some(c) if !rule.may_name.contains(&c) => What::Names(c.to_owned()),
                    _ => continue,
                },
                Target::Unresolvable(s) => What::Structure(s.clone()),
            };
            out.push(Finding {
                file: path.clone(),
                line: r.line,
                unit: r.unit.clone(),
                what,
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

// ---------------------------------------------------------------------------------------------
// The real tree
// ---------------------------------------------------------------------------------------------

fn rust_files(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// Every `.rs` file under `host/src`, relative paths with `/`.
fn source_tree() -> &'static [(String, String)] {
    static TREE: OnceLock<Vec<(String, String)>> = OnceLock::new();
    TREE.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &src, &mut files);
        files.sort();
        files
    })
}

fn tree_findings() -> &'static [Finding] {
    static FINDINGS: OnceLock<Vec<Finding>> = OnceLock::new();
    FINDINGS.get_or_init(|| findings(source_tree(), RULES))
}

/// Fails listing every finding `pick` selects.
fn assert_none(title: &str, pick: impl Fn(&Finding) -> bool) {
    let hits: Vec<String> = tree_findings()
        .iter()
        .filter(|f| pick(f))
        .map(Finding::to_string)
        .collect();
    assert!(hits.is_empty(), "{title}:\n{}", hits.join("\n"));
}

fn imports_in(f: &Finding, units: &[&str]) -> bool {
    matches!(f.what, What::Imports(_)) && units.contains(&f.unit.as_str())
}

#[test]
fn every_module_and_file_under_src_is_classified() {
    let files = source_tree();
    assert!(
        files.iter().any(|(p, _)| p == "lib.rs")
            && files.iter().any(|(p, _)| p.starts_with("model/")),
        "the walk found no lib.rs or no src/model/*.rs: {:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    assert_none("the rules table and the module tree disagree", |f| {
        matches!(f.what, What::Structure(_))
    });
}

#[test]
fn the_scanner_sees_the_wiring_that_exists() {
    // Positive controls on the real tree: if the scanner stopped seeing paths, every
    // absence below would pass vacuously.
    let (declared, _) =
        declared_modules(&source_tree().iter().find(|(p, _)| p == "lib.rs").unwrap().1);
    let mut seen: BTreeSet<(String, Target)> = BTreeSet::new();
    for (path, text) in source_tree() {
        for r in scan(path, text, &declared) {
            seen.insert((r.unit, r.target));
        }
    }
    let module = |u: &str, m: &str| seen.contains(&(u.to_owned(), Target::Module(m.to_owned())));
    let names = |u: &str, c: &str| {
        seen.iter().any(|(unit, t)| {
            unit == u && matches!(t, Target::Extern(root) if confined(root) == Some(c))
        })
    };
    for m in ["engine", "sources", "sinks", "store", "model"] {
        assert!(
            module("pipeline", m),
            "the pipeline wires {m}, the scanner should see it"
        );
    }
    assert!(module("main.rs", "app"), "main.rs uses glucoguard::app");
    assert!(names("engine", "wasmtime"));
    assert!(names("analytics", "duckdb"));
    assert!(names("archive", "object_store"));
}

#[test]
fn sources_engine_sinks_and_store_never_import_each_other() {
    assert_none(
        "sources, engine, sinks and store import each other (only the pipeline wires them)",
        |f| imports_in(f, &["sources", "engine", "sinks", "store"]),
    );
}

#[test]
fn model_imports_nothing_else_from_the_crate() {
    assert_none("model imports from the crate", |f| {
        imports_in(f, &["model"])
    });
}

#[test]
fn analytics_and_archive_are_sinks_downstream_of_the_store() {
    // Analytics reads the OLTP store only to catch up; neither knows the engine, the sources
    // or the pipeline. The archive never reads the OLTP store: it holds what the store may
    // drop. Retention touches the store only.
    assert_none("a storage sink or retention reaches upstream", |f| {
        imports_in(f, &["analytics", "archive", "retention"])
    });
}

#[test]
fn only_analytics_archive_the_cli_and_the_checkpoint_store_name_duckdb_and_object_store() {
    assert_none(
        "DuckDB named outside analytics, archive and main.rs, or object_store outside those and sources",
        |f| matches!(&f.what, What::Names(c) if c == "duckdb" || c == "object_store"),
    );
}

#[test]
fn only_the_engine_names_wasmtime() {
    assert_none(
        "wasmtime named outside the engine",
        |f| matches!(&f.what, What::Names(c) if c == "wasmtime"),
    );
}

#[test]
fn the_host_never_depends_on_the_sdk_and_the_simulator_never_on_the_host() {
    let manifest =
        |p: &str| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).unwrap();
    let host = manifest("Cargo.toml");
    let deps = host.split("[dev-dependencies]").next().unwrap();
    assert!(
        !deps.contains("glucoguard-sdk") && !deps.contains("default-rule"),
        "the SDK is a dev-dependency only"
    );
    let sim = manifest("../simulator/Cargo.toml");
    assert!(
        !sim.contains("glucoguard ="),
        "the simulator depends on nothing in host"
    );
    assert!(
        !sim.contains("path = \"../host\""),
        "the simulator depends on nothing in host"
    );
}

// ---------------------------------------------------------------------------------------------
// Self-tests of the scanner and the checks on small inline sources
// ---------------------------------------------------------------------------------------------

const DECLARED: &[&str] = &["a", "d", "engine", "model", "sinks", "sources", "store"];

/// The crate modules a source at `rel` refers to.
fn modules_of(rel: &str, text: &str) -> BTreeSet<String> {
    let declared = DECLARED.iter().map(|s| (*s).to_owned()).collect();
    scan(rel, text, &declared)
        .into_iter()
        .filter_map(|r| match r.target {
            Target::Module(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// The confined external crates a source at `rel` names.
fn confined_of(rel: &str, text: &str) -> BTreeSet<&'static str> {
    scan(rel, text, &BTreeSet::new())
        .into_iter()
        .filter_map(|r| match r.target {
            Target::Extern(root) => confined(&root),
            _ => None,
        })
        .collect()
}

fn set<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_scanner_reads_grouped_and_nested_imports() {
    assert_eq!(
        modules_of("sources/x.rs", "use crate::{store, engine::history};"),
        set(["store", "engine"])
    );
    assert_eq!(
        modules_of("sources/x.rs", "use crate::{a::{b, c}, d::{self, e as f}};"),
        set(["a", "d"])
    );
    assert_eq!(
        modules_of(
            "sources/x.rs",
            "pub(crate) use crate::{\n    model::{Reading, parse},\n    sinks::{self},\n};"
        ),
        set(["model", "sinks"])
    );
    assert_eq!(
        modules_of("sources/x.rs", "use crate::store::*;"),
        set(["store"])
    );
}

#[test]
fn the_scanner_follows_super_and_self_through_files_and_inline_modules() {
    assert_eq!(
        modules_of("sources/http.rs", "use super::super::store::Store;"),
        set(["store"])
    );
    // Inside `mod tests`, one more `super` is needed to climb as far.
    assert_eq!(
        modules_of(
            "sources/http.rs",
            "mod tests { use super::super::store::Store; }"
        ),
        set(["sources"])
    );
    assert_eq!(
        modules_of(
            "sources/http.rs",
            "mod tests { fn f() { super::super::super::engine::run(); } }\nfn g() { super::Ack::none(); }"
        ),
        set(["engine", "sources"])
    );
    // A top-level file's `super` is the crate root.
    assert_eq!(
        modules_of("config.rs", "use super::store::Store;"),
        set(["store"])
    );
    assert_eq!(
        modules_of("model/parse.rs", "use super::{Body, Reading};"),
        set(["model"])
    );
    assert_eq!(
        modules_of(
            "engine/bindings.rs",
            "pub use self::glucoguard::rules::host;"
        ),
        set(["engine"])
    );
    let declared = DECLARED.iter().map(|s| (*s).to_owned()).collect();
    let root = scan(
        "config.rs",
        "mod tests { use super::*; }\nuse super::*;",
        &declared,
    );
    assert_eq!(
        root.iter().map(|r| &r.target).collect::<Vec<_>>(),
        vec![&Target::Module("config".into()), &Target::CrateRoot]
    );
    let above = scan("sources/mod.rs", "use super::super::x;", &declared);
    assert!(
        matches!(&above[0].target, Target::Unresolvable(s) if s.contains("above the crate root"))
    );
}

#[test]
fn the_scanner_sees_inline_paths_and_skips_comments_and_strings() {
    assert_eq!(
        modules_of(
            "sinks/mod.rs",
            "fn f(s: &dyn crate::store::Store) -> Vec<crate::model::Alert> {\n    <crate::engine::X as T>::go(); vec![]\n}"
        ),
        set(["store", "model", "engine"])
    );
    assert_eq!(
        modules_of(
            "sinks/mod.rs",
            "// use crate::store;\n/// crate::engine::X\n/* crate::sinks /* nested */ crate::a */\n\
             let s = \"crate::pipeline::x\"; let r = r#\"crate::store\"#; let b = b\"crate::d\";\n\
             let q = '\"'; fn f<'a>(x: &'a str) {}"
        ),
        set([])
    );
    // A char literal holding a quote must not open a string that hides the next line.
    assert_eq!(
        modules_of("sinks/mod.rs", "let q = '\"';\nuse crate::store;"),
        set(["store"])
    );
    // Attribute strings naming paths are paths.
    assert_eq!(
        modules_of(
            "sinks/mod.rs",
            "#[serde(with = \"crate::store::ser\", default = \"default_path\")]\nstruct S;"
        ),
        set(["store"])
    );
    // `$crate` in a macro is this crate.
    assert_eq!(
        modules_of(
            "sinks/mod.rs",
            "macro_rules! m { () => { $crate::engine::go() } }"
        ),
        set(["engine"])
    );
}

#[test]
fn the_scanner_reads_the_binary_and_external_crates() {
    assert_eq!(
        modules_of(
            "main.rs",
            "use glucoguard::{app, archive::fetch};\nfn main() { glucoguard::store::open(); crate::cli::x(); }"
        ),
        set(["app", "archive", "store"])
    );
    assert_eq!(
        confined_of(
            "sinks/mod.rs",
            "use ::wasmtime::Engine;\nfn f(x: wasmtime_wasi::X, y: ::object_store::Path) {\n\
             let c = duckdb::Connection::open(); let duckdb = 1; default_duckdb_path(); x.duckdb::<u8>();\n}"
        ),
        BTreeSet::from(["wasmtime", "duckdb", "object_store"])
    );
    assert_eq!(
        confined_of("x.rs", "extern crate duckdb;"),
        BTreeSet::from(["duckdb"])
    );
    assert_eq!(
        confined_of("x.rs", "use {duckdb, std::fmt};"),
        BTreeSet::from(["duckdb"])
    );
    assert_eq!(
        confined_of(
            "x.rs",
            "let p = duckdb_path; fn duckdb() {} \"wasmtime::Engine\";"
        ),
        BTreeSet::new()
    );
}

#[test]
fn the_checks_fail_on_violations_and_on_unknown_missing_or_stray_modules() {
    let files: Vec<(String, String)> = [
        (
            "lib.rs",
            "pub mod model;\npub mod sources;\npub mod store;\npub mod extra;\npub mod gone;",
        ),
        ("model.rs", "pub mod parse;"),
        ("model/parse.rs", "fn f() -> crate::nowhere::X { todo!() }"),
        (
            "sources/mod.rs",
            "use crate::{model, store::Store};\nuse duckdb::Connection;",
        ),
        ("store.rs", "use crate::sources::X;"),
        ("extra.rs", ""),
        ("ghost/x.rs", ""),
    ]
    .iter()
    .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
    .collect();
    let rules = [
        Rule {
            module: "lib.rs",
            imports: Imports::Any,
            may_name: &[],
        },
        Rule {
            module: "model",
            imports: Imports::Nothing,
            may_name: &[],
        },
        Rule {
            module: "sources",
            imports: Imports::NoneOf(&["store"]),
            may_name: &[],
        },
        Rule {
            module: "store",
            imports: Imports::NoneOf(&["engine"]),
            may_name: &[],
        },
        Rule {
            module: "gone",
            imports: Imports::Any,
            may_name: &[],
        },
        Rule {
            module: "renamed",
            imports: Imports::Any,
            may_name: &[],
        },
    ];
    let found: Vec<String> = findings(&files, &rules)
        .iter()
        .map(Finding::to_string)
        .collect();
    let expect = [
        "src/sources/mod.rs:1: `sources` imports `store`",
        "src/sources/mod.rs:2: `sources` names the `duckdb` crate",
        "module `extra` is not classified in RULES",
        "RULES classifies module `renamed`, but lib.rs declares no such module",
        "the rule of `store` forbids module `engine`, which lib.rs does not declare",
        "module `gone` has neither src/gone.rs nor src/gone/mod.rs",
        "src/ghost/x.rs:0: file belongs to no module lib.rs declares",
        "src/model/parse.rs:1: a path into crate module `nowhere`, which lib.rs does not declare",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.contains(e)),
            "no finding says {e:?}: {found:#?}"
        );
    }
    // `sources` may import `model`, and `store` importing `sources` is allowed by its
    // (deliberately loose) test rule: nothing else is reported.
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn the_checks_catch_escapes_added_to_the_real_tree() {
    // The real sources, with escapes of each kind appended to files the rules restrict.
    let mut files = source_tree().to_vec();
    let mut append = |path: &str, code: &str| {
        let (_, text) = files
            .iter_mut()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("src/{path} is gone: pick another file for this test"));
        text.push_str(code);
    };
    append(
        "sources/mod.rs",
        "\nuse crate::{model, store::{Store, StoreError}};\n",
    );
    append(
        "sources/http.rs",
        "\nfn f() { super::super::pipeline::go(); }\n",
    );
    append("sinks/mod.rs", "\nfn g(_: &crate::engine::Engine) {}\n");
    append(
        "model/parse.rs",
        "\nmod t { use super::super::super::store::Store; }\n",
    );
    append("archive/mod.rs", "\nfn h(_: &dyn crate::store::Store) {}\n");
    append(
        "pipeline/mod.rs",
        "\nfn k(_: wasmtime::Engine, _: ::duckdb::Connection) {}\n",
    );
    let found: Vec<String> = findings(&files, RULES)
        .iter()
        .map(Finding::to_string)
        .collect();
    for e in [
        "`sources` imports `store`",
        "`sources` imports `pipeline`",
        "`sinks` imports `engine`",
        "`model` imports `store`",
        "`archive` imports `store`",
        "`pipeline` names the `wasmtime` crate",
        "`pipeline` names the `duckdb` crate",
    ] {
        assert!(
            found.iter().any(|f| f.contains(e)),
            "no finding says {e:?}: {found:#?}"
        );
    }
    assert_eq!(found.len(), 7, "{found:#?}");
}
