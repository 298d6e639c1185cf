#![warn(missing_docs)]
//! # auglocal-data
//!
//! Image-classification data for auglocal: readers for the CIFAR-10/100 binary files
//! ([`cifar`]), SVHN's MAT-files ([`svhn`], [`mat`]), STL-10's binary files ([`stl10`]),
//! ImageNet-style folders of JPEG/PNG files ([`image_folder`]), parquet datasets from the
//! Hugging Face Hub ([`hub`]), a synthetic dataset generated in code so that nothing has to
//! be downloaded ([`synthetic`]), the paper's augmentation and normalisation
//! ([`transforms`], [`resize`]) and a seeded, resumable, prefetching batch loader
//! ([`loader`]).
//!
//! Every random choice (shuffle, crop, flip, synthetic nuisances) is drawn from a ChaCha8
//! generator seeded from the integers that identify it, so results do not depend on the number
//! of threads or on where a run resumed.

pub mod cifar;
pub mod fixtures;
pub mod hub;
pub mod image_folder;
pub mod loader;
pub mod mat;
pub mod parquet_images;
pub mod resize;
pub mod spec;
pub mod stl10;
pub mod svhn;
pub mod synthetic;
pub mod tarball;
pub mod transforms;

mod dataset;
mod error;
mod image_set;
mod pickle;
mod seed;

pub use dataset::Dataset;
pub use error::{Error, Result};
pub use image_folder::{FolderConfig, ImageFolder};
pub use image_set::ImageSet;
pub use loader::{Batch, Batches, Loader, LoaderConfig, Shard};
pub use spec::{spec, DatasetSpec, Recipe, RecipeName, DATASETS};
pub use transforms::{Augment, Normalize};

use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Checks a dataset name without reading anything.
pub fn check_name(name: &str) -> Result<()> {
    spec(name).map(|_| ())
}

/// How [`open_with`] reads a dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// The folder holding the files (not used by `synthetic` and `hub:`).
    pub data_dir: Option<PathBuf>,
    /// Side of the square crops of `imagefolder` (default 224; resize scales with it).
    pub image_size: Option<usize>,
    /// `imagefolder`: leave out files that are not images instead of failing.
    pub skip_bad_images: bool,
    /// `hub:`: offline mode, cache folder, label column.
    pub hub: hub::HubOptions,
    /// Keep only this many images (folders: taken round-robin over the classes).
    pub limit: Option<usize>,
}

/// An opened split.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The images.
    pub data: Arc<dyn Dataset>,
    /// Files left out by `skip_bad_images`, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Opens a dataset split by name: every reader, in-memory or decoded per batch.
pub fn open_with(name: &str, split: Split, options: &OpenOptions) -> Result<Opened> {
    let limit = |set: ImageSet| match options.limit {
        Some(n) if n < set.len() => set.subset(n),
        _ => set,
    };
    if name == "imagefolder" {
        let dir = options.data_dir.as_deref().ok_or(Error::MissingDataDir {
            dataset: "imagefolder",
            holding: image_folder::HOLDING,
        })?;
        let config = FolderConfig {
            skip_bad: options.skip_bad_images,
            ..options
                .image_size
                .map(FolderConfig::with_size)
                .unwrap_or_default()
        };
        let mut folder = ImageFolder::open(dir, split, config)?;
        if let Some(n) = options.limit {
            folder = folder.subset(n);
        }
        let skipped = folder.skipped().to_vec();
        return Ok(Opened {
            data: Arc::new(folder),
            skipped,
        });
    }
    let set = match name.strip_prefix("hub:") {
        Some(spec) => hub::load(&hub::HubDataset::parse(spec)?, split, &options.hub)?,
        None => open(name, options.data_dir.as_deref(), split)?,
    };
    Ok(Opened {
        data: Arc::new(limit(set)),
        skipped: Vec::new(),
    })
}

/// Opens an in-memory dataset split by name (every name but `imagefolder` and `hub:`).
///
/// `data_dir` is required for the datasets read from files (the directory holding them or
/// their unpacked tarball folder). `synthetic` ignores `data_dir` and generates
/// [`synthetic::SyntheticConfig::default`] sizes.
pub fn open(name: &str, data_dir: Option<&Path>, split: Split) -> Result<ImageSet> {
    let dir = |dataset: &'static str, holding: &'static str| {
        data_dir.ok_or(Error::MissingDataDir { dataset, holding })
    };
    match name {
        "synthetic" => Ok(synthetic::generate(
            &synthetic::SyntheticConfig::default(),
            split,
        )),
        "cifar10" => cifar::load_cifar10(dir("cifar10", cifar::CIFAR10_HOLDING)?, split),
        "cifar100" => cifar::load_cifar100(dir("cifar100", cifar::CIFAR100_HOLDING)?, split),
        "svhn" => svhn::load(dir("svhn", svhn::HOLDING)?, split, false),
        "svhn-extra" => svhn::load(dir("svhn-extra", svhn::HOLDING)?, split, true),
        "stl10" => stl10::load(dir("stl10", stl10::HOLDING)?, split),
        "imagefolder" => Err(Error::InvalidSetting {
            setting: "dataset",
            value: "imagefolder".to_string(),
            expected: "open_with for image folders: they are decoded per batch, not held in \
                       memory"
                .to_string(),
        }),
        _ => Err(unknown_dataset(name)),
    }
}

