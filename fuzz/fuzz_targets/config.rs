//! The TOML config file of `auglocal train --config` on arbitrary text: parsed, merged over
//! the recipe it names and validated, as a new run does. Errors are fine; panics are not.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // read_toml reads the file as UTF-8 text and rejects anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = auglocal_cli::Settings::parse_toml(text, Path::new("config.toml")) else {
        return;
    };
    let flags = auglocal_cli::Settings::default();
    if let Ok(settings) = auglocal_cli::TrainConfig::resolve(&file, &flags) {
        assert!(settings.epochs >= 1 && settings.batch_size >= 2);
    }
});
