//! The Hugging Face Hub parquet reader on arbitrary bytes: the image and label columns
//! picked and read, then the images decoded (PNG/JPEG) and the labels checked.
//!
//! The parquet crate panics on some malformed files; the reader turns those panics into
//! errors (`catch_unwind`), so here they are not crashes. libFuzzer's panic hook aborts on
//! every panic, caught or not, so it is kept for every panic but the parquet crate's; a
//! panic anywhere else still aborts the run.
#![no_main]

use std::path::Path;
use std::sync::Once;

use auglocal_data::parquet_images::{self, Columns};
use libfuzzer_sys::fuzz_target;

static HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_parquet = info
                .location()
                .is_some_and(|l| l.file().contains("/parquet-"));
            if !in_parquet {
                fuzzer_hook(info);
            }
        }));
    });
    let path = Path::new("train-00000-of-00001.parquet");
    let Ok(rows) = parquet_images::parse_rows(data.to_vec(), path, &Columns::default()) else {
        return;
    };
    assert_eq!(rows.images.len(), rows.labels.len());
    if let Ok(set) = parquet_images::decode("fuzz", rows, None) {
        assert_eq!(
            set.images.len(),
            set.labels.len() * 3 * set.height * set.width
        );
        assert!(set.labels.iter().all(|&l| (l as usize) < set.classes));
    }
});
