//! The STL-10 reader on arbitrary image and label bytes (the input split in two).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| b as usize) % (data.len().max(1));
    let (labels, images) = data.split_at(split);
    if let Ok(set) =
        auglocal_data::stl10::parse(images, labels, Path::new("X.bin"), Path::new("y.bin"))
    {
        assert_eq!(set.images.len(), set.labels.len() * 3 * 96 * 96);
        assert!(set.labels.iter().all(|&l| l < 10));
    }
});
