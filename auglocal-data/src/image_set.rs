//! A whole dataset split held in memory as bytes.

use rand_chacha::ChaCha8Rng;

use crate::transforms::{self, Augment, Normalize};
use crate::{Dataset, Error, Result};

/// Images of one dataset split, in memory.
///
/// Pixels stay `u8` (a quarter of the memory of `f32`); conversion, augmentation and
/// normalisation happen per batch in [`crate::Loader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// The dataset name, e.g. `cifar10`.
    pub name: String,
    /// All images back to back, each `channels x height x width` (CHW, row-major).
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u32>,
    /// Channels per image.
    pub channels: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// Number of classes; labels are in `0..classes`.
    pub classes: usize,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image: `channels * height * width`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The CHW bytes of image `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.image_len();
        &self.images[i * len..(i + 1) * len]
    }

    /// A copy holding the first `n` images (all of them if there are fewer), for quick runs.
    pub fn subset(&self, n: usize) -> ImageSet {
        let n = n.min(self.len());
        ImageSet {
            name: self.name.clone(),
            images: self.images[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            classes: self.classes,
        }
    }

    /// Checks that the public fields agree, since callers may build sets by hand and the
    /// loader indexes by them.
    pub fn check(&self) -> Result<()> {
        let expected = self.len() * self.image_len();
        if self.images.len() != expected {
            return Err(Error::InvalidSetting {
                setting: "image set",
                value: format!(
                    "`{}` has {} pixel bytes for {} labels of {}x{}x{} images",
                    self.name,
                    self.images.len(),
                    self.len(),
                    self.channels,
                    self.height,
                    self.width
                ),
                expected: format!("{expected} bytes (labels x channels x height x width)"),
            });
        }
        if let Some((index, &label)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &label)| label as usize >= self.classes)
        {
            return Err(Error::InvalidSetting {
                setting: "image set",
                value: format!("`{}` image {index} has label {label}", self.name),
                expected: format!("labels in 0..{}", self.classes),
            });
        }
        Ok(())
    }
}

impl Dataset for ImageSet {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> usize {
        self.labels.len()
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn label(&self, index: usize) -> u32 {
        self.labels[index]
    }

    fn shape(&self) -> (usize, usize, usize) {
        (self.channels, self.height, self.width)
    }

    fn load(
        &self,
        index: usize,
        augment: Augment,
        normalize: &Normalize,
        rng: &mut ChaCha8Rng,
        out: &mut [f32],
    ) -> Result<()> {
        transforms::apply(
            self.image(index),
            self.channels,
            self.height,
            self.width,
            augment,
            normalize,
            rng,
            out,
        );
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        self.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ImageSet {
        ImageSet {
            name: "tiny".into(),
            images: (0..24).collect(),
            labels: vec![0, 1, 2],
            channels: 2,
            height: 2,
            width: 2,
            classes: 3,
        }
    }

    #[test]
    fn indexing_and_subsets() {
        let set = tiny();
        assert_eq!(set.len(), 3);
        assert!(!set.is_empty());
        assert_eq!(set.image_len(), 8);
        assert_eq!(set.image(1), &[8, 9, 10, 11, 12, 13, 14, 15]);
        let sub = set.subset(2);
        assert_eq!(sub.len(), 2);
        assert_eq!(sub.images.len(), 16);
        assert_eq!(sub.labels, vec![0, 1]);
        assert_eq!(set.subset(10), set);
        assert!(set.subset(0).is_empty());
    }

    #[test]
    fn validation_catches_inconsistent_sets() {
        assert!(tiny().check().is_ok());
        let mut short = tiny();
        short.images.pop();
        assert!(short.check().unwrap_err().to_string().contains("23"));
        let mut bad_label = tiny();
        bad_label.labels[2] = 3;
        let message = bad_label.check().unwrap_err().to_string();
        assert!(message.contains("image 2 has label 3"), "{message}");
    }
}
