//! The README shows what the code is: the tables of methods and modifiers as `METHODS` and
//! `MODIFIERS` have them, and the
//! library examples as they are in `examples/` (which `cargo test` compiles and
//! `tests/library.rs` runs).

use auglocal_core::{METHODS, MODIFIERS};

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    std::fs::read_to_string(path).expect("the README is readable")
}

#[test]
fn the_methods_table_is_the_libraries_table() {
    let mut table =
        String::from("| method | K | what trains each module but the last |\n|---|---|---|\n");
    for m in METHODS {
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            m.name,
            m.rule.describe(),
            m.help
        ));
    }
    assert!(
        readme().contains(&table),
        "the README's table of methods differs from METHODS; it should read:\n{table}"
    );
}

#[test]
fn the_modifiers_table_is_the_libraries_table() {
    let mut table = String::from("| modifier | what it changes |\n|---|---|\n");
    for m in MODIFIERS {
        table.push_str(&format!("| `+{}` | {} |\n", m.name, m.help));
    }
    assert!(
        readme().contains(&table),
        "the README's table of modifiers differs from MODIFIERS; it should read:\n{table}"
    );
}

#[test]
fn the_examples_are_shown_as_they_are() {
    let readme = readme();
    for example in ["library.rs", "own_loss.rs"] {
        let path = format!("{}/examples/{example}", env!("CARGO_MANIFEST_DIR"));
        let code = std::fs::read_to_string(&path).expect("the example is readable");
        assert!(
            readme.contains(&format!("```rust\n{code}```")),
            "the README does not show examples/{example} as it is"
        );
    }
}

/// What crates.io shows and `cargo package` packs: each published crate's description,
/// README, keywords, categories and both licence files.
#[test]
fn every_published_crate_has_its_package_metadata() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for name in [
        "auglocal-core",
        "auglocal-models",
        "auglocal-data",
        "auglocal-cli",
    ] {
        let dir = std::path::Path::new(root).join(name);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let manifest: toml::Table = toml::from_str(&manifest).unwrap();
        let package = manifest["package"].as_table().unwrap();
        assert!(
            package["description"].as_str().unwrap().len() > 20,
            "{name}"
        );
        assert_eq!(package["readme"].as_str(), Some("README.md"), "{name}");
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.starts_with(&format!("# {name}\n")), "{name}");
        assert!(readme.contains("[dependencies]") || name == "auglocal-cli");
        let keywords = package["keywords"].as_array().unwrap();
        assert!(
            (1..=5).contains(&keywords.len()),
            "{name}: crates.io takes 5 keywords"
        );
        for keyword in keywords {
            let keyword = keyword.as_str().unwrap();
            assert!(
                keyword.len() <= 20 && keyword.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            );
        }
        assert!(
            !package["categories"].as_array().unwrap().is_empty(),
            "{name}"
        );
        let mit = std::fs::read_to_string(dir.join("LICENSE-MIT")).unwrap();
        assert!(mit.starts_with("MIT License"), "{name}");
        let apache = std::fs::read_to_string(dir.join("LICENSE-APACHE")).unwrap();
        assert!(apache.contains("Apache License") && apache.contains("Version 2.0"));
        assert_eq!(
            package["license"]["workspace"].as_bool(),
            Some(true),
            "{name}"
        );
    }
}
