//! torchvision's CIFAR batches (pickles) on arbitrary bytes: the opcode check, serde-pickle's
//! decoding and the batch's layout checks.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for cifar100 in [false, true] {
        let path = Path::new("data_batch_1");
        if let Ok(set) = auglocal_data::cifar::parse_python(data, cifar100, path) {
            assert_eq!(set.images.len(), set.labels.len() * 3072);
            assert!(set.labels.iter().all(|&l| (l as usize) < set.classes));
        }
    }
});
