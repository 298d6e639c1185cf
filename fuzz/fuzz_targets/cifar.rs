//! The CIFAR-10 and CIFAR-100 record readers on arbitrary bytes.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for cifar100 in [false, true] {
        if let Ok(set) = auglocal_data::cifar::parse(data, cifar100, Path::new("fuzz.bin")) {
            assert_eq!(set.images.len(), set.labels.len() * 3072);
            assert!(set.labels.iter().all(|&l| (l as usize) < set.classes));
        }
    }
});
