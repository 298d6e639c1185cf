//! The checkpoint loader on arbitrary files: `state.json` read as the CLI's run state and
//! checked, `model.safetensors` loaded into a small model (every tensor, as `--resume` and
//! `eval --checkpoint` do, and the backbone only, as `--init-from` does) and
//! `optimizer.safetensors` into its SGD momentum. Errors are fine; panics are not.
#![no_main]

use std::path::Path;

use auglocal_cli::CliState;
use auglocal_core::checkpoint::{self, Coverage};
use auglocal_core::{ParamStore, Sgd, SgdConfig};
use auglocal_data_fuzz::{split_checkpoint, tiny_store};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static STORE: ParamStore = tiny_store();
}

fuzz_target!(|data: &[u8]| {
    let files = split_checkpoint(data);
    let dir = Path::new("checkpoint");
    if let Ok(state) = checkpoint::parse_state::<CliState>(files.state, &dir.join("state.json")) {
        if state.meta.check(dir).is_ok() {
            assert!(state.meta.classes >= 1);
        }
    }
    STORE.with(|store| {
        let weights = dir.join(checkpoint::WEIGHTS_FILE);
        for coverage in [Coverage::Everything, Coverage::Backbone] {
            if checkpoint::load_weights_from_bytes(files.weights, &weights, store, coverage).is_ok()
            {
                for entry in store.entries() {
                    assert_eq!(entry.var.as_tensor().dims(), entry.var.dims());
                }
            }
        }
        let mut sgd = Sgd::new(SgdConfig::default()).expect("the default SGD settings are valid");
        let momentum = dir.join(checkpoint::OPTIMIZER_FILE);
        if checkpoint::load_optimizer_from_bytes(files.optimizer, &momentum, store, &mut sgd)
            .is_ok()
        {
            for (name, buffer) in sgd.state() {
                let entry = store
                    .get(name)
                    .expect("a buffer only for a known parameter");
                assert_eq!(buffer.dims(), entry.var.dims());
            }
        }
    });
});
