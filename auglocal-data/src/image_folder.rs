//! ImageNet-style folders: `<root>/train/<class>/*` and `<root>/val/<class>/*` (or `test/`),
//! classes numbered by their folder names in sorted order (as torchvision's `ImageFolder`).
//! JPEG and PNG files are decoded when a batch needs them; training crops a random-resized
//! window, evaluation resizes the shorter side and takes the centre.

use std::path::{Path, PathBuf};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::resize::{self, Window};
use crate::transforms::{self, Augment, Normalize};
use crate::{Dataset, Error, Result, Split};

/// Output geometry and tolerance of an [`ImageFolder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderConfig {
    /// Side of the square images the loader produces (224 for ImageNet).
    pub size: usize,
    /// Shorter side before the evaluation centre crop (256 for ImageNet).
    pub resize: usize,
    /// Leave out files that are not JPEG/PNG images (counted in [`ImageFolder::skipped`])
    /// instead of failing.
    pub skip_bad: bool,
}

impl Default for FolderConfig {
    fn default() -> Self {
        FolderConfig {
            size: 224,
            resize: 256,
            skip_bad: false,
        }
    }
}

impl FolderConfig {
    /// ImageNet's proportions for another crop size: resize = size * 256 / 224.
    pub fn with_size(size: usize) -> Self {
        FolderConfig {
            size,
            resize: (size * 256).div_ceil(224),
            skip_bad: false,
        }
    }
}

/// A split of an image folder: file paths and labels, decoded lazily.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    name: String,
    files: Vec<PathBuf>,
    labels: Vec<u32>,
    class_names: Vec<String>,
    config: FolderConfig,
    skipped: Vec<(PathBuf, String)>,
}

/// What `--data-dir` must contain for image folders (used in error messages).
pub(crate) const HOLDING: &str =
    "train/<class>/*.jpg|png and val/<class>/*.jpg|png (one folder per class, as ImageNet)";

impl ImageFolder {
    /// Scans `root/train` (train) or `root/val`, else `root/test` (test). Classes are the
    /// sorted folder names of `root/train` (of the split's own folder if there is no
    /// `train/`), so both splits number them alike. Every file's header is read here: a file
    /// that is not a JPEG or PNG image fails (or is skipped with `skip_bad`); dot files are
    /// ignored.
    pub fn open(root: &Path, split: Split, config: FolderConfig) -> Result<Self> {
        if config.size == 0 || config.resize < config.size {
            return Err(Error::InvalidSetting {
                setting: "image folder size",
                value: format!("crop {} after resize {}", config.size, config.resize),
                expected: "a crop of at least 1 pixel, no larger than the resize".to_string(),
            });
        }
        let dir = match split {
            Split::Train => root.join("train"),
            Split::Test if root.join("val").is_dir() => root.join("val"),
            Split::Test => root.join("test"),
        };
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir,
                expected: format!("{HOLDING} in {}", root.display()),
                hint: format!(
                    "the data directory must be the folder holding train/ and val/{}",
                    crate::tarball::unpack_hint(root)
                ),
            });
        }
        let class_dir = if root.join("train").is_dir() {
            root.join("train")
        } else {
            dir.clone()
        };
        let class_names = subfolders(&class_dir)?;
        if class_names.is_empty() {
            return Err(Error::MissingFile {
                path: class_dir,
                expected: "one subfolder per class".to_string(),
                hint: format!("arrange the images as {HOLDING}"),
            });
        }
        for name in subfolders(&dir)? {
            if class_names.binary_search(&name).is_err() {
                return Err(Error::BadFile {
                    path: dir.join(&name),
                    problem: format!("class `{name}` is not among the training classes"),
                    expected: format!(
                        "the class folders of {} ({} classes)",
                        class_dir.display(),
                        class_names.len()
                    ),
                });
            }
        }
        let mut candidates = Vec::new();
        for (label, name) in class_names.iter().enumerate() {
            let class_path = dir.join(name);
            if !class_path.is_dir() {
                continue;
            }
            let mut files = files_under(&class_path)?;
            files.sort();
            candidates.extend(files.into_iter().map(|f| (f, label as u32)));
        }
        // Headers only: cheap enough for every file, and it catches strays before training.
        let checks: Vec<Option<String>> = candidates
            .par_iter()
            .map(|(path, _)| check_header(path).err())
            .collect();
        let mut files = Vec::new();
        let mut labels = Vec::new();
        let mut skipped = Vec::new();
        for ((path, label), problem) in candidates.into_iter().zip(checks) {
            match problem {
                None => {
                    files.push(path);
                    labels.push(label);
                }
                Some(problem) if config.skip_bad => skipped.push((path, problem)),
                Some(problem) => return Err(Error::NotAnImage { path, problem }),
            }
        }
        if files.is_empty() {
            return Err(Error::MissingFile {
                path: dir,
                expected: format!("JPEG or PNG images in class folders: {HOLDING}"),
                hint: format!("{} files were not images", skipped.len()),
            });
        }
        Ok(ImageFolder {
            name: format!("imagefolder:{}", root.display()),
            files,
            labels,
            class_names,
            config,
            skipped,
        })
    }

    /// The class folder names; class `i` is `class_names()[i]`.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The image files, in label order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Files left out by `skip_bad`, with the reason.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    /// A copy with `n` images taken round-robin over the classes (files are sorted by
    /// class, so the first `n` would all be of the first classes).
    pub fn subset(&self, n: usize) -> ImageFolder {
        let mut by_class: Vec<std::collections::VecDeque<usize>> =
            vec![Default::default(); self.class_names.len()];
        for (i, &label) in self.labels.iter().enumerate() {
            by_class[label as usize].push_back(i);
        }
        let mut picks = Vec::new();
        while picks.len() < n.min(self.files.len()) {
            for queue in &mut by_class {
                if picks.len() < n {
                    picks.extend(queue.pop_front());
                }
            }
        }
        picks.sort_unstable();
        ImageFolder {
            files: picks.iter().map(|&i| self.files[i].clone()).collect(),
            labels: picks.iter().map(|&i| self.labels[i]).collect(),
            ..self.clone()
        }
    }

    /// Decodes image `index` to RGB `u8` CHW with its height and width.
    pub fn decode(&self, index: usize) -> Result<(Vec<u8>, usize, usize)> {
        let path = &self.files[index];
        let bytes = std::fs::read(path).map_err(io_error(path))?;
        decode_image(&bytes, path)
    }
}

