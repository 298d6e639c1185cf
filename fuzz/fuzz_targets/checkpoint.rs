//! The checkpoint loader on arbitrary files: `state.json` read as the CLI's run state and
//! checked, `model.safetensors` loaded into a small model (every tensor, as `--resume` and
//! `eval --checkpoint` do, and the backbone only, as `--init-from` does) and
//! `optimizer.safetensors` into its SGD momentum. Errors are fine; panics are not.
#![no_main]

use std::path::Path;

use auglocal_cli::CliState;
use auglocal_core::checkpoint::{self, Coverage};
use auglocal_core::optim::state_key;
use auglocal_core::{AdamW, AdamWConfig, Optimizer, ParamStore, Sgd, SgdConfig};
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
        let momentum = dir.join(checkpoint::OPTIMIZER_FILE);
        let sgd = Sgd::new(SgdConfig::default()).expect("the default SGD settings are valid");
        let adamw = AdamW::new(AdamWConfig::default()).expect("PyTorch's AdamW settings are valid");
        let optimizers: [Box<dyn Optimizer>; 2] = [Box::new(sgd), Box::new(adamw)];
        for mut optimizer in optimizers {
            if checkpoint::load_optimizer_from_bytes(
                files.optimizer,
                &momentum,
                store,
                optimizer.as_mut(),
            )
            .is_ok()
            {
                for (key, state) in optimizer.state() {
                    let (slot, name) = state_key(&key);
                    let entry = store.get(name).expect("state only for a known parameter");
                    let dims = optimizer.slot_dims(slot, entry.var.dims());
                    assert_eq!(Some(state.dims().to_vec()), dims, "{key}");
                }
            }
        }
    });
});
