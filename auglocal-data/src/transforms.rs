//! Per-image augmentation and normalisation, from `u8` CHW to `f32` CHW in one pass.

use rand::Rng;

use crate::resize;

/// Per-channel normalisation on the 0..1 scale: `out = (pixel / 255 - mean) / std`.
///
/// Images with fewer than three channels use the first entries; extra channels would reuse
/// the last entry, but the loader rejects more than three.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalize {
    /// Channel means on the 0..1 scale.
    pub mean: [f32; 3],
    /// Channel standard deviations on the 0..1 scale; must be positive.
    pub std: [f32; 3],
}

/// Training-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Augment {
    /// Images pass unchanged (evaluation).
    None,
    /// Reflect-pad by `pad` pixels, crop a random HxW window, then flip horizontally with
    /// probability 0.5: torchvision's `RandomCrop(32, padding=4, padding_mode='reflect')`
    /// followed by `RandomHorizontalFlip()`.
    PadCropFlip {
        /// Padding on each side, in pixels.
        pad: usize,
    },
    /// [`Augment::PadCropFlip`] without the flip (SVHN: digits are not mirror-symmetric).
    PadCrop {
        /// Padding on each side, in pixels.
        pad: usize,
    },
    /// torchvision's `RandomResizedCrop(size, scale, ratio)` to the output size, then a
    /// horizontal flip with probability 0.5 (ImageNet training).
    ResizedCropFlip {
        /// Range of the window's area as a fraction of the image (0.08..1 for ImageNet).
        scale: [f32; 2],
        /// Range of the window's aspect ratio, width / height (3/4..4/3 for ImageNet).
        ratio: [f32; 2],
    },
}

impl Augment {
    /// ImageNet's training augmentation: random-resized-crop (scale 0.08-1, ratio 3/4-4/3)
    /// and a horizontal flip.
    pub const IMAGENET: Augment = Augment::ResizedCropFlip {
        scale: [0.08, 1.0],
        ratio: [3.0 / 4.0, 4.0 / 3.0],
    };
}

/// A fixed crop window and flip: the random part of [`Augment::PadCropFlip`] made explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Crop {
    /// Reflect padding on each side.
    pub pad: usize,
    /// Top row of the window in the padded image, in `0..=2 * pad`.
    pub offset_y: usize,
    /// Left column of the window in the padded image, in `0..=2 * pad`.
    pub offset_x: usize,
    /// Whether the window is mirrored left-right.
    pub flip: bool,
}

impl Crop {
    /// The identity window.
    const NONE: Crop = Crop {
        pad: 0,
        offset_y: 0,
        offset_x: 0,
        flip: false,
    };
}

/// Writes one CHW `u8` image, augmented with `rng` and normalised, into `out` as `f32` CHW.
///
/// Reflect padding follows numpy/PyTorch `reflect`: the edge is not repeated, so row -1 reads
/// row 1, row -2 reads row 2 and row `h` reads row `h - 2`. Draws, in order, the crop row,
/// the crop column and the flip from `rng` (no flip for [`Augment::PadCrop`]);
/// [`Augment::None`] draws nothing. [`Augment::ResizedCropFlip`] resamples a random window
/// back to `height x width`.
///
/// # Panics
/// If `image` or `out` is not `channels * height * width` long; the loader guarantees it.
// The argument list is the shared contract with callers; bundling it would only move it.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    image: &[u8],
    channels: usize,
    height: usize,
    width: usize,
    augment: Augment,
    normalize: &Normalize,
    rng: &mut impl Rng,
    out: &mut [f32],
) {
    let crop = match augment {
        Augment::None => Crop::NONE,
        Augment::PadCropFlip { pad } => Crop {
            pad,
            offset_y: rng.random_range(0..=2 * pad),
            offset_x: rng.random_range(0..=2 * pad),
            flip: rng.random_bool(0.5),
        },
        Augment::PadCrop { pad } => Crop {
            pad,
            offset_y: rng.random_range(0..=2 * pad),
            offset_x: rng.random_range(0..=2 * pad),
            flip: false,
        },
        Augment::ResizedCropFlip { scale, ratio } => {
            let dims = (channels, height, width);
            let window = resize::random_resized_window(height, width, scale, ratio, rng);
            let flip = rng.random_bool(0.5);
            let resized = resize::resample(image, dims, window, (height, width), flip);
            crop_into(&resized, dims, Crop::NONE, normalize, out);
            return;
        }
    };
    crop_into(image, (channels, height, width), crop, normalize, out);
}

