//! Seeded, resumable, prefetching batches of a [`Dataset`].
//!
//! The shuffle of epoch `e` and the augmentation of the image at position `p` of that epoch
//! each come from their own generator seeded from `(seed, e)` and `(seed, e, p)`. A batch is
//! therefore a pure function of `(data, config, epoch, batch index)`: the same whatever the
//! rayon thread count and whether the epoch started at batch 0 or resumed in the middle.
//!
//! A producer thread builds batches ahead of the trainer into a bounded queue
//! ([`Loader::with_prefetch`], 2 batches by default); inside a batch, images are decoded and
//! augmented in parallel with rayon. Only the timing changes with the queue, never the
//! content or order of batches.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::transforms::{Augment, Normalize};
use crate::{seed, Dataset, Error, Result};

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
    /// Images of the whole batch, all shards together (`N` without a shard).
    pub global_images: usize,
}

/// Batches per epoch prepared ahead of the trainer by default.
pub const DEFAULT_PREFETCH: usize = 2;

/// Cuts a [`Dataset`] into batches of tensors, epoch by epoch.
///
/// Every image is visited once per epoch and the last partial batch is kept, with one
/// exception: when augmenting (training), a final batch of exactly one image is dropped,
/// because batch normalisation cannot compute batch statistics from a single sample. The
/// dropped image is the last in that epoch's order, so with shuffling it differs per epoch.
#[derive(Debug, Clone)]
pub struct Loader {
    data: Arc<dyn Dataset>,
    config: LoaderConfig,
    device: Device,
    prefetch: usize,
    workers: Option<Arc<rayon::ThreadPool>>,
    shard: Shard,
}

/// Which part of every batch a loader prepares: replica `replica` of `replicas` takes the
/// `replica`-th of `replicas` contiguous, nearly equal slices (data-parallel training). The
/// images of a slice are those of the same positions of the whole batch, augmented alike:
/// the slices of all replicas together are exactly the whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This replica's index, in `0..replicas`.
    pub replica: usize,
    /// Replicas the batch is shared among, at least 1.
    pub replicas: usize,
}

impl Shard {
    /// The whole batch.
    pub const WHOLE: Shard = Shard {
        replica: 0,
        replicas: 1,
    };

    /// Positions `lo..hi` of a batch of `n` images that this shard takes.
    pub fn range(self, n: usize) -> std::ops::Range<usize> {
        n * self.replica / self.replicas..n * (self.replica + 1) / self.replicas
    }
}

/// What the producer hands over: pixels and labels, turned into tensors by the consumer so
/// that only the caller's thread touches the device.
struct Prepared {
    images: Vec<f32>,
    labels: Vec<u32>,
    index: usize,
    global_images: usize,
}

impl Loader {
    /// A loader over `data` producing tensors on `device`, prefetching
    /// [`DEFAULT_PREFETCH`] batches and decoding on rayon's global pool.
    ///
    /// Fails if the batch size is 0, a normalisation std is not positive and finite, the
    /// images have more than three channels, or the set's fields disagree with each other.
    pub fn new(data: Arc<dyn Dataset>, config: LoaderConfig, device: Device) -> Result<Self> {
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
        let (channels, _, _) = data.shape();
        if channels > 3 {
            return Err(Error::InvalidSetting {
                setting: "image channels",
                value: format!("{channels} in `{}`", data.name()),
                expected: "at most 3 channels, one per normalisation entry".to_string(),
            });
        }
        data.validate()?;
        Ok(Loader {
            data,
            config,
            device,
            prefetch: DEFAULT_PREFETCH,
            workers: None,
            shard: Shard::WHOLE,
        })
    }

    /// The same loader preparing only `shard`'s slice of every batch.
    pub fn with_shard(mut self, shard: Shard) -> Result<Self> {
        if shard.replicas == 0 || shard.replica >= shard.replicas {
            return Err(Error::InvalidSetting {
                setting: "shard",
                value: format!("replica {} of {}", shard.replica, shard.replicas),
                expected: "a replica index below the number of replicas".to_string(),
            });
        }
        self.shard = shard;
        Ok(self)
    }

