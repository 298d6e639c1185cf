//! Every dataset's settings in one table ([`DATASETS`]): normalisation, training
//! augmentation, image size and the paper's training recipe (the spec's settings per
//! dataset), plus the `quick` recipe that trains any of them for a few minutes.

use auglocal_core::methods::InputSpec;
use auglocal_core::Schedule;
use serde::{Deserialize, Serialize};

use crate::loader::LoaderConfig;
use crate::transforms::{Augment, Normalize};
use crate::{hub, Error, Result};

/// The settings a dataset is trained with unless told otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// Backbone (a name of `auglocal_models::MODELS`).
    pub model: &'static str,
    /// Epochs to train.
    pub epochs: usize,
    /// Training images per step (over all data-parallel replicas).
    pub batch_size: usize,
    /// Images per evaluation batch (no gradients are kept, so it can be larger).
    pub eval_batch_size: usize,
    /// Starting learning rate (SGD, Nesterov momentum 0.9, weight decay 1e-4 throughout).
    pub lr: f64,
    /// How the learning rate moves from `lr` over the epochs.
    pub schedule: Schedule,
    /// Train on the first N images only (`None`: all).
    pub train_size: Option<usize>,
    /// Evaluate on the first N test images only (`None`: all).
    pub test_size: Option<usize>,
}

/// Which recipe a run starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipeName {
    /// The spec's settings for the dataset.
    Paper,
    /// A few minutes on 2 cores: [`QUICK`].
    Quick,
}

impl RecipeName {
    /// Every recipe name, as `--recipe` takes them.
    pub const NAMES: &'static [&'static str] = &["paper", "quick"];

    /// The recipe called `name`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "paper" => Ok(RecipeName::Paper),
            "quick" => Ok(RecipeName::Quick),
            other => Err(Error::InvalidSetting {
                setting: "recipe",
                value: other.to_string(),
                expected: format!("one of {}", Self::NAMES.join(", ")),
            }),
        }
    }
}

impl std::fmt::Display for RecipeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecipeName::Paper => "paper",
            RecipeName::Quick => "quick",
        })
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSpec {
    /// What `--dataset` takes.
    pub name: &'static str,
    /// Applied to every image after augmentation (statistics on the 0..1 scale).
    pub normalize: Normalize,
    /// Training augmentation (evaluation images are never augmented).
    pub augment: Augment,
    /// Side of the square images it delivers (image folders: the default crop).
    pub input_size: usize,
    /// The spec's training recipe.
    pub paper: Recipe,
    /// The recipe a run takes when it names none.
    pub default_recipe: RecipeName,
}

const CIFAR_MEAN: [f32; 3] = [125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0];
const CIFAR_STD: [f32; 3] = [63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0];
const HALF: Normalize = Normalize {
    mean: [0.5; 3],
    std: [0.5; 3],
};
const PAD4: Augment = Augment::PadCropFlip { pad: 4 };

/// The paper's CIFAR recipe: ResNet-32, batch 1024, lr 0.8, cosine after a 10-epoch linear
/// warm-up, 400 epochs.
pub const CIFAR_PAPER: Recipe = Recipe {
    model: "resnet32",
    epochs: 400,
    batch_size: 1024,
    eval_batch_size: 1000,
    lr: 0.8,
    schedule: Schedule::PAPER,
    train_size: None,
    test_size: None,
};

/// About two minutes on 2 cores: ResNet-20, 6 epochs of the first 4096 images, batch 64,
/// lr 0.1 cosine, evaluated on the first 500 test images. Long enough for AugLocal and BP
/// to pass 90% on the synthetic data, with test accuracy rising every epoch.
pub const QUICK: Recipe = Recipe {
    model: "resnet20",
    epochs: 6,
    batch_size: 64,
    eval_batch_size: 250,
    lr: 0.1,
    schedule: Schedule::Cosine,
    train_size: Some(4096),
    test_size: Some(500),
};

