//! Seeded, resumable batches of an in-memory [`ImageSet`].
//!
//! The shuffle of epoch `e` and the augmentation of the image at position `p` of that epoch
//! each come from their own generator seeded from `(seed, e)` and `(seed, e, p)`. A batch is
//! therefore a pure function of `(data, config, epoch, batch index)`: the same whatever the
//! rayon thread count and whether the epoch started at batch 0 or resumed in the middle.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::transforms::{self, Augment, Normalize};
use crate::{seed, Error, ImageSet, Result};

/// How a [`Loader`] batches, shuffles and transforms.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoaderConfig {
    /// Images per batch; the last batch of an epoch may be smaller.
    pub batch_size: usize,
    /// Whether each epoch visits the images in a fresh random order.
    pub shuffle: bool,
    /// Augmentation applied to every image.
    pub augment: Augment,
    /// Normalisation applied after augmentation.
    pub normalize: Normalize,
    /// Seed of the shuffles and augmentations.
    pub seed: u64,
}

/// One batch of an epoch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images, `(N, C, H, W)` `f32`, augmented and normalised.
    pub images: Tensor,
    /// Class indices, `(N)` `u32`.
    pub labels: Tensor,
    /// Position of this batch in its epoch, from 0.
    pub index: usize,
}

/// Cuts an [`ImageSet`] into batches of tensors, epoch by epoch.
///
/// Every image is visited once per epoch and the last partial batch is kept, with one
/// exception: when augmenting (training), a final batch of exactly one image is dropped,
/// because batch normalisation cannot compute batch statistics from a single sample. The
/// dropped image is the last in that epoch's order, so with shuffling it differs per epoch.
#[derive(Debug, Clone)]
pub struct Loader {
    data: Arc<ImageSet>,
    config: LoaderConfig,
    device: Device,
}

