//! The MAT-file reader on arbitrary bytes: it must return an error, never panic, and never
//! inflate more than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(arrays) = auglocal_data::mat::parse(data, 64 << 20) {
        for array in arrays {
            let count: usize = array.dims.iter().product();
            assert_eq!(count, array.data.len());
        }
    }
});
