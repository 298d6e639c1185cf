//! What the loader needs from a dataset: a length, labels, an output shape, and a way to
//! turn one image into normalised `f32` pixels.
//!
//! In-memory sets ([`crate::ImageSet`]: CIFAR, SVHN, STL-10, Hub parquet) hold raw bytes;
//! [`crate::image_folder::ImageFolder`] decodes JPEG/PNG files when a batch asks for them.

use rand_chacha::ChaCha8Rng;

use crate::{Augment, Normalize, Result};

/// A labelled image dataset the [`crate::Loader`] can batch.
///
/// `load` must be a pure function of `(index, augment, normalize, rng state)`: the loader
/// relies on that for results that do not depend on the thread count or a resumed epoch.
pub trait Dataset: Send + Sync + std::fmt::Debug {
    /// The dataset name, e.g. `cifar10`.
    fn name(&self) -> &str;
    /// Number of images.
    fn len(&self) -> usize;
    /// Whether there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of classes; labels are in `0..classes`.
    fn classes(&self) -> usize;
    /// The class of image `index`.
    fn label(&self, index: usize) -> u32;
    /// `(channels, height, width)` of every image [`Dataset::load`] writes.
    fn shape(&self) -> (usize, usize, usize);
    /// Writes image `index`, augmented with `rng` and normalised, into `out` (CHW `f32` of
    /// [`Dataset::shape`]).
    fn load(
        &self,
        index: usize,
        augment: Augment,
        normalize: &Normalize,
        rng: &mut ChaCha8Rng,
        out: &mut [f32],
    ) -> Result<()>;
    /// Checks that the set is consistent before a loader indexes it.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}
