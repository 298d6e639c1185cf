//! One file of an image folder on arbitrary bytes: decoded as `--dataset imagefolder` does
//! (JPEG or PNG, told by content), then cut to a 32x32 input both ways: the evaluation
//! resize and centre crop, and the training random-resized crop with flip.
#![no_main]

use std::path::Path;

use auglocal_data::image_folder::{self, FolderConfig};
use auglocal_data::Augment;
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fuzz_target!(|data: &[u8]| {
    let Ok((image, height, width)) =
        image_folder::decode_image(data, Path::new("n01440764/0.JPEG"))
    else {
        return;
    };
    assert_eq!(image.len(), 3 * height * width);
    let spec = auglocal_data::spec("imagefolder").expect("a line of the table");
    let (normalize, train) = (spec.normalize, spec.augment);
    let config = FolderConfig::with_size(32);
    let mut out = vec![f32::NAN; 3 * 32 * 32];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for augment in [Augment::None, train] {
        image_folder::prepare(
            &config,
            (&image, height, width),
            augment,
            &normalize,
            &mut rng,
            &mut out,
        );
        assert!(out.iter().all(|v| v.is_finite()));
    }
});
