//! The crate's files import each other without circles, and kernels never reach back into
//! the layers: read from the source itself, so a new file that closes a circle fails here.
//!
//! A file imports another when one of its `use` lines or `crate::…` / `super::…` / `self::…`
//! paths names an item defined there; a path through a `pub use` re-export counts as
//! importing the file that defines the item, not the one that re-exports it. A module's
//! `mod` declarations are not imports. Tests at the end of a file are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// Every file of `src/`, by module path (`lib.rs` is `[]`, `a/mod.rs` and `a.rs` are `[a]`),
/// with comments and its trailing test module removed.
fn read_sources() -> BTreeMap<Module, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Module, String>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let mut module = prefix.to_vec();
            if path.is_dir() {
                module.push(name);
                walk(&path, &module, out);
                continue;
            }
            let Some(stem) = name.strip_suffix(".rs") else {
                continue;
            };
            if stem != "mod" && stem != "lib" {
                module.push(stem.to_string());
            }
            let text = std::fs::read_to_string(&path).expect("a source file is UTF-8");
            out.insert(module, strip(&text));
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut out,
    );
    out
}

/// The code of a file without comments and without its `#[cfg(test)] mod tests`.
fn strip(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let mut code = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        code.push_str(&rest[..start]);
        rest = rest[start..]
            .split_once("*/")
            .map_or("", |(_, after)| after);
    }
    code.push_str(rest);
    code.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The statements `<keyword> …;` of `code` (`use`, or `pub use` re-exports), as their trees.
fn statements<'a>(code: &'a str, keyword: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(keyword) {
        let boundary = at == 0 || !rest[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        let tail = &rest[at + keyword.len()..];
        match tail.find(';') {
            Some(end) if boundary => {
                found.push(tail[..end].trim());
                rest = &tail[end..];
            }
            _ => rest = tail,
        }
    }
    found
}

/// `code` without its `use` statements.
fn without_uses(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let boundary = at == 0 || !rest[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        let end = rest[at..].find(';').map_or(rest.len(), |e| at + e + 1);
        out.push_str(&rest[..if boundary { at } else { end }]);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `a::{b, c::{d, e as f}}` -> `a::b`, `a::c::d`, `a::c::e as f`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.to_string()];
    };
    let (prefix, inner) = (
        &tree[..open],
        &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())],
    );
    let (mut items, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    items.push(current);
    items
        .iter()
        .filter(|i| !i.trim().is_empty())
        .flat_map(|i| expand(i))
        .map(|i| match i.as_str() {
            "self" => prefix.trim_end_matches("::").to_string(),
            _ => format!("{prefix}{i}"),
        })
        .collect()
}

struct Crate {
    files: BTreeMap<Module, String>,
    /// Per module: the name it re-exports -> the path it re-exports.
    reexports: BTreeMap<Module, BTreeMap<String, Vec<String>>>,
}

impl Crate {
    /// The file defining what `path`, written in `module`, names; `None` outside the crate.
    fn resolve(&self, module: &Module, path: &str, depth: usize) -> Option<Module> {
        let path = path.split(" as ").next().unwrap_or_default();
        let segments: Vec<&str> = path.split("::").map(str::trim).collect();
        let (mut base, mut rest): (Module, &[&str]) = match segments.first().copied()? {
            "crate" => (Vec::new(), &segments[1..]),
            "self" => (module.clone(), &segments[1..]),
            "super" => (module.clone(), &segments[..]),
            first => {
                let mut child = module.clone();
                child.push(first.to_string());
                if !self.files.contains_key(&child) {
                    return None; // std, candle_core, ...
                }
                (module.clone(), &segments[..])
            }
        };
        while rest.first() == Some(&"super") {
            base.pop();
            rest = &rest[1..];
        }
        let mut found = base.clone();
        let mut used = 0;
        for (i, segment) in rest.iter().enumerate() {
            let mut candidate = found.clone();
            candidate.push(segment.to_string());
            if !self.files.contains_key(&candidate) {
                break;
            }
            found = candidate;
            used = i + 1;
        }
        // An item the module only re-exports: follow it to the file that defines it.
        if let (Some(item), true) = (rest.get(used), depth < 8) {
            let targets = self.reexports.get(&found).and_then(|r| r.get(*item));
            for target in targets.into_iter().flatten() {
                if let Some(file) = self.resolve(&found, target, depth + 1) {
                    return Some(file);
                }
            }
        }
        Some(found)
    }