    /// The slice of every batch this loader prepares.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Prepares up to `batches` batches ahead on a producer thread; 0 builds each batch on
    /// the caller's thread when it is asked for.
    pub fn with_prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches;
        self
    }

    /// Decodes and augments on a pool of its own with `threads` threads (0: rayon's global
    /// pool, shared with the model's kernels).
    pub fn with_workers(mut self, threads: usize) -> Result<Self> {
        self.workers = if threads == 0 {
            None
        } else {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("auglocal-decode-{i}"))
                .build()
                .map_err(|e| Error::InvalidSetting {
                    setting: "decode threads",
                    value: format!("{threads} ({e})"),
                    expected: "a number of threads the system can start".to_string(),
                })?;
            Some(Arc::new(pool))
        };
        Ok(self)
    }

    /// The dataset this loader reads.
    pub fn data(&self) -> &Arc<dyn Dataset> {
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

    /// Images per epoch (all shards together), after dropping a final batch too small for
    /// BatchNorm when augmenting (training): one image, or with `R` shards fewer than `2R`,
    /// so that every shard has two.
    pub fn images(&self) -> usize {
        let n = self.data.len();
        let last = n % self.config.batch_size;
        if self.config.augment != Augment::None && last != 0 && last < 2 * self.shard.replicas {
            n - last
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
    /// With prefetching, a producer thread fills a bounded queue; dropping the iterator
    /// stops it after the batch in progress. The first error (a file that cannot be decoded)
    /// ends the epoch.
    pub fn epoch(&self, epoch: usize, start: usize) -> Batches {
        let mut order = self.order(epoch);
        order.truncate(self.images());
        let job = Job {
            data: self.data.clone(),
            config: self.config.clone(),
            workers: self.workers.clone(),
            order,
            epoch,
            shard: self.shard,
        };
        let end = self.len();
        let source = if self.prefetch == 0 || start >= end {
            Source::Inline {
                job,
                next: start,
                end,
            }
        } else {
            let (sender, receiver) = sync_channel(self.prefetch);
            let producer = std::thread::Builder::new()
                .name("auglocal-prefetch".into())
                .spawn(move || {
                    for index in start..end {
                        let batch = job.prepare(index);
                        let failed = batch.is_err();
                        if sender.send(batch).is_err() || failed {
                            break;
                        }
                    }
                });
            match producer {
                Ok(handle) => Source::Queue {
                    receiver: Some(receiver),
                    producer: Some(handle),
                },
                Err(e) => Source::Failed(Some(Error::InvalidSetting {
                    setting: "prefetch thread",
                    value: e.to_string(),
                    expected: "a thread the system can start (or a loader with prefetch 0)"
                        .to_string(),
                })),
            }
        };
        Batches {
            source,
            device: self.device.clone(),
            shape: self.data.shape(),
            waited: Duration::ZERO,
        }
    }
}

/// Everything a producer needs to build the batches of one epoch.
struct Job {
    data: Arc<dyn Dataset>,
    config: LoaderConfig,
    workers: Option<Arc<rayon::ThreadPool>>,
    order: Vec<usize>,
    epoch: usize,
    shard: Shard,
}

impl Job {
    fn prepare(&self, index: usize) -> Result<Prepared> {
        match &self.workers {
            Some(pool) => pool.install(|| self.fill(index)),
            None => self.fill(index),
        }
    }

    fn fill(&self, index: usize) -> Result<Prepared> {
        let data = &*self.data;
        let batch_start = index * self.config.batch_size;
        let batch =
            &self.order[batch_start..(batch_start + self.config.batch_size).min(self.order.len())];
        let slice = self.shard.range(batch.len());
        let first = batch_start + slice.start;
        let picks = &batch[slice.clone()];
        let (channels, height, width) = data.shape();
        let image_len = channels * height * width;
        let mut images = vec![0f32; picks.len() * image_len];
        // Tolerates images of zero pixels, where chunks of size 0 would panic.
        let chunk = image_len.max(1);
        let results: Vec<Result<()>> = images
            .par_chunks_mut(chunk)
            .zip(picks.par_iter())
            .enumerate()
            .map(|(j, (out, &i))| {
                let position = (first + j) as u64;
                let mut rng =
                    seed::rng(&[seed::AUGMENT, self.config.seed, self.epoch as u64, position]);
                data.load(
                    i,
                    self.config.augment,
                    &self.config.normalize,
                    &mut rng,
                    &mut out[..image_len],
                )
            })
            .collect();
        // The first failure in batch order, so the error does not depend on scheduling.
        results.into_iter().collect::<Result<()>>()?;
        Ok(Prepared {
            images,
            labels: picks.iter().map(|&i| data.label(i)).collect(),
            index,
            global_images: batch.len(),
        })
    }
}

enum Source {
    Inline {
        job: Job,
        next: usize,
        end: usize,
    },
    Queue {
        receiver: Option<Receiver<Result<Prepared>>>,
        producer: Option<JoinHandle<()>>,
    },
    Failed(Option<Error>),
}

/// The batches of one epoch, from [`Loader::epoch`].
pub struct Batches {
    source: Source,
    device: Device,
    shape: (usize, usize, usize),
    waited: Duration,
}

impl Batches {
    /// Total time the caller spent waiting for batches so far: with prefetching, zero when
    /// decoding keeps up with training.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    fn tensors(&self, prepared: Prepared) -> Result<Batch> {
        let n = prepared.labels.len();
        let (c, h, w) = self.shape;
        Ok(Batch {
            images: Tensor::from_vec(prepared.images, (n, c, h, w), &self.device)?,
            labels: Tensor::from_vec(prepared.labels, n, &self.device)?,
            index: prepared.index,
            global_images: prepared.global_images,
        })
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        let started = Instant::now();
        let prepared = match &mut self.source {
            Source::Inline { job, next, end } => {
                if *next >= *end {
                    return None;
                }
                *next += 1;
                let prepared = job.prepare(*next - 1);
                if prepared.is_err() {
                    *next = *end;
                }
                prepared
            }
            Source::Queue { receiver, .. } => receiver.as_ref()?.recv().ok()?,
            Source::Failed(error) => return error.take().map(Err),
        };
        self.waited += started.elapsed();
        Some(prepared.and_then(|p| self.tensors(p)))
    }
}

/// A loader is what [`auglocal_core::Trainer`] trains and evaluates from.
impl auglocal_core::trainer::BatchSource for Loader {
    fn batches_per_epoch(&self) -> usize {
        self.len()
    }

    fn batches(
        &self,
        epoch: usize,
        start: usize,
    ) -> Box<dyn Iterator<Item = auglocal_core::Result<auglocal_core::trainer::Batch>> + '_> {
        Box::new(self.epoch(epoch, start).map(|batch| {
            batch
                .map(|b| auglocal_core::trainer::Batch {
                    images: b.images,
                    labels: b.labels,
                    global_images: b.global_images,
                })
                .map_err(auglocal_core::Error::external)
        }))
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        if let Source::Queue { receiver, producer } = &mut self.source {
            // Closing the queue first makes the producer's next send fail, so it stops.
            drop(receiver.take());
            if let Some(handle) = producer.take() {
                let _ = handle.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms;
    use crate::ImageSet;

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
    fn same_batches_whatever_the_threads_and_prefetch() -> anyhow::Result<()> {
        let make = || {
            Loader::new(
                textured(13),
                config(5, true, Augment::PadCropFlip { pad: 3 }),
                Device::Cpu,
            )
        };
        let inline_one = collect(&make()?.with_prefetch(0).with_workers(1)?, 2, 0)?;
        let queued_two = collect(&make()?.with_prefetch(3).with_workers(2)?, 2, 0)?;
        let queued_global = collect(&make()?, 2, 0)?;
        assert_eq!(inline_one.len(), 3);
        assert_eq!(inline_one, queued_two);
        assert_eq!(inline_one, queued_global);
        // Augmentation really changes images between epochs.
        assert_ne!(collect(&make()?, 3, 0)?[0].0, inline_one[0].0);
        Ok(())
    }

    #[test]
    fn dropping_an_epoch_early_stops_the_producer() -> anyhow::Result<()> {
        let loader = Loader::new(textured(40), config(2, true, Augment::None), Device::Cpu)?
            .with_prefetch(1);
        let mut batches = loader.epoch(1, 0);
        let first = batches.next().transpose()?.map(|b| b.index);
        assert_eq!(first, Some(0));
        // Returns once the producer has seen the closed queue: the test would hang otherwise.
        drop(batches);
        assert_eq!(loader.epoch(1, 19).count(), 1);
        Ok(())
    }

    /// Fails on one image, to check that errors arrive in batch order and end the epoch.
    #[derive(Debug)]
    struct FailsAt(usize);

    impl Dataset for FailsAt {
        fn name(&self) -> &str {
            "fails"
        }
        fn len(&self) -> usize {
            10
        }
        fn classes(&self) -> usize {
            2
        }
        fn label(&self, index: usize) -> u32 {
            (index % 2) as u32
        }
        fn shape(&self) -> (usize, usize, usize) {
            (1, 1, 1)
        }
        fn load(
            &self,
            index: usize,
            _: Augment,
            _: &Normalize,
            _: &mut rand_chacha::ChaCha8Rng,
            out: &mut [f32],
        ) -> Result<()> {
            if index >= self.0 {
                return Err(Error::InvalidSetting {
                    setting: "image",
                    value: index.to_string(),
                    expected: "a readable image".into(),
                });
            }
            out[0] = index as f32;
            Ok(())
        }
    }

    #[test]
    fn the_first_failing_image_ends_the_epoch() -> anyhow::Result<()> {
        for prefetch in [0, 2] {
            let loader = Loader::new(
                Arc::new(FailsAt(5)),
                config(3, false, Augment::None),
                Device::Cpu,
            )?
            .with_prefetch(prefetch);
            let results: Vec<Result<Batch>> = loader.epoch(1, 0).collect();
            assert_eq!(results.len(), 2, "prefetch {prefetch}");
            assert_eq!(results[0].as_ref().map(|b| b.index).ok(), Some(0));
            // Batch 1 holds images 3, 4 and 5; image 5 fails and nothing follows.
            let message = results[1].as_ref().unwrap_err().to_string();
            assert_eq!(message, "invalid image: 5; expected a readable image");
        }
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
