//! The README shows what the code is: the table of methods as `METHODS` has it, and the
//! library examples as they are in `examples/` (which `cargo test` compiles and
//! `tests/library.rs` runs).

use auglocal_core::METHODS;

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