    /// Which files each file imports.
    fn edges(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        let mut edges = BTreeMap::new();
        for (module, code) in &self.files {
            let mut targets = BTreeSet::new();
            for tree in statements(code, "use ") {
                for path in expand(tree) {
                    targets.extend(self.resolve(module, &path, 0));
                }
            }
            // Paths written inline, outside `use` lines: from the crate, the parent, this
            // module, or one of its child modules (`direct::forward` in the dispatch).
            let inline = without_uses(code);
            let children: Vec<String> = self
                .files
                .keys()
                .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
                .map(|m| format!("{}::", m[module.len()]))
                .collect();
            let starts: Vec<&str> = ["crate::", "super::", "self::"]
                .into_iter()
                .chain(children.iter().map(String::as_str))
                .collect();
            let mut rest = inline.as_str();
            while let Some(at) = starts.iter().filter_map(|k| rest.find(k)).min() {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(tail.len());
                let word_inside = rest[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
                if !word_inside {
                    targets.extend(self.resolve(module, tail[..end].trim_end_matches(':'), 0));
                }
                rest = &tail[end.max(1)..];
            }
            targets.remove(module);
            edges.insert(module.clone(), targets);
        }
        edges
    }
}

fn load() -> Crate {
    let files = read_sources();
    let mut reexports: BTreeMap<Module, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (module, code) in &files {
        for keyword in ["pub use ", "pub(crate) use ", "pub(super) use "] {
            for tree in statements(code, keyword) {
                for path in expand(tree) {
                    let name = path
                        .rsplit([' ', ':'])
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let target = path.split(" as ").next().unwrap_or_default().to_string();
                    reexports
                        .entry(module.clone())
                        .or_default()
                        .entry(name)
                        .or_default()
                        .push(target);
                }
            }
        }
    }
    Crate { files, reexports }
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "lib.rs".into()
    } else {
        module.join("/")
    }
}

/// The strongly connected components of more than one file (Tarjan).
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        for w in s.edges.get(v).into_iter().flatten() {
            let Some((w, _)) = s.edges.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(name(w));
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let krate = load();
    let edges = krate.edges();
    // The reader sees what it must: a few imports known to exist.
    let imports = |from: &[&str], to: &[&str]| {
        let from: Module = from.iter().map(|s| s.to_string()).collect();
        let to: Module = to.iter().map(|s| s.to_string()).collect();
        edges[&from].contains(&to)
    };
    assert!(imports(&["engine"], &["plan"]));
    assert!(
        imports(&["plan"], &["methods", "method"]),
        "through the re-export"
    );
    assert!(
        imports(&["nn", "conv"], &["macs"]),
        "an inline crate:: path"
    );
    assert!(imports(
        &["kernels", "conv"],
        &["kernels", "conv", "geometry"]
    ));
    let found = circles(&edges);
    assert!(found.is_empty(), "import circles: {found:?}");
}

#[test]
fn kernels_never_reach_back_into_the_layers() {
    let krate = load();
    for (module, targets) in krate.edges() {
        if module.first().map(String::as_str) != Some("kernels") {
            continue;
        }
        for target in targets {
            assert_ne!(
                target.first().map(String::as_str),
                Some("nn"),
                "{} imports {}",
                name(&module),
                name(&target)
            );
        }
    }
}
