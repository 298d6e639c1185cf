//! A synthetic 10-class dataset generated in code: the default when no data is downloaded.
//!
//! Each 32x32 RGB image shows one shape (disk, square, triangle, plus, ring) filled either
//! solid or with stripes; shape x fill gives the 10 classes. Everything else is a nuisance
//! drawn per image: foreground and background colours, centre, size, stripe angle, period
//! and phase, and Gaussian pixel noise. Colours are uniform and independent of the class, so
//! the mean colour says nothing about the label: a model has to learn shape and texture.
//!
//! Image `i` of a split is a pure function of `(seed, split, i)`, so generation runs in
//! parallel and gives the same bytes for any thread count.

use rand::Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use crate::{seed, ImageSet, Split};

const SIDE: usize = 32;
const CHANNELS: usize = 3;
const PLANE: usize = SIDE * SIDE;
const IMAGE_LEN: usize = CHANNELS * PLANE;
/// Number of classes: five shapes, each solid or striped.
pub const CLASSES: usize = 10;

/// Class names, indexed by label: `label / 2` is the shape, `label % 2` the fill.
pub const CLASS_NAMES: [&str; CLASSES] = [
    "solid disk",
    "striped disk",
    "solid square",
    "striped square",
    "solid triangle",
    "striped triangle",
    "solid plus",
    "striped plus",
    "solid ring",
    "striped ring",
];

/// Shape radius range in pixels: small enough to fit, large enough to show stripes.
const RADIUS: std::ops::Range<f32> = 6.0..13.0;
/// Stripe period range in pixels.
const PERIOD: std::ops::Range<f32> = 3.0..5.0;
/// Pixel noise standard deviation on the 0..255 scale.
const NOISE: f32 = 12.0;
/// Minimum RGB distance between the background and the shape colours, so every shape stays
/// visible (about 40 % of the distance from black to mid-grey).
const MIN_CONTRAST: f32 = 100.0;

/// Sizes and seed of the synthetic dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyntheticConfig {
    /// Images in the train split.
    pub train_size: usize,
    /// Images in the test split.
    pub test_size: usize,
    /// Seed of every image's nuisances.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            train_size: 5000,
            test_size: 1000,
            seed: 0,
        }
    }
}

/// Generates a split: `train_size` or `test_size` images named `synthetic`, label `i % 10`
/// for image `i` so classes are balanced.
pub fn generate(config: &SyntheticConfig, split: Split) -> ImageSet {
    let n = match split {
        Split::Train => config.train_size,
        Split::Test => config.test_size,
    };
    let split_tag = match split {
        Split::Train => 1,
        Split::Test => 2,
    };
    let mut images = vec![0u8; n * IMAGE_LEN];
    images
        .par_chunks_mut(IMAGE_LEN)
        .enumerate()
        .for_each(|(i, out)| {
            let mut rng = seed::rng(&[seed::SYNTHETIC, config.seed, split_tag, i as u64]);
            draw(i % CLASSES, &mut rng, out);
        });
    ImageSet {
        name: "synthetic".to_string(),
        images,
        labels: (0..n).map(|i| (i % CLASSES) as u32).collect(),
        channels: CHANNELS,
        height: SIDE,
        width: SIDE,
        classes: CLASSES,
    }
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Disk,
    Square,
    Triangle,
    Plus,
    Ring,
}

impl Shape {
    const ALL: [Shape; 5] = [
        Shape::Disk,
        Shape::Square,
        Shape::Triangle,
        Shape::Plus,
        Shape::Ring,
    ];

    /// Whether offset (dx, dy) from the centre is inside the shape of radius `r`. Sizes are
    /// chosen so the shapes have comparable extents at the same `r`.
    fn contains(self, dx: f32, dy: f32, r: f32) -> bool {
        let d2 = dx * dx + dy * dy;
        match self {
            Shape::Disk => d2 <= r * r,
            Shape::Square => dx.abs().max(dy.abs()) <= 0.85 * r,
            // Upright equilateral triangle with circumradius r around the centre.
            Shape::Triangle => dy <= 0.5 * r && dy >= -r + 3f32.sqrt() * dx.abs(),
            Shape::Plus => {
                let arm = 0.3 * r;
                (dx.abs() <= arm && dy.abs() <= r) || (dy.abs() <= arm && dx.abs() <= r)
            }
            Shape::Ring => d2 <= r * r && d2 >= (0.55 * r) * (0.55 * r),
        }
    }
}