/// The most pixels an image file may have: 24 megapixels (6000 x 4000), far above any
/// training image. A JPEG header can declare 11272 x 9736 pixels in a 649-byte file (found
/// by fuzzing), which the decoder fills in and every crop then reads: seconds of work and
/// 330 MB per image from a few bytes.
pub const MAX_PIXELS: u64 = 24_000_000;

/// Decodes the bytes of image file `path` (JPEG or PNG, told by its content) to RGB `u8`
/// CHW with its height and width.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    decode_chw(bytes).map_err(|problem| Error::NotAnImage {
        path: path.to_path_buf(),
        problem,
    })
}

/// [`decode_image`] with the problem as text, for readers that name the place themselves.
pub(crate) fn decode_chw(bytes: &[u8]) -> std::result::Result<(Vec<u8>, usize, usize), String> {
    use image::ImageDecoder;
    let decoder = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .into_decoder()
        .map_err(|e| format!("cannot decode: {e}"))?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(format!(
            "the image is {width}x{height} pixels, more than the {MAX_PIXELS} this reader \
             decodes; downscale it"
        ));
    }
    let image = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| format!("cannot decode: {e}"))?
        .to_rgb8();
    Ok(resize::chw_from_rgb(&image))
}

/// Turns a decoded `(chw, height, width)` image into the `3 x size x size` input of
/// `config` in `out`: a random-resized crop and flip for training, the shorter side resized
/// and the centre cropped otherwise, then `augment`'s remaining steps and `normalize`.
pub fn prepare(
    config: &FolderConfig,
    (image, height, width): (&[u8], usize, usize),
    augment: Augment,
    normalize: &Normalize,
    rng: &mut ChaCha8Rng,
    out: &mut [f32],
) {
    let dims = (3, height, width);
    let size = config.size;
    let (square, rest) = match augment {
        Augment::ResizedCropFlip { scale, ratio } => {
            let window = resize::random_resized_window(height, width, scale, ratio, rng);
            let flip = rng.random_bool(0.5);
            let square = resize::resample(image, dims, window, (size, size), flip);
            (square, Augment::None)
        }
        // Evaluation, and pad-crop augmentations applied after the centre crop.
        other => {
            let (h, w) = resize::shorter_side(height, width, config.resize);
            let full = Window {
                top: 0,
                left: 0,
                height,
                width,
            };
            let centre = resize::centre_window(h, w, size);
            let square = resize::resample_cropped(image, dims, full, (h, w), centre, false);
            (square, other)
        }
    };
    transforms::apply(&square, 3, size, size, rest, normalize, rng, out);
}