fn unknown_dataset(name: &str) -> Error {
    Error::UnknownDataset {
        name: name.to_string(),
        valid: spec::names(),
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
            message.contains("synthetic, cifar10, cifar100, svhn, svhn-extra, stl10, imagefolder"),
            "{message}"
        );
        let message = spec("imagenet").unwrap_err().to_string();
        assert!(
            message.contains("imagenet") && message.contains("cifar100"),
            "{message}"
        );
    }

    #[test]
    fn files_without_a_data_directory_name_the_dataset_and_its_files() {
        for (name, file) in [
            ("cifar10", "data_batch_1.bin"),
            ("cifar100", "train.bin"),
            ("svhn", "train_32x32.mat"),
            ("stl10", "train_X.bin"),
        ] {
            let err = open(name, None, Split::Test).unwrap_err();
            assert!(matches!(err, Error::MissingDataDir { .. }), "{err}");
            let message = err.to_string();
            assert!(
                message.starts_with(&format!(
                    "no data directory given for {name}: expected the directory holding"
                )),
                "{message}"
            );
            assert!(message.contains(file), "{message}");
        }
    }

    #[test]
    fn the_table_holds_the_papers_settings() -> anyhow::Result<()> {
        for name in [
            "synthetic",
            "cifar10",
            "cifar100",
            "stl10",
            "hub:cifar10",
            "hub:a/b",
        ] {
            assert_eq!(
                spec(name)?.augment,
                Augment::PadCropFlip { pad: 4 },
                "{name}"
            );
        }
        assert_eq!(spec("svhn")?.augment, Augment::PadCrop { pad: 2 });
        assert_eq!(spec("hub:svhn")?, spec("svhn")?);
        assert_eq!(spec("stl10")?.normalize.std, [0.5; 3]);
        let imagenet = spec("imagefolder")?;
        assert_eq!(imagenet.normalize.mean, [0.485, 0.456, 0.406]);
        assert_eq!(imagenet.normalize.std, [0.229, 0.224, 0.225]);
        assert_eq!(
            imagenet.augment,
            Augment::ResizedCropFlip {
                scale: [0.08, 1.0],
                ratio: [0.75, 4.0 / 3.0]
            }
        );
        let cifar = spec("cifar10")?;
        assert!((cifar.normalize.mean[0] - 125.3 / 255.0).abs() < 1e-7);
        assert!((cifar.normalize.std[2] - 66.7 / 255.0).abs() < 1e-7);
        assert_eq!(spec("cifar100")?.normalize, cifar.normalize);
        assert_eq!(spec("synthetic")?.normalize.mean, [0.5; 3]);
        // Image sides: STL-10 96, image folders' default crop 224, the rest 32.
        let sides: Vec<(&str, usize)> = DATASETS.iter().map(|d| (d.name, d.input_size)).collect();
        assert_eq!(
            sides,
            [
                ("synthetic", 32),
                ("cifar10", 32),
                ("cifar100", 32),
                ("svhn", 32),
                ("svhn-extra", 32),
                ("stl10", 96),
                ("imagefolder", 224)
            ]
        );
        // The paper's recipes (the spec's table): CIFAR and SVHN batch 1024, lr 0.8, warm-up
        // cosine, 400 epochs; STL-10 batch 128, lr 0.1; ImageNet ResNet-34, batch 1024,
        // lr 0.4, cosine without warm-up, 90 epochs.
        let paper = cifar.recipe(RecipeName::Paper);
        assert_eq!(
            (paper.model, paper.batch_size, paper.lr, paper.epochs),
            ("resnet32", 1024, 0.8, 400)
        );
        assert_eq!(paper.schedule, auglocal_core::Schedule::PAPER);
        assert_eq!(spec("svhn")?.paper, paper);
        let stl = spec("stl10")?.paper;
        assert_eq!((stl.batch_size, stl.lr, stl.epochs), (128, 0.1, 400));
        let image = imagenet.paper;
        assert_eq!(
            (image.model, image.batch_size, image.lr, image.epochs),
            ("resnet34", 1024, 0.4, 90)
        );
        assert_eq!(image.schedule, auglocal_core::Schedule::Cosine);
        // Synthetic data defaults to the few-minutes recipe; every recipe can be asked for.
        assert_eq!(spec("synthetic")?.default_recipe, RecipeName::Quick);
        assert_eq!(cifar.default_recipe, RecipeName::Paper);
        assert_eq!(cifar.recipe(RecipeName::Quick), spec::QUICK);
        assert_eq!(
            (
                spec::QUICK.model,
                spec::QUICK.train_size,
                spec::QUICK.test_size
            ),
            ("resnet20", Some(4096), Some(500))
        );
        Ok(())
    }

    #[test]
    fn names_are_checked_without_reading() {
        assert!(check_name("svhn").is_ok());
        assert!(check_name("hub:cifar100").is_ok());
        assert!(check_name("hub:owner/name/config").is_ok());
        assert_eq!(
            check_name("hub:nothing").unwrap_err().to_string(),
            "unknown dataset `hub:nothing`; valid names are: hub:<owner>/<name>, \
             hub:<owner>/<name>/<config>, or a preset: hub:cifar10, hub:cifar100, hub:svhn, \
             hub:stl10"
        );
        assert!(check_name("mnist").is_err());
    }

    #[test]
    fn split_displays_lowercase() {
        assert_eq!(Split::Train.to_string(), "train");
        assert_eq!(Split::Test.to_string(), "test");
    }
}