/// [`apply`] with the crop window given, so tests can pin it.
pub(crate) fn crop_into(
    image: &[u8],
    (channels, height, width): (usize, usize, usize),
    crop: Crop,
    normalize: &Normalize,
    out: &mut [f32],
) {
    let plane = height * width;
    let len = channels * plane;
    assert_eq!(
        image.len(),
        len,
        "image must be {channels}x{height}x{width}"
    );
    assert_eq!(out.len(), len, "output must be {channels}x{height}x{width}");
    if len == 0 {
        return;
    }
    // Source column of every output column: the mapping is the same for every row and channel.
    let columns: Vec<usize> = (0..width)
        .map(|x| {
            let x = if crop.flip { width - 1 - x } else { x };
            reflect(x + crop.offset_x, crop.pad, width)
        })
        .collect();
    for c in 0..channels {
        let k = c.min(2);
        // (v / 255 - mean) / std as one multiply-add.
        let scale = 1.0 / (255.0 * normalize.std[k]);
        let shift = -normalize.mean[k] / normalize.std[k];
        let source = &image[c * plane..(c + 1) * plane];
        let target = &mut out[c * plane..(c + 1) * plane];
        for (y, row) in target.chunks_exact_mut(width).enumerate() {
            let from = reflect(y + crop.offset_y, crop.pad, height) * width;
            let source_row = &source[from..from + width];
            for (value, &x) in row.iter_mut().zip(&columns) {
                *value = f32::from(source_row[x]) * scale + shift;
            }
        }
    }
}