impl Dataset for ImageFolder {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> usize {
        self.files.len()
    }

    fn classes(&self) -> usize {
        self.class_names.len()
    }

    fn label(&self, index: usize) -> u32 {
        self.labels[index]
    }

    fn shape(&self) -> (usize, usize, usize) {
        (3, self.config.size, self.config.size)
    }

    fn load(
        &self,
        index: usize,
        augment: Augment,
        normalize: &Normalize,
        rng: &mut ChaCha8Rng,
        out: &mut [f32],
    ) -> Result<()> {
        let (image, height, width) = self.decode(index)?;
        prepare(
            &self.config,
            (&image, height, width),
            augment,
            normalize,
            rng,
            out,
        );
        Ok(())
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Sorted names of the subfolders of `dir` (dot folders left out).
fn subfolders(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Every file below `dir`, through nested folders too (dot entries left out).
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).map_err(io_error(&folder))? {
            let entry = entry.map_err(io_error(&folder))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// Reads the header: the format must be JPEG or PNG and the size readable.
fn check_header(path: &Path) -> std::result::Result<(), String> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| format!("cannot open: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    match reader.format() {
        Some(image::ImageFormat::Jpeg | image::ImageFormat::Png) => {}
        Some(other) => return Err(format!("{other:?} files are not supported")),
        None => return Err("not an image (no JPEG or PNG signature)".to_string()),
    }
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| format!("unreadable image header: {e}"))?;
    if width == 0 || height == 0 {
        return Err(format!("the image is {width}x{height}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A recognisable pixel for (image id, x, y).
    fn rgb(id: u32, x: u32, y: u32) -> image::Rgb<u8> {
        image::Rgb([
            (id * 40 + x * 9) as u8,
            (y * 13 + x) as u8,
            (255 - id * 7 - y) as u8,
        ])
    }

    fn write_image(path: &Path, id: u32, width: u32, height: u32) -> anyhow::Result<()> {
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        let format = image::ImageFormat::from_path(path)?;
        let bytes = crate::fixtures::encode(width as usize, height as usize, format, |x, y| {
            rgb(id, x as u32, y as u32).0
        });
        std::fs::write(path, bytes)?;
        Ok(())
    }

    /// train/{cat,ant,dog} and val/{ant,dog}, PNGs of several sizes and one JPEG.
    fn tree() -> anyhow::Result<tempfile::TempDir> {
        let root = tempfile::tempdir()?;
        let r = root.path();
        write_image(&r.join("train/cat/b.png"), 0, 8, 6)?;
        write_image(&r.join("train/cat/a.png"), 1, 5, 9)?;
        write_image(&r.join("train/ant/x.jpg"), 2, 16, 16)?;
        write_image(&r.join("train/ant/nested/y.png"), 3, 7, 7)?;
        write_image(&r.join("train/dog/z.png"), 4, 12, 10)?;
        write_image(&r.join("val/dog/v.png"), 5, 6, 6)?;
        write_image(&r.join("val/ant/w.png"), 6, 9, 4)?;
        std::fs::write(r.join("train/cat/.DS_Store"), b"finder")?;
        Ok(root)
    }

    fn small() -> FolderConfig {
        FolderConfig {
            size: 4,
            resize: 5,
            skip_bad: false,
        }
    }

    #[test]
    fn classes_are_sorted_folder_names_shared_by_both_splits() -> anyhow::Result<()> {
        let root = tree()?;
        let train = ImageFolder::open(root.path(), Split::Train, small())?;
        assert_eq!(train.class_names(), ["ant", "cat", "dog"]);
        assert_eq!(train.classes(), 3);
        assert_eq!(train.labels, vec![0, 0, 1, 1, 2]);
        let names: Vec<String> = train
            .files()
            .iter()
            .map(|f| f.strip_prefix(root.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "train/ant/nested/y.png",
                "train/ant/x.jpg",
                "train/cat/a.png",
                "train/cat/b.png",
                "train/dog/z.png"
            ]
        );
        assert_eq!(train.shape(), (3, 4, 4));
        let val = ImageFolder::open(root.path(), Split::Test, small())?;
        assert_eq!(val.labels, vec![0, 2], "val has no cat: dog stays class 2");
        assert_eq!(val.class_names(), ["ant", "cat", "dog"]);
        Ok(())
    }

    #[test]
    fn png_pixels_decode_exactly() -> anyhow::Result<()> {
        let root = tree()?;
        let train = ImageFolder::open(root.path(), Split::Train, small())?;
        let (chw, height, width) = train.decode(3)?; // train/cat/b.png, id 0, 8x6
        assert_eq!((height, width), (6, 8));
        for (y, x) in [(0, 0), (5, 7), (2, 3)] {
            let p = rgb(0, x as u32, y as u32).0;
            for c in 0..3 {
                assert_eq!(chw[c * 48 + y * 8 + x], p[c], "({c}, {y}, {x})");
            }
        }
        Ok(())
    }

    /// The loader's output for one image, with unit normalisation, read back as bytes.
    fn loaded(set: &ImageFolder, index: usize, augment: Augment, seed: u64) -> Vec<u8> {
        let unit = Normalize {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
        };
        let mut out = vec![0.0; 3 * 16];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        set.load(index, augment, &unit, &mut rng, &mut out)
            .expect("loads");
        out.iter().map(|&v| v.round() as u8).collect()
    }

    #[test]
    fn evaluation_resizes_the_shorter_side_then_takes_the_centre() -> anyhow::Result<()> {
        let root = tree()?;
        let train = ImageFolder::open(root.path(), Split::Train, small())?;
        let (chw, h, w) = train.decode(3)?;
        // 6x8 -> shorter side 5: 5x6 (8 * 5 / 6 = 6.67, truncated), then the centre 4x4
        // at row round(0.5) = 0 (Python rounds half to even), column 1.
        assert_eq!(resize::shorter_side(h, w, 5), (5, 6));
        let full = Window {
            top: 0,
            left: 0,
            height: 6,
            width: 8,
        };
        let resized = resize::resample(&chw, (3, 6, 8), full, (5, 6), false);
        let centre = resize::centre_window(5, 6, 4);
        assert_eq!((centre.top, centre.left), (0, 1));
        let expected = resize::resample(&resized, (3, 5, 6), centre, (4, 4), false);
        assert_eq!(loaded(&train, 3, Augment::None, 0), expected);
        Ok(())
    }

    #[test]
    fn an_image_of_too_many_pixels_is_refused_before_decoding() {
        // Found by `cargo fuzz run image` (a timeout): 649 bytes of JPEG declaring 11272 x
        // 9736 pixels.
        let bytes = include_bytes!("../tests/fuzz_cases/jpeg-11272x9736-in-649-bytes.jpg");
        let err = decode_image(bytes, Path::new("big.jpg")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "big.jpg: the image is 11272x9736 pixels, more than the 24000000 this reader \
             decodes; downscale it; expected a JPEG or PNG image; remove the file"
        );
    }

    #[test]
    fn a_long_thin_image_is_cropped_without_resizing_it_whole() {
        // 1 x 1,000,000 pixels: resizing its shorter side to 256 makes it 256 x 256,000,000
        // (196 GB as RGB bytes); only the 224 x 224 centre may be computed. Before the crop
        // was computed alone, this aborted on a failed allocation.
        let width = 1_000_000;
        // A ramp through the centre: column 499,999 is 127, column 500,000 is 128.
        let row: Vec<u8> = (0..width)
            .map(|x| (x as i64 - 499_872).clamp(0, 255) as u8)
            .collect();
        let image = [row.clone(), row.clone(), row].concat();
        let unit = Normalize {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
        };
        let mut out = vec![0.0; 3 * 224 * 224];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let config = FolderConfig::default();
        prepare(
            &config,
            (&image, 1, width),
            Augment::None,
            &unit,
            &mut rng,
            &mut out,
        );
        // Crop column x sits at resized column (256,000,000 - 224) / 2 + x, i.e. source
        // position (127,999,888 + x + 0.5) / 256 - 0.5: 499,999.06 for x = 0 (127.06 on
        // the ramp), .26 for 50, .77 for 180, .94 for 223.
        for (x, value) in [(0, 127.0), (50, 127.0), (180, 128.0), (223, 128.0)] {
            for (c, y) in [(0, 0), (1, 100), (2, 223)] {
                assert_eq!(
                    out[c * 224 * 224 + y * 224 + x].round(),
                    value,
                    "({c}, {y}, {x})"
                );
            }
        }
    }

    #[test]
    fn training_crops_a_random_window_and_flips() -> anyhow::Result<()> {
        let root = tree()?;
        let train = ImageFolder::open(root.path(), Split::Train, small())?;
        let (chw, h, w) = train.decode(4)?; // dog/z.png, 12 wide, 10 high
        let mut rng = ChaCha8Rng::seed_from_u64(77);
        let window = resize::random_resized_window(h, w, [0.08, 1.0], [0.75, 4.0 / 3.0], &mut rng);
        let flip = rng.random_bool(0.5);
        let expected = resize::resample(&chw, (3, h, w), window, (4, 4), flip);
        assert_eq!(loaded(&train, 4, Augment::IMAGENET, 77), expected);
        assert_ne!(
            loaded(&train, 4, Augment::IMAGENET, 78),
            loaded(&train, 4, Augment::IMAGENET, 77)
        );
        Ok(())
    }

    #[test]
    fn non_images_fail_or_are_skipped_and_counted() -> anyhow::Result<()> {
        let root = tree()?;
        let stray = root.path().join("train/dog/notes.txt");
        std::fs::write(&stray, b"not a picture")?;
        assert_eq!(
            ImageFolder::open(root.path(), Split::Train, small())
                .unwrap_err()
                .to_string(),
            format!(
                "{}: not an image (no JPEG or PNG signature); expected a JPEG or PNG image; \
                 remove the file",
                stray.display()
            )
        );
        let tolerant = FolderConfig {
            skip_bad: true,
            ..small()
        };
        let train = ImageFolder::open(root.path(), Split::Train, tolerant)?;
        assert_eq!(train.len(), 5);
        assert_eq!(train.skipped().len(), 1);
        assert_eq!(train.skipped()[0].0, stray);
        Ok(())
    }

    #[test]
    fn a_truncated_png_fails_when_decoded_naming_the_file() -> anyhow::Result<()> {
        let root = tree()?;
        let path = root.path().join("train/dog/z.png");
        let bytes = std::fs::read(&path)?;
        std::fs::write(&path, &bytes[..bytes.len() / 2])?;
        let train = ImageFolder::open(root.path(), Split::Train, small())?;
        let unit = Normalize {
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let mut out = vec![0.0; 48];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let message = train
            .load(4, Augment::None, &unit, &mut rng, &mut out)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(&format!("{}: cannot decode", path.display())),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn layout_problems_name_the_folder() -> anyhow::Result<()> {
        let root = tree()?;
        std::fs::rename(root.path().join("val"), root.path().join("elsewhere"))?;
        let message = ImageFolder::open(root.path(), Split::Test, small())
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(&format!(
                "{} not found: expected train/<class>/*.jpg|png and val/<class>/*.jpg|png",
                root.path().join("test").display()
            )),
            "{message}"
        );
        write_image(&root.path().join("test/emu/e.png"), 9, 4, 4)?;
        let message = ImageFolder::open(root.path(), Split::Test, small())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("class `emu` is not among the training classes"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn subsets_take_classes_in_turn() -> anyhow::Result<()> {
        let root = tree()?;
        let train = ImageFolder::open(root.path(), Split::Train, small())?;
        let three = train.subset(3);
        assert_eq!(three.labels, vec![0, 1, 2]);
        assert_eq!(three.files()[1], train.files()[2]);
        assert_eq!(train.subset(4).labels, vec![0, 0, 1, 2]);
        assert_eq!(train.subset(99).len(), 5);
        Ok(())
    }
}
