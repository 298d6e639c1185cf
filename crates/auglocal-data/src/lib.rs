//! # auglocal-data
//!
//! Image-classification data for auglocal: readers for the CIFAR-10/100 binary files
//! ([`cifar`]), a synthetic dataset generated in code so that nothing has to be downloaded
//! ([`synthetic`]), the paper's augmentation and normalisation ([`transforms`]) and a seeded,
//! resumable batch loader ([`loader`]).
//!
//! Every random choice (shuffle, crop, flip, synthetic nuisances) is drawn from a ChaCha8
//! generator seeded from the integers that identify it, so results do not depend on the number
//! of threads or on where a run resumed.

pub mod cifar;
pub mod loader;
pub mod synthetic;
pub mod transforms;

mod error;
mod image_set;
mod seed;

pub use error::{Error, Result};
pub use image_set::ImageSet;
pub use loader::{Batch, Loader, LoaderConfig};
pub use transforms::{Augment, Normalize};

use std::path::Path;

/// Which half of a dataset to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training images.
    Train,
    /// The held-out test images.
    Test,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Dataset names the CLI accepts.
pub const DATASETS: &[&str] = &["synthetic", "cifar10", "cifar100"];

/// Opens a dataset split by name.
///
/// `data_dir` is required for `cifar10` and `cifar100` (the directory holding the binary
/// files or their unpacked tarball folder). `synthetic` ignores `data_dir` and generates
/// [`synthetic::SyntheticConfig::default`] sizes.
pub fn open(name: &str, data_dir: Option<&Path>, split: Split) -> Result<ImageSet> {
    match name {
        "synthetic" => Ok(synthetic::generate(
            &synthetic::SyntheticConfig::default(),
            split,
        )),
        "cifar10" => {
            let dir = data_dir.ok_or(Error::MissingDataDir {
                dataset: "cifar10",
                holding: cifar::CIFAR10_HOLDING,
            })?;
            cifar::load_cifar10(dir, split)
        }
        "cifar100" => {
            let dir = data_dir.ok_or(Error::MissingDataDir {
                dataset: "cifar100",
                holding: cifar::CIFAR100_HOLDING,
            })?;
            cifar::load_cifar100(dir, split)
        }
        _ => Err(unknown_dataset(name)),
    }
}

/// The paper's normalisation and training augmentation for a dataset name.
///
/// CIFAR-10/100 use the usual channel statistics (125.3, 123.0, 113.9)/255 and
/// (63.0, 62.1, 66.7)/255; the synthetic set has no fixed statistics, so it is mapped from
/// 0..1 to -1..1. All use reflect-pad-4 random crops with horizontal flips.
pub fn recipe(name: &str) -> Result<(Normalize, Augment)> {
    let augment = Augment::PadCropFlip { pad: 4 };
    match name {
        "cifar10" | "cifar100" => Ok((
            Normalize {
                mean: [125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0],
                std: [63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0],
            },
            augment,
        )),
        "synthetic" => Ok((
            Normalize {
                mean: [0.5; 3],
                std: [0.5; 3],
            },
            augment,
        )),
        _ => Err(unknown_dataset(name)),
    }
}

fn unknown_dataset(name: &str) -> Error {
    Error::UnknownDataset {
        name: name.to_string(),
        valid: DATASETS.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let message = open("mnist", None, Split::Train).unwrap_err().to_string();
        assert!(message.contains("mnist"), "{message}");
        assert!(
            message.contains("synthetic, cifar10, cifar100"),
            "{message}"
        );
        let message = recipe("imagenet").unwrap_err().to_string();
        assert!(
            message.contains("imagenet") && message.contains("cifar100"),
            "{message}"
        );
    }

    #[test]
    fn cifar_without_data_dir_names_the_flag() {
        for name in ["cifar10", "cifar100"] {
            let message = open(name, None, Split::Test).unwrap_err().to_string();
            assert!(message.contains("--data-dir"), "{message}");
            assert!(message.contains(name), "{message}");
        }
    }

    #[test]
    fn recipes_match_the_paper() -> anyhow::Result<()> {
        for name in DATASETS {
            let (_, augment) = recipe(name)?;
            assert_eq!(augment, Augment::PadCropFlip { pad: 4 });
        }
        let (normalize, _) = recipe("cifar10")?;
        assert!((normalize.mean[0] - 125.3 / 255.0).abs() < 1e-7);
        assert!((normalize.std[2] - 66.7 / 255.0).abs() < 1e-7);
        assert_eq!(recipe("cifar100")?.0, normalize);
        assert_eq!(recipe("synthetic")?.0.mean, [0.5; 3]);
        Ok(())
    }

    #[test]
    fn split_displays_lowercase() {
        assert_eq!(Split::Train.to_string(), "train");
        assert_eq!(Split::Test.to_string(), "test");
    }
}
