//! Resampling for ImageNet-style pipelines: random-resized-crop, resize of the shorter side,
//! centre crop. Images are `u8` CHW planes throughout.
//!
//! Resampling is PIL's antialiased bilinear (a triangle filter widened by the reduction
//! factor), which is what torchvision applies to PIL images; intermediate sums stay `f32`
//! and the result is rounded once.

use rand::Rng;

/// A window of an image: top row, left column, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// An RGB image as `u8` CHW planes, with its height and width.
pub fn chw_from_rgb(image: &image::RgbImage) -> (Vec<u8>, usize, usize) {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let plane = width * height;
    let mut chw = vec![0u8; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            chw[c * plane + i] = pixel.0[c];
        }
    }
    (chw, height, width)
}

/// torchvision's `RandomResizedCrop.get_params`: up to ten tries at an area fraction drawn
/// from `scale` and a log-uniform aspect ratio (width / height) from `ratio`; if none fits, the
/// central window with the aspect ratio clamped into `ratio`.
pub fn random_resized_window(
    height: usize,
    width: usize,
    scale: [f32; 2],
    ratio: [f32; 2],
    rng: &mut impl Rng,
) -> Window {
    let area = (height * width) as f64;
    let (log_lo, log_hi) = (f64::from(ratio[0]).ln(), f64::from(ratio[1]).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(f64::from(scale[0])..=f64::from(scale[1]));
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            return Window {
                top: rng.random_range(0..=height - h),
                left: rng.random_range(0..=width - w),
                height: h,
                width: w,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < f64::from(ratio[0]) {
        let w = width;
        (((w as f64) / f64::from(ratio[0])).round() as usize, w)
    } else if in_ratio > f64::from(ratio[1]) {
        let h = height;
        (h, ((h as f64) * f64::from(ratio[1])).round() as usize)
    } else {
        (height, width)
    };
    let (h, w) = (h.clamp(1, height), w.clamp(1, width));
    Window {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}

/// Output size of torchvision's `Resize(size)` with an integer: the shorter side becomes
/// `size`, the longer one keeps the aspect ratio (truncated).
pub fn shorter_side(height: usize, width: usize, size: usize) -> (usize, usize) {
    if height <= width {
        (size, (size * width / height.max(1)).max(1))
    } else {
        ((size * height / width.max(1)).max(1), size)
    }
}

/// torchvision's `CenterCrop(size)` window inside a `height x width` image: offsets rounded
/// half to even, as Python's `round`. The image must be at least `size` on both sides.
pub fn centre_window(height: usize, width: usize, size: usize) -> Window {
    let offset = |len: usize| ((len.saturating_sub(size)) as f64 / 2.0).round_ties_even() as usize;
    Window {
        top: offset(height),
        left: offset(width),
        height: size.min(height),
        width: size.min(width),
    }
}

/// Resamples `window` of every plane of a `channels x height x width` image to
/// `out_height x out_width`, optionally mirrored left-right.
pub fn resample(
    image: &[u8],
    dims: (usize, usize, usize),
    window: Window,
    (out_height, out_width): (usize, usize),
    flip: bool,
) -> Vec<u8> {
    let whole = Window {
        top: 0,
        left: 0,
        height: out_height,
        width: out_width,
    };
    resample_cropped(image, dims, window, (out_height, out_width), whole, flip)
}

/// The `crop` of what [`resample`] would make of `window` at `out_height x out_width`
/// (mirrored left-right after cropping when `flip`), computing and allocating only the
/// crop: resizing a long thin image's shorter side then taking the centre must not
/// materialise the huge resized image.
pub fn resample_cropped(
    image: &[u8],
    (channels, height, width): (usize, usize, usize),
    window: Window,
    (out_height, out_width): (usize, usize),
    crop: Window,
    flip: bool,
) -> Vec<u8> {
    let columns = filter_taps(
        window.left,
        window.width,
        width,
        out_width,
        crop.left..crop.left + crop.width,
    );
    let rows = filter_taps(
        window.top,
        window.height,
        height,
        out_height,
        crop.top..crop.top + crop.height,
    );
    let (out_height, out_width) = (crop.height, crop.width);
    let mut out = vec![0u8; channels * out_height * out_width];
    // Horizontal pass over the rows the vertical pass needs.
    let row_lo = rows.iter().map(|t| t.first).min().unwrap_or(0);
    let row_hi = rows
        .iter()
        .map(|t| t.first + t.weights.len())
        .max()
        .unwrap_or(0);
    let mut horizontal = vec![0f32; (row_hi - row_lo) * out_width];
    for c in 0..channels {
        let plane = &image[c * height * width..(c + 1) * height * width];
        for y in row_lo..row_hi {
            let source = &plane[y * width..(y + 1) * width];
            let target = &mut horizontal[(y - row_lo) * out_width..(y - row_lo + 1) * out_width];
            for (value, taps) in target.iter_mut().zip(&columns) {
                *value = taps.apply(|x| f32::from(source[x]));
            }
        }
        let target = &mut out[c * out_height * out_width..(c + 1) * out_height * out_width];
        for (oy, taps) in rows.iter().enumerate() {
            for ox in 0..out_width {
                let value = taps.apply(|y| horizontal[(y - row_lo) * out_width + ox]);
                let x = if flip { out_width - 1 - ox } else { ox };
                target[oy * out_width + x] = value.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// The source samples and weights of one output coordinate.
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

impl Taps {
    fn apply(&self, sample: impl Fn(usize) -> f32) -> f32 {
        self.weights
            .iter()
            .enumerate()
            .map(|(k, w)| w * sample(self.first + k))
            .sum()
    }
}

/// PIL's `precompute_coeffs` for the bilinear filter: output `i` covers source coordinate
/// `start + (i + 0.5) * scale`, the filter support widens by the reduction factor, and
/// samples outside `0..len` are left out (weights renormalised). Only the outputs in
/// `outputs` (of `0..out`) are computed.
fn filter_taps(
    start: usize,
    span: usize,
    len: usize,
    out: usize,
    outputs: std::ops::Range<usize>,
) -> Vec<Taps> {
    let scale = span as f64 / out as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale;
    outputs
        .map(|i| {
            let centre = start as f64 + (i as f64 + 0.5) * scale;
            let lo = ((centre - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((centre + support + 0.5).floor() as usize).min(len);
            let mut weights: Vec<f32> = (lo..hi)
                .map(|x| {
                    let t = (x as f64 - centre + 0.5) / filter_scale;
                    (1.0 - t.abs()).max(0.0) as f32
                })
                .collect();
            let total: f32 = weights.iter().sum();
            if total > 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            Taps { first: lo, weights }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn full(height: usize, width: usize) -> Window {
        Window {
            top: 0,
            left: 0,
            height,
            width,
        }
    }

    #[test]
    fn halving_a_row_matches_pils_bilinear() {
        // PIL: Image.fromarray(np.array([[0, 10, 20, 30]], np.uint8)).resize((2, 1),
        // Image.BILINEAR) weighs source 0..3 by 0.75, 0.75, 0.25 for the first output:
        // 12.5 / 1.75 = 7.14 -> 7; the second: 1..4 by 0.25, 0.75, 0.75: 40 / 1.75 = 22.9 -> 23.
        let row = [0u8, 10, 20, 30];
        let out = resample(&row, (1, 1, 4), full(1, 4), (1, 2), false);
        assert_eq!(out, vec![7, 23]);
        assert_eq!(
            resample(&row, (1, 1, 4), full(1, 4), (1, 2), true),
            vec![23, 7]
        );
    }

    #[test]
    fn same_size_is_the_identity_and_windows_crop() {
        let image: Vec<u8> = (0..2 * 3 * 5).map(|v| (v * 7) as u8).collect();
        let dims = (2, 3, 5);
        assert_eq!(resample(&image, dims, full(3, 5), (3, 5), false), image);
        // A 2x2 window at (1, 2), not resized, is a plain crop of each plane.
        let window = Window {
            top: 1,
            left: 2,
            height: 2,
            width: 2,
        };
        let crop = resample(&image, dims, window, (2, 2), false);
        let expected: Vec<u8> = [0usize, 1]
            .iter()
            .flat_map(|c| {
                let image = &image;
                [(1, 2), (1, 3), (2, 2), (2, 3)]
                    .into_iter()
                    .map(move |(y, x)| image[c * 15 + y * 5 + x])
            })
            .collect();
        assert_eq!(crop, expected);
    }

    #[test]
    fn constant_images_stay_constant_at_any_size() {
        let image = vec![93u8; 3 * 17 * 11];
        let window = Window {
            top: 3,
            left: 1,
            height: 9,
            width: 10,
        };
        for size in [(4, 4), (20, 7), (1, 1)] {
            let out = resample(&image, (3, 17, 11), window, size, true);
            assert!(out.iter().all(|&v| v == 93), "{size:?}");
            assert_eq!(out.len(), 3 * size.0 * size.1);
        }
    }

    #[test]
    fn torchvision_resize_and_centre_crop_geometry() {
        // Offsets (256 - 224) / 2 = 16 and (341 - 224) / 2 = 58.5, which Python rounds to 58.
        assert_eq!(shorter_side(375, 500, 256), (256, 341));
        assert_eq!(shorter_side(500, 375, 256), (341, 256));
        assert_eq!(shorter_side(64, 64, 36), (36, 36));
        assert_eq!(
            centre_window(256, 341, 224),
            Window {
                top: 16,
                left: 58,
                height: 224,
                width: 224
            }
        );
    }

    #[test]
    fn random_windows_respect_scale_and_ratio() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (scale, ratio) = ([0.08, 1.0], [0.75, 4.0 / 3.0]);
        for _ in 0..500 {
            let w = random_resized_window(120, 90, scale, ratio, &mut rng);
            assert!(w.top + w.height <= 120 && w.left + w.width <= 90, "{w:?}");
            let area = (w.height * w.width) as f64 / (120.0 * 90.0);
            // Rounding the sides moves the area and ratio a little past the drawn values.
            assert!((0.07..=1.0).contains(&area), "{w:?}");
            let aspect = w.width as f64 / w.height as f64;
            assert!((0.7..=1.45).contains(&aspect), "{w:?}");
        }
    }

    #[test]
    fn impossible_ratios_fall_back_to_the_clamped_centre() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // A 1x100 strip: no window of ratio <= 4/3 covers 8% of it; torchvision falls back
        // to height 1, width round(1 * 4/3) = 1, centred.
        let w = random_resized_window(1, 100, [0.08, 1.0], [0.75, 4.0 / 3.0], &mut rng);
        assert_eq!(
            w,
            Window {
                top: 0,
                left: 49,
                height: 1,
                width: 1
            }
        );
        let w = random_resized_window(100, 2, [0.08, 1.0], [0.75, 4.0 / 3.0], &mut rng);
        assert_eq!((w.height, w.width, w.top, w.left), (3, 2, 48, 0));
    }
}
