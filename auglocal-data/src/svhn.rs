//! SVHN "cropped digits" as distributed (<http://ufldl.stanford.edu/housenumbers/>):
//! `train_32x32.mat`, `test_32x32.mat` and `extra_32x32.mat`, MAT-files holding `X`
//! (32x32x3xN `uint8`, column-major: row, column, channel, image) and `y` (N labels, 1..10,
//! where 10 is the digit 0), read as torchvision does (label 10 becomes class 0).

use std::path::Path;

use crate::mat::{self, MatArray, MatData};
use crate::{Error, ImageSet, Result, Split};

const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE;
const HINT: &str = "download train_32x32.mat and test_32x32.mat (format 2, cropped digits) \
    from http://ufldl.stanford.edu/housenumbers/ into that directory";

/// What `--data-dir` must contain for SVHN (used in error messages).
pub(crate) const HOLDING: &str = "train_32x32.mat and test_32x32.mat (and extra_32x32.mat for \
    svhn-extra) from http://ufldl.stanford.edu/housenumbers/";

/// Loads an SVHN split from `dir`: train is `train_32x32.mat` (73,257 images), followed by
/// `extra_32x32.mat` (531,131 more) when `extra` is set; test is `test_32x32.mat`.
pub fn load(dir: &Path, split: Split, extra: bool) -> Result<ImageSet> {
    let files: &[&str] = match (split, extra) {
        (Split::Train, false) => &["train_32x32.mat"],
        (Split::Train, true) => &["train_32x32.mat", "extra_32x32.mat"],
        (Split::Test, _) => &["test_32x32.mat"],
    };
    let mut set = ImageSet {
        name: if extra { "svhn-extra" } else { "svhn" }.to_string(),
        images: Vec::new(),
        labels: Vec::new(),
        channels: 3,
        height: SIDE,
        width: SIDE,
        classes: 10,
    };
    for file in files {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(Error::MissingFile {
                path,
                expected: format!("the SVHN file {file} in {}", dir.display()),
                hint: format!("{HINT}{}", crate::tarball::unpack_hint(dir)),
            });
        }
        read_file(&path, &mut set)?;
    }
    Ok(set)
}

fn bad(path: &Path, problem: String) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        problem,
        expected: "the SVHN cropped-digits layout: `X` 32x32x3xN uint8 and `y` N labels in \
                   1..10; download the file again"
            .to_string(),
    }
}