/// Maps a coordinate of the padded image (`0..size + 2 * pad`) to the source coordinate.
///
/// Reflection repeats with period `2 * (size - 1)`, so padding wider than the image keeps
/// bouncing between the edges instead of reading out of bounds.
fn reflect(padded: usize, pad: usize, size: usize) -> usize {
    if size <= 1 {
        return 0;
    }
    let period = 2 * (size - 1);
    // Shift by a whole number of periods so the arithmetic stays unsigned.
    let shifted = padded + period * (pad / period + 1) - pad;
    let m = shifted % period;
    if m >= size {
        period - m
    } else {
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const UNIT: Normalize = Normalize {
        mean: [0.0; 3],
        std: [1.0 / 255.0; 3],
    };

    /// Runs `crop_into` with `UNIT` normalisation so outputs read back as pixel values.
    fn cropped(image: &[u8], dims: (usize, usize, usize), crop: Crop) -> Vec<u8> {
        let mut out = vec![0.0; image.len()];
        crop_into(image, dims, crop, &UNIT, &mut out);
        out.iter().map(|&v| v.round() as u8).collect()
    }

    #[test]
    fn reflect_matches_numpy() {
        // np.pad(np.arange(4), 2, mode='reflect') == [2, 1, 0, 1, 2, 3, 2, 1]
        let padded: Vec<usize> = (0..8).map(|i| reflect(i, 2, 4)).collect();
        assert_eq!(padded, vec![2, 1, 0, 1, 2, 3, 2, 1]);
        // np.pad(np.arange(3), 5, mode='reflect')
        let wide: Vec<usize> = (0..13).map(|i| reflect(i, 5, 3)).collect();
        assert_eq!(wide, vec![1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1]);
        assert_eq!(reflect(3, 2, 1), 0);
    }

    #[test]
    fn normalisation_by_hand() {
        let normalize = Normalize {
            mean: [0.5, 0.25, 0.0],
            std: [0.5, 0.25, 2.0],
        };
        let image = [255u8, 0, 51];
        let mut out = [0.0f32; 3];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        apply(
            &image,
            3,
            1,
            1,
            Augment::None,
            &normalize,
            &mut rng,
            &mut out,
        );
        let expected = [(1.0 - 0.5) / 0.5, (0.0 - 0.25) / 0.25, (0.2 - 0.0) / 2.0];
        for (got, want) in out.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn none_is_identity_then_normalise() {
        let image: Vec<u8> = (0..2 * 3 * 5).map(|v| (v * 8) as u8).collect();
        let normalize = Normalize {
            mean: [0.1, 0.9, 0.0],
            std: [0.2, 0.3, 1.0],
        };
        let mut out = vec![0.0; image.len()];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        apply(
            &image,
            2,
            3,
            5,
            Augment::None,
            &normalize,
            &mut rng,
            &mut out,
        );
        for (i, (&pixel, &value)) in image.iter().zip(&out).enumerate() {
            let c = i / 15;
            let want = (f32::from(pixel) / 255.0 - normalize.mean[c]) / normalize.std[c];
            assert!((value - want).abs() < 1e-5, "pixel {i}: {value} vs {want}");
        }
    }

    #[test]
    fn reflect_pad_crop_and_flip_by_hand() {
        // 1 channel 4x4, values 10*row + col.
        #[rustfmt::skip]
        let image: Vec<u8> = vec![
             0,  1,  2,  3,
            10, 11, 12, 13,
            20, 21, 22, 23,
            30, 31, 32, 33,
        ];
        // Reflect-padded by 2 (8x8): rows/cols map through [2, 1, 0, 1, 2, 3, 2, 1].
        let dims = (1, 4, 4);
        let crop = |offset_y, offset_x, flip| Crop {
            pad: 2,
            offset_y,
            offset_x,
            flip,
        };
        // Offsets (2, 2) are the unpadded image.
        assert_eq!(cropped(&image, dims, crop(2, 2, false)), image);
        // Top-left window: padded rows 0..4 = source rows 2,1,0,1; same for columns.
        #[rustfmt::skip]
        let top_left: Vec<u8> = vec![
            22, 21, 20, 21,
            12, 11, 10, 11,
             2,  1,  0,  1,
            12, 11, 10, 11,
        ];
        assert_eq!(cropped(&image, dims, crop(0, 0, false)), top_left);
        // Bottom-right window: padded 4..8 = source 2,3,2,1.
        #[rustfmt::skip]
        let bottom_right: Vec<u8> = vec![
            22, 23, 22, 21,
            32, 33, 32, 31,
            22, 23, 22, 21,
            12, 13, 12, 11,
        ];
        assert_eq!(cropped(&image, dims, crop(4, 4, false)), bottom_right);
        // Window at rows 1..5 (source 1,0,1,2), cols 3..7 (source 1,2,3,2), mirrored.
        #[rustfmt::skip]
        let flipped: Vec<u8> = vec![
            12, 13, 12, 11,
             2,  3,  2,  1,
            12, 13, 12, 11,
            22, 23, 22, 21,
        ];
        assert_eq!(cropped(&image, dims, crop(1, 3, true)), flipped);
        // A flip alone mirrors each row.
        #[rustfmt::skip]
        let mirrored: Vec<u8> = vec![
             3,  2,  1,  0,
            13, 12, 11, 10,
            23, 22, 21, 20,
            33, 32, 31, 30,
        ];
        assert_eq!(cropped(&image, dims, crop(2, 2, true)), mirrored);
    }

    #[test]
    fn channels_share_the_window() {
        let image: Vec<u8> = (0..3 * 4 * 4).map(|v| v as u8).collect();
        let out = cropped(
            &image,
            (3, 4, 4),
            Crop {
                pad: 2,
                offset_y: 0,
                offset_x: 1,
                flip: true,
            },
        );
        for c in 1..3 {
            for i in 0..16 {
                assert_eq!(out[c * 16 + i], out[i] + (c * 16) as u8);
            }
        }
    }

    /// The distinct outputs of `draws` random augmentations of a 4x4 image.
    fn distinct_outputs(augment: Augment, draws: usize) -> usize {
        let image: Vec<u8> = (0..16).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut seen = std::collections::HashSet::new();
        let mut out = vec![0.0; 16];
        for _ in 0..draws {
            apply(&image, 1, 4, 4, augment, &UNIT, &mut rng, &mut out);
            seen.insert(out.iter().map(|&v| v.round() as u8).collect::<Vec<_>>());
        }
        seen.len()
    }

    #[test]
    fn random_augmentation_draws_every_window() {
        // 3 row offsets x 3 column offsets x 2 flips, all distinct for this image.
        assert_eq!(distinct_outputs(Augment::PadCropFlip { pad: 1 }, 2000), 18);
        // No flips: the 9 windows only.
        assert_eq!(distinct_outputs(Augment::PadCrop { pad: 1 }, 1000), 9);
    }

    #[test]
    fn resized_crop_flip_matches_its_window() {
        let image: Vec<u8> = (0..3 * 10 * 12).map(|v| (v * 13 % 256) as u8).collect();
        let augment = Augment::IMAGENET;
        let mut out = vec![0.0; image.len()];
        apply(
            &image,
            3,
            10,
            12,
            augment,
            &UNIT,
            &mut ChaCha8Rng::seed_from_u64(9),
            &mut out,
        );
        // Replay the draws: window, then flip.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let window =
            resize::random_resized_window(10, 12, [0.08, 1.0], [0.75, 4.0 / 3.0], &mut rng);
        let flip = rng.random_bool(0.5);
        let expected = resize::resample(&image, (3, 10, 12), window, (10, 12), flip);
        let got: Vec<u8> = out.iter().map(|&v| v.round() as u8).collect();
        assert_eq!(got, expected);
    }
}