type Rgb = [f32; 3];

fn random_colour(rng: &mut impl Rng) -> Rgb {
    [
        rng.random_range(0.0..256.0),
        rng.random_range(0.0..256.0),
        rng.random_range(0.0..256.0),
    ]
}

fn distance(a: Rgb, b: Rgb) -> f32 {
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// The second stripe colour: the foreground pushed towards black if it is light, towards
/// white if dark, so the two stripe colours always differ in brightness. Symmetric, so the
/// class-average colour stays mid-grey.
fn stripe_partner(fg: Rgb) -> Rgb {
    let luminance = 0.299 * fg[0] + 0.587 * fg[1] + 0.114 * fg[2];
    if luminance > 127.5 {
        fg.map(|v| v * 0.35)
    } else {
        fg.map(|v| v + (255.0 - v) * 0.65)
    }
}

/// Draws the background: uniform, rejected while too close to any shape colour. Keeps the
/// best candidate so the bounded loop always ends with something usable.
fn background(rng: &mut impl Rng, shape_colours: &[Rgb]) -> Rgb {
    let mut best = [0.0; 3];
    let mut best_contrast = f32::NEG_INFINITY;
    for _ in 0..64 {
        let candidate = random_colour(rng);
        let contrast = shape_colours
            .iter()
            .map(|&c| distance(candidate, c))
            .fold(f32::INFINITY, f32::min);
        if contrast > best_contrast {
            best = candidate;
            best_contrast = contrast;
        }
        if contrast >= MIN_CONTRAST {
            break;
        }
    }
    best
}

/// Renders one image of class `label` into `out` (CHW).
fn draw(label: usize, rng: &mut impl Rng, out: &mut [u8]) {
    let shape = Shape::ALL[label / 2];
    let striped = label % 2 == 1;

    let fg = random_colour(rng);
    let fg2 = if striped { stripe_partner(fg) } else { fg };
    let bg = background(rng, &[fg, fg2]);

    let r = rng.random_range(RADIUS);
    // Keeps the centre far enough in that most of the shape is visible, while letting large
    // shapes touch the border.
    let margin = 0.7 * r;
    let max = (SIDE - 1) as f32 - margin;
    let cx = rng.random_range(margin..max);
    let cy = rng.random_range(margin..max);

    let angle = rng.random_range(0.0..std::f32::consts::PI);
    let (sin, cos) = angle.sin_cos();
    let period = rng.random_range(PERIOD);
    let phase = rng.random_range(0.0..period);

    let (red, rest) = out.split_at_mut(PLANE);
    let (green, blue) = rest.split_at_mut(PLANE);
    for y in 0..SIDE {
        let dy = y as f32 - cy;
        for x in 0..SIDE {
            let dx = x as f32 - cx;
            let colour = if shape.contains(dx, dy, r) {
                let t = (x as f32 * cos + y as f32 * sin + phase).rem_euclid(period);
                if t < 0.5 * period {
                    fg
                } else {
                    fg2
                }
            } else {
                bg
            };
            let i = y * SIDE + x;
            for (plane, value) in [&mut red[i], &mut green[i], &mut blue[i]]
                .into_iter()
                .zip(colour)
            {
                let noise: f32 = rng.sample(StandardNormal);
                *plane = (value + NOISE * noise).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SyntheticConfig {
        SyntheticConfig {
            train_size: 200,
            test_size: 50,
            seed: 7,
        }
    }

    #[test]
    fn deterministic_for_a_config_and_thread_count() -> anyhow::Result<()> {
        let config = small();
        let first = generate(&config, Split::Train);
        let again = generate(&config, Split::Train);
        assert_eq!(first, again);
        let single = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()?
            .install(|| generate(&config, Split::Train));
        assert_eq!(first, single);
        Ok(())
    }

    #[test]
    fn shape_and_labels() {
        let set = generate(&small(), Split::Test);
        assert_eq!(set.name, "synthetic");
        assert_eq!(set.len(), 50);
        assert_eq!(
            (set.channels, set.height, set.width, set.classes),
            (3, 32, 32, 10)
        );
        assert_eq!(set.images.len(), 50 * 3072);
        assert!(set.check().is_ok());
        let mut counts = [0usize; CLASSES];
        for &label in &set.labels {
            counts[label as usize] += 1;
        }
        assert_eq!(counts, [5; CLASSES]);
    }

    #[test]
    fn splits_and_seeds_differ() {
        let config = small();
        let train = generate(&config, Split::Train);
        let test = generate(&config, Split::Test);
        assert_ne!(train.image(0), test.image(0));
        let reseeded = generate(&SyntheticConfig { seed: 8, ..config }, Split::Test);
        assert_ne!(test.image(0), reseeded.image(0));
        // Image i does not depend on the split size.
        let longer = generate(
            &SyntheticConfig {
                test_size: 60,
                ..config
            },
            Split::Test,
        );
        assert_eq!(longer.subset(50), test);
    }

    #[test]
    fn images_are_not_flat() {
        let set = generate(&small(), Split::Test);
        for i in 0..set.len() {
            let image = set.image(i);
            let (lo, hi) = image
                .iter()
                .fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            assert!(hi - lo > 60, "image {i} spans only {lo}..{hi}");
        }
    }

    fn mean_colour(image: &[u8]) -> [f32; 3] {
        let mut mean = [0.0; 3];
        for (c, plane) in image.chunks_exact(PLANE).enumerate() {
            mean[c] = plane.iter().map(|&v| f32::from(v)).sum::<f32>() / PLANE as f32;
        }
        mean
    }

    #[test]
    fn mean_colour_does_not_reveal_the_class() {
        let config = SyntheticConfig {
            train_size: 2000,
            test_size: 1000,
            seed: 1,
        };
        let train = generate(&config, Split::Train);
        let test = generate(&config, Split::Test);

        let mut sums = [[0.0f32; 3]; CLASSES];
        let mut counts = [0.0f32; CLASSES];
        for i in 0..train.len() {
            let label = train.labels[i] as usize;
            let colour = mean_colour(train.image(i));
            for c in 0..3 {
                sums[label][c] += colour[c];
            }
            counts[label] += 1.0;
        }
        let centroids: Vec<[f32; 3]> = sums
            .iter()
            .zip(counts)
            .map(|(sum, n)| sum.map(|s| s / n))
            .collect();
        for (label, centroid) in centroids.iter().enumerate() {
            for value in centroid {
                assert!(
                    (value - 127.5).abs() < 12.0,
                    "class {label} mean colour {centroid:?} is far from grey"
                );
            }
        }

        let correct = (0..test.len())
            .filter(|&i| {
                let colour = mean_colour(test.image(i));
                let nearest = (0..CLASSES)
                    .min_by(|&a, &b| {
                        distance(colour, centroids[a]).total_cmp(&distance(colour, centroids[b]))
                    })
                    .unwrap_or(0);
                nearest == test.labels[i] as usize
            })
            .count();
        let accuracy = correct as f32 / test.len() as f32;
        eprintln!("nearest class-mean colour accuracy: {accuracy} (chance 0.1)");
        assert!(accuracy < 0.25, "nearest mean colour scores {accuracy}");
    }

    #[test]
    fn generation_is_fast() {
        let start = std::time::Instant::now();
        let config = SyntheticConfig::default();
        let train = generate(&config, Split::Train);
        let test = generate(&config, Split::Test);
        let elapsed = start.elapsed();
        assert_eq!(train.len() + test.len(), 6000);
        eprintln!("synthetic 5000+1000 images generated in {elapsed:?}");
        // Generous: the dev profile builds this crate at opt-level 1 on small CI machines.
        assert!(elapsed.as_secs_f32() < 10.0, "took {elapsed:?}");
    }
}