/// Every dataset `--dataset` names besides `hub:` ones (which take the line of the dataset
/// they hold, or [`HUB_DEFAULT`]).
#[rustfmt::skip]
pub const DATASETS: &[DatasetSpec] = &[
    // No fixed statistics: 0..1 mapped to -1..1.
    DatasetSpec { name: "synthetic", normalize: HALF, augment: PAD4, input_size: 32, paper: CIFAR_PAPER, default_recipe: RecipeName::Quick },
    DatasetSpec { name: "cifar10", normalize: Normalize { mean: CIFAR_MEAN, std: CIFAR_STD }, augment: PAD4, input_size: 32, paper: CIFAR_PAPER, default_recipe: RecipeName::Paper },
    DatasetSpec { name: "cifar100", normalize: Normalize { mean: CIFAR_MEAN, std: CIFAR_STD }, augment: PAD4, input_size: 32, paper: CIFAR_PAPER, default_recipe: RecipeName::Paper },
    // Digits are not mirror-symmetric: pad-2 crops, no flip.
    DatasetSpec { name: "svhn", normalize: HALF, augment: Augment::PadCrop { pad: 2 }, input_size: 32, paper: CIFAR_PAPER, default_recipe: RecipeName::Paper },
    DatasetSpec { name: "svhn-extra", normalize: HALF, augment: Augment::PadCrop { pad: 2 }, input_size: 32, paper: CIFAR_PAPER, default_recipe: RecipeName::Paper },
    DatasetSpec { name: "stl10", normalize: HALF, augment: PAD4, input_size: 96, paper: Recipe { batch_size: 128, lr: 0.1, ..CIFAR_PAPER }, default_recipe: RecipeName::Paper },
    // Evaluation resizes and centre-crops (see `image_folder`).
    DatasetSpec { name: "imagefolder", normalize: Normalize { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }, augment: Augment::IMAGENET, input_size: 224, paper: Recipe { model: "resnet34", epochs: 90, eval_batch_size: 250, lr: 0.4, schedule: Schedule::Cosine, ..CIFAR_PAPER }, default_recipe: RecipeName::Paper },
];

/// The line of a Hub dataset that is no preset: 0.5 / 0.5, pad-4 crops and flips, the
/// CIFAR recipe.
pub const HUB_DEFAULT: DatasetSpec = DatasetSpec {
    name: "hub",
    normalize: HALF,
    augment: PAD4,
    input_size: 32,
    paper: CIFAR_PAPER,
    default_recipe: RecipeName::Paper,
};

/// The names of [`DATASETS`], comma-separated.
pub fn names() -> String {
    DATASETS
        .iter()
        .map(|d| d.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The settings of dataset `name`: a line of [`DATASETS`], or for `hub:` names the line of
/// the preset's dataset (`hub:cifar10` is CIFAR-10's) or [`HUB_DEFAULT`].
pub fn spec(name: &str) -> Result<DatasetSpec> {
    if let Some(repo) = name.strip_prefix("hub:") {
        return Ok(match hub::HubDataset::parse(repo)?.recipe {
            Some(preset) => spec(preset)?,
            None => HUB_DEFAULT,
        });
    }
    DATASETS
        .iter()
        .find(|d| d.name == name)
        .cloned()
        .ok_or_else(|| Error::UnknownDataset {
            name: name.to_string(),
            valid: names(),
        })
}

impl DatasetSpec {
    /// The recipe `name` of this dataset.
    pub fn recipe(&self, name: RecipeName) -> Recipe {
        match name {
            RecipeName::Paper => self.paper.clone(),
            RecipeName::Quick => QUICK,
        }
    }

    /// What the local losses need to know about these images at side `image_size`.
    pub fn input(&self, image_size: usize) -> InputSpec {
        InputSpec {
            image_size,
            mean: self.normalize.mean,
            std: self.normalize.std,
        }
    }

    /// A training loader's settings: shuffled, this dataset's augmentation and
    /// normalisation, every random choice drawn from `seed`.
    pub fn train_loader(&self, batch_size: usize, seed: u64) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle: true,
            augment: self.augment,
            normalize: self.normalize,
            seed,
        }
    }

    /// An evaluation loader's settings: in order, no augmentation, this dataset's
    /// normalisation.
    pub fn eval_loader(&self, batch_size: usize) -> LoaderConfig {
        LoaderConfig {
            shuffle: false,
            augment: Augment::None,
            ..self.train_loader(batch_size, 0)
        }
    }
}