impl Loader {
    /// A loader over `data` producing tensors on `device`.
    ///
    /// Fails if the batch size is 0, a normalisation std is not positive and finite, the
    /// images have more than three channels, or the set's fields disagree with each other.
    pub fn new(data: Arc<ImageSet>, config: LoaderConfig, device: Device) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(Error::InvalidSetting {
                setting: "batch size",
                value: "0".to_string(),
                expected: "at least 1 image per batch".to_string(),
            });
        }
        if let Some(std) = config
            .normalize
            .std
            .iter()
            .find(|std| !(std.is_finite() && **std > 0.0))
        {
            return Err(Error::InvalidSetting {
                setting: "normalisation std",
                value: format!("{std} in {:?}", config.normalize.std),
                expected: "positive, finite standard deviations on the 0..1 scale".to_string(),
            });
        }
        if data.channels > 3 {
            return Err(Error::InvalidSetting {
                setting: "image channels",
                value: format!("{} in `{}`", data.channels, data.name),
                expected: "at most 3 channels, one per normalisation entry".to_string(),
            });
        }
        data.validate()?;
        Ok(Loader {
            data,
            config,
            device,
        })
    }

    /// The dataset this loader reads.
    pub fn data(&self) -> &Arc<ImageSet> {
        &self.data
    }

    /// The settings this loader was built with.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        self.images().div_ceil(self.config.batch_size)
    }

    /// Whether an epoch yields no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Images per epoch, after dropping a singleton final batch when augmenting.
    pub fn images(&self) -> usize {
        let n = self.data.len();
        if self.config.augment != Augment::None && n % self.config.batch_size == 1 {
            n - 1
        } else {
            n
        }
    }

    /// The order of image indices in epoch `epoch` (1-based): a Fisher-Yates shuffle from a
    /// ChaCha8 seeded from `(seed, epoch)` when shuffling, else `0..n`. Covers the whole set,
    /// including an image that [`Loader::epoch`] drops.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.data.len()).collect();
        if self.config.shuffle {
            let mut rng = seed::rng(&[seed::SHUFFLE, self.config.seed, epoch as u64]);
            for i in (1..order.len()).rev() {
                let j = rand::Rng::random_range(&mut rng, 0..=i);
                order.swap(i, j);
            }
        }
        order
    }

    /// Batches of epoch `epoch`, starting at batch `start` (for resuming mid-epoch).
    ///
    /// Batches are built lazily, each filled in parallel with rayon.
    pub fn epoch(&self, epoch: usize, start: usize) -> impl Iterator<Item = Result<Batch>> + '_ {
        let mut order = self.order(epoch);
        order.truncate(self.images());
        (start..self.len()).map(move |index| self.batch(&order, epoch, index))
    }

    fn batch(&self, order: &[usize], epoch: usize, index: usize) -> Result<Batch> {
        let data = &*self.data;
        let first = index * self.config.batch_size;
        let picks = &order[first..(first + self.config.batch_size).min(order.len())];
        let image_len = data.image_len();
        let mut images = vec![0f32; picks.len() * image_len];
        // Tolerates images of zero pixels, where chunks of size 0 would panic.
        let chunk = image_len.max(1);
        images
            .par_chunks_mut(chunk)
            .zip(picks.par_iter())
            .enumerate()
            .for_each(|(j, (out, &i))| {
                let position = (first + j) as u64;
                let mut rng = seed::rng(&[seed::AUGMENT, self.config.seed, epoch as u64, position]);
                transforms::apply(
                    data.image(i),
                    data.channels,
                    data.height,
                    data.width,
                    self.config.augment,
                    &self.config.normalize,
                    &mut rng,
                    &mut out[..image_len],
                );
            });
        let labels: Vec<u32> = picks.iter().map(|&i| data.labels[i]).collect();
        let n = picks.len();
        Ok(Batch {
            images: Tensor::from_vec(
                images,
                (n, data.channels, data.height, data.width),
                &self.device,
            )?,
            labels: Tensor::from_vec(labels, n, &self.device)?,
            index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: Normalize = Normalize {
        mean: [0.0; 3],
        std: [1.0 / 255.0; 3],
    };

    /// `n` 1-channel 2x2 images whose pixels all equal their index; label = index % 7.
    fn numbered(n: usize) -> Arc<ImageSet> {
        Arc::new(ImageSet {
            name: "numbered".into(),
            images: (0..n).flat_map(|i| [i as u8; 4]).collect(),
            labels: (0..n).map(|i| (i % 7) as u32).collect(),
            channels: 1,
            height: 2,
            width: 2,
            classes: 7,
        })
    }

    /// A 3-channel 8x8 set with varied pixels, so crops and flips change the output.
    fn textured(n: usize) -> Arc<ImageSet> {
        Arc::new(ImageSet {
            name: "textured".into(),
            images: (0..n * 192).map(|v| (v * 37 % 251) as u8).collect(),
            labels: (0..n).map(|i| (i % 3) as u32).collect(),
            channels: 3,
            height: 8,
            width: 8,
            classes: 3,
        })
    }

    fn config(batch_size: usize, shuffle: bool, augment: Augment) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle,
            augment,
            normalize: UNIT,
            seed: 42,
        }
    }

    fn collect(loader: &Loader, epoch: usize, start: usize) -> Result<Vec<(Vec<f32>, Vec<u32>)>> {
        loader
            .epoch(epoch, start)
            .map(|batch| {
                let batch = batch?;
                Ok((
                    batch.images.flatten_all()?.to_vec1::<f32>()?,
                    batch.labels.to_vec1::<u32>()?,
                ))
            })
            .collect()
    }

    #[test]
    fn every_image_once_per_epoch() -> anyhow::Result<()> {
        let loader = Loader::new(numbered(23), config(5, true, Augment::None), Device::Cpu)?;
        assert_eq!((loader.len(), loader.images()), (5, 23));
        for epoch in 1..=3 {
            let mut seen = Vec::new();
            for (index, batch) in loader.epoch(epoch, 0).enumerate() {
                let batch = batch?;
                assert_eq!(batch.index, index);
                assert_eq!(batch.images.rank(), 4);
                let pixels = batch.images.flatten_from(1)?.to_vec2::<f32>()?;
                let labels = batch.labels.to_vec1::<u32>()?;
                for (pixels, label) in pixels.iter().zip(labels) {
                    let id = pixels[0].round() as usize;
                    assert!(pixels.iter().all(|&p| p.round() as usize == id));
                    assert_eq!(label as usize, id % 7);
                    seen.push(id);
                }
            }
            assert_eq!(seen, loader.order(epoch), "batches follow order()");
            seen.sort_unstable();
            assert_eq!(seen, (0..23).collect::<Vec<_>>());
        }
        Ok(())
    }

    #[test]
    fn shuffle_is_seeded_per_epoch() -> anyhow::Result<()> {
        let loader = Loader::new(numbered(50), config(8, true, Augment::None), Device::Cpu)?;
        assert_ne!(loader.order(1), loader.order(2));
        assert_ne!(loader.order(1), (0..50).collect::<Vec<_>>());
        let twin = Loader::new(numbered(50), config(8, true, Augment::None), Device::Cpu)?;
        assert_eq!(loader.order(3), twin.order(3));
        let other_seed = Loader::new(
            numbered(50),
            LoaderConfig {
                seed: 43,
                ..config(8, true, Augment::None)
            },
            Device::Cpu,
        )?;
        assert_ne!(loader.order(1), other_seed.order(1));
        let sequential = Loader::new(numbered(50), config(8, false, Augment::None), Device::Cpu)?;
        assert_eq!(sequential.order(5), (0..50).collect::<Vec<_>>());
        Ok(())
    }

    #[test]
    fn batch_shapes_keep_the_partial_batch() -> anyhow::Result<()> {
        let loader = Loader::new(textured(10), config(4, true, Augment::None), Device::Cpu)?;
        let batches: Vec<Batch> = loader.epoch(1, 0).collect::<Result<_>>()?;
        let dims: Vec<Vec<usize>> = batches.iter().map(|b| b.images.dims().to_vec()).collect();
        assert_eq!(
            dims,
            vec![vec![4, 3, 8, 8], vec![4, 3, 8, 8], vec![2, 3, 8, 8]]
        );
        assert_eq!(batches[2].labels.dims(), &[2]);
        assert_eq!(batches[0].images.dtype(), candle_core::DType::F32);
        assert_eq!(batches[0].labels.dtype(), candle_core::DType::U32);
        Ok(())
    }

    #[test]
    fn singleton_final_batch_is_dropped_only_when_augmenting() -> anyhow::Result<()> {
        let augment = Augment::PadCropFlip { pad: 2 };
        let train = Loader::new(textured(9), config(4, true, augment), Device::Cpu)?;
        assert_eq!((train.len(), train.images()), (2, 8));
        let sizes: Vec<usize> = train
            .epoch(1, 0)
            .map(|b| b.map(|b| b.labels.dims()[0]))
            .collect::<Result<_>>()?;
        assert_eq!(sizes, vec![4, 4]);

        let eval = Loader::new(textured(9), config(4, false, Augment::None), Device::Cpu)?;
        assert_eq!((eval.len(), eval.images()), (3, 9));
        assert_eq!(eval.epoch(1, 0).count(), 3);

        // Batch size 1 has no partial batch, so nothing is dropped.
        let single = Loader::new(textured(3), config(1, true, augment), Device::Cpu)?;
        assert_eq!(single.len(), 3);
        Ok(())
    }

    #[test]
    fn same_batches_with_one_or_two_threads() -> anyhow::Result<()> {
        let loader = Loader::new(
            textured(13),
            config(5, true, Augment::PadCropFlip { pad: 3 }),
            Device::Cpu,
        )?;
        let run = |threads| -> anyhow::Result<_> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()?;
            Ok(pool.install(|| collect(&loader, 2, 0))?)
        };
        let one = run(1)?;
        let two = run(2)?;
        assert_eq!(one.len(), 3);
        assert_eq!(one, two);
        // Augmentation really changes images between epochs.
        assert_ne!(collect(&loader, 3, 0)?[0].0, one[0].0);
        Ok(())
    }

    #[test]
    fn resuming_mid_epoch_matches_the_full_epoch() -> anyhow::Result<()> {
        let loader = Loader::new(
            textured(17),
            config(4, true, Augment::PadCropFlip { pad: 2 }),
            Device::Cpu,
        )?;
        let full = collect(&loader, 4, 0)?;
        assert_eq!(full.len(), 4);
        for start in 0..=4 {
            assert_eq!(collect(&loader, 4, start)?, full[start..]);
        }
        let indices: Vec<usize> = loader
            .epoch(4, 2)
            .map(|b| b.map(|b| b.index))
            .collect::<Result<_>>()?;
        assert_eq!(indices, vec![2, 3]);
        assert_eq!(loader.epoch(4, 9).count(), 0);
        Ok(())
    }

    #[test]
    fn augmented_batches_match_transforms_apply() -> anyhow::Result<()> {
        let data = textured(6);
        let augment = Augment::PadCropFlip { pad: 2 };
        let loader = Loader::new(data.clone(), config(4, true, augment), Device::Cpu)?;
        let order = loader.order(1);
        let batches = collect(&loader, 1, 0)?;
        // Position 5 of the epoch is the second image of batch 1.
        let mut rng = seed::rng(&[seed::AUGMENT, 42, 1, 5]);
        let mut expected = vec![0.0; 192];
        transforms::apply(
            data.image(order[5]),
            3,
            8,
            8,
            augment,
            &UNIT,
            &mut rng,
            &mut expected,
        );
        assert_eq!(batches[1].0[192..], expected[..]);
        Ok(())
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let message = Loader::new(numbered(4), config(0, false, Augment::None), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(message.contains("batch size"), "{message}");

        let zero_std = LoaderConfig {
            normalize: Normalize {
                mean: [0.0; 3],
                std: [1.0, 0.0, 1.0],
            },
            ..config(2, false, Augment::None)
        };
        assert!(Loader::new(numbered(4), zero_std, Device::Cpu).is_err());

        let mut broken = (*numbered(4)).clone();
        broken.images.truncate(10);
        assert!(Loader::new(
            Arc::new(broken),
            config(2, false, Augment::None),
            Device::Cpu
        )
        .is_err());
    }

    #[test]
    fn empty_set_gives_no_batches() -> anyhow::Result<()> {
        let loader = Loader::new(
            numbered(0),
            config(4, true, Augment::PadCropFlip { pad: 1 }),
            Device::Cpu,
        )?;
        assert!(loader.is_empty());
        assert_eq!(loader.epoch(1, 0).count(), 0);
        let one = Loader::new(
            numbered(1),
            config(4, true, Augment::PadCropFlip { pad: 1 }),
            Device::Cpu,
        )?;
        assert!(one.is_empty(), "a lone training image is dropped");
        Ok(())
    }
}