fn read_file(path: &Path, set: &mut ImageSet) -> Result<()> {
    let arrays = mat::read(path)?;
    let find = |name: &str| -> Result<&MatArray> {
        arrays.iter().find(|a| a.name == name).ok_or_else(|| {
            let names: Vec<&str> = arrays.iter().map(|a| a.name.as_str()).collect();
            bad(
                path,
                format!("no numeric variable `{name}` (found: {})", names.join(", ")),
            )
        })
    };
    let x = find("X")?;
    let y = find("y")?;
    let MatData::U8(pixels) = &x.data else {
        return Err(bad(
            path,
            format!("`X` has class {} instead of uint8", x.class),
        ));
    };
    let n = match x.dims[..] {
        [SIDE, SIDE, 3, n] => n,
        [SIDE, SIDE, 3] => 1,
        _ => return Err(bad(path, format!("`X` has dimensions {:?}", x.dims))),
    };
    if y.data.len() != n || y.dims.iter().filter(|&&d| d != 1).count() > 1 {
        return Err(bad(
            path,
            format!("`y` has dimensions {:?} for {n} images in `X`", y.dims),
        ));
    }
    let first = set.labels.len();
    for i in 0..n {
        let value = y.data.get(i);
        if value.fract() != 0.0 || !(1.0..=10.0).contains(&value) {
            return Err(bad(path, format!("y[{i}] is {value}")));
        }
        // torchvision: np.place(labels, labels == 10, 0).
        set.labels.push(value as u32 % 10);
    }
    set.images.resize((first + n) * PIXELS, 0);
    let out = &mut set.images[first * PIXELS..];
    // X[row, col, channel, image] sits at row + 32 col + 1024 channel + 3072 image.
    for (image, target) in out.chunks_exact_mut(PIXELS).enumerate() {
        let source = &pixels[image * PIXELS..(image + 1) * PIXELS];
        for c in 0..3 {
            for row in 0..SIDE {
                for col in 0..SIDE {
                    target[c * SIDE * SIDE + row * SIDE + col] =
                        source[c * SIDE * SIDE + col * SIDE + row];
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{mat_header as header, mat_variable as variable};

    /// A recognisable value for pixel (image, channel, row, col).
    fn pixel(image: usize, c: usize, row: usize, col: usize) -> u8 {
        ((image * 41 + c * 17 + row * 5 + col * 3) % 256) as u8
    }

    fn write_svhn(path: &Path, labels: &[u8]) -> std::io::Result<()> {
        crate::fixtures::write_svhn(path, labels, pixel)
    }

    #[test]
    fn reads_images_column_major_and_maps_label_10_to_0() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        write_svhn(&dir.path().join("train_32x32.mat"), &[10, 1, 9])?;
        write_svhn(&dir.path().join("test_32x32.mat"), &[5, 10])?;
        write_svhn(&dir.path().join("extra_32x32.mat"), &[2])?;

        let train = load(dir.path(), Split::Train, false)?;
        assert_eq!(train.name, "svhn");
        assert_eq!(train.labels, vec![0, 1, 9]);
        assert_eq!((train.channels, train.height, train.width), (3, 32, 32));
        // CHW: channel 2, row 7, column 30 of image 1.
        assert_eq!(train.image(1)[2 * 1024 + 7 * 32 + 30], pixel(1, 2, 7, 30));
        assert_eq!(train.image(0)[5], pixel(0, 0, 0, 5));
        assert_eq!(train.image(2)[1024 + 31 * 32], pixel(2, 1, 31, 0));

        let test = load(dir.path(), Split::Test, false)?;
        assert_eq!(test.labels, vec![5, 0]);
        let with_extra = load(dir.path(), Split::Train, true)?;
        assert_eq!(with_extra.name, "svhn-extra");
        assert_eq!(with_extra.labels, vec![0, 1, 9, 2]);
        assert_eq!(with_extra.image(3)[100], pixel(0, 0, 3, 4));
        Ok(())
    }

    #[test]
    fn bad_files_name_the_path_and_the_layout() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let message = load(dir.path(), Split::Test, false)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(&format!(
                "{} not found: expected the SVHN file test_32x32.mat",
                dir.path().join("test_32x32.mat").display()
            )),
            "{message}"
        );
        assert!(message.contains("ufldl.stanford.edu"), "{message}");

        let path = dir.path().join("train_32x32.mat");
        write_svhn(&path, &[3, 11])?;
        assert_eq!(
            load(dir.path(), Split::Train, false)
                .unwrap_err()
                .to_string(),
            format!(
                "{}: y[1] is 11; expected the SVHN cropped-digits layout: `X` 32x32x3xN uint8 \
                 and `y` N labels in 1..10; download the file again",
                path.display()
            )
        );

        let mut bytes = header();
        bytes.extend(variable("X", 9, &[32, 32, 1, 2], 2, &[0; 2048], true));
        bytes.extend(variable("y", 6, &[2, 1], 2, &[1, 2], true));
        std::fs::write(&path, bytes)?;
        let message = load(dir.path(), Split::Train, false)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("`X` has dimensions [32, 32, 1, 2]"),
            "{message}"
        );

        let mut bytes = header();
        bytes.extend(variable("X", 9, &[32, 32, 3, 2], 2, &[0; 6144], true));
        std::fs::write(&path, bytes)?;
        let message = load(dir.path(), Split::Train, false)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("no numeric variable `y` (found: X)"),
            "{message}"
        );

        // Truncated: the compressed element claims more bytes than the file has.
        write_svhn(&path, &[1, 2])?;
        let bytes = std::fs::read(&path)?;
        std::fs::write(&path, &bytes[..bytes.len() - 10])?;
        let message = load(dir.path(), Split::Train, false)
            .unwrap_err()
            .to_string();
        assert!(message.contains("the file is truncated"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        Ok(())
    }
}
