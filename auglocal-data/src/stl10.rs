//! STL-10's binary files (<https://cs.stanford.edu/~acoates/stl10/>): `stl10_binary/`
//! `train_X.bin` / `test_X.bin` hold 96x96x3 `uint8` images, each channel plane stored
//! column-major (as MATLAB wrote them); `train_y.bin` / `test_y.bin` one byte per image,
//! labels 1..10. Read as torchvision does: planes transposed to row-major, labels minus 1.

use std::path::{Path, PathBuf};

use crate::{Error, ImageSet, Result, Split};

const SIDE: usize = 96;
const PLANE: usize = SIDE * SIDE;
const PIXELS: usize = 3 * PLANE;
const SUBFOLDER: &str = "stl10_binary";
const HINT: &str = "download stl10_binary.tar.gz from https://cs.stanford.edu/~acoates/stl10/ \
    and unpack it into that directory";

/// What `--data-dir` must contain for STL-10 (used in error messages).
pub(crate) const HOLDING: &str = "train_X.bin, train_y.bin, test_X.bin and test_y.bin (or the \
    unpacked stl10_binary/ folder) from https://cs.stanford.edu/~acoates/stl10/";

/// Loads an STL-10 split (5,000 train / 8,000 test images, 10 classes) from `dir` or its
/// `stl10_binary/` subfolder.
pub fn load(dir: &Path, split: Split) -> Result<ImageSet> {
    let images_path = locate(dir, &format!("{split}_X.bin"))?;
    let labels_path = locate(dir, &format!("{split}_y.bin"))?;
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    parse(
        &read(&images_path)?,
        &read(&labels_path)?,
        &images_path,
        &labels_path,
    )
}

/// Builds the set from the two files' bytes; the paths are for messages.
pub fn parse(
    images: &[u8],
    labels: &[u8],
    images_path: &Path,
    labels_path: &Path,
) -> Result<ImageSet> {
    if images.is_empty() || !images.len().is_multiple_of(PIXELS) {
        return Err(Error::BadFile {
            path: images_path.to_path_buf(),
            problem: format!(
                "{} bytes is not a positive multiple of the {PIXELS} bytes of one 96x96x3 \
                 image (the file is truncated)",
                images.len()
            ),
            expected: "STL-10 binary images; download and unpack the files again".to_string(),
        });
    }
    let n = images.len() / PIXELS;
    if labels.len() != n {
        return Err(Error::BadFile {
            path: labels_path.to_path_buf(),
            problem: format!(
                "{} labels for {n} images in {}",
                labels.len(),
                images_path.display()
            ),
            expected: "one label byte per image; download and unpack the files again".to_string(),
        });
    }
    let mut classes = Vec::with_capacity(n);
    for (index, &label) in labels.iter().enumerate() {
        if !(1..=10).contains(&label) {
            return Err(Error::BadFile {
                path: labels_path.to_path_buf(),
                problem: format!("label {index} is {label}"),
                expected: "labels 1..10 (STL-10 numbers its classes from 1); download and \
                           unpack the files again"
                    .to_string(),
            });
        }
        classes.push(u32::from(label) - 1);
    }
    let mut out = vec![0u8; images.len()];
    for (source, target) in images.chunks_exact(PLANE).zip(out.chunks_exact_mut(PLANE)) {
        for col in 0..SIDE {
            for row in 0..SIDE {
                target[row * SIDE + col] = source[col * SIDE + row];
            }
        }
    }
    Ok(ImageSet {
        name: "stl10".to_string(),
        images: out,
        labels: classes,
        channels: 3,
        height: SIDE,
        width: SIDE,
        classes: 10,
    })
}

fn locate(dir: &Path, file: &str) -> Result<PathBuf> {
    let direct = dir.join(file);
    if direct.is_file() {
        return Ok(direct);
    }
    let nested = dir.join(SUBFOLDER).join(file);
    if nested.is_file() {
        return Ok(nested);
    }
    Err(Error::MissingFile {
        path: nested,
        expected: format!(
            "the STL-10 binary files {{train,test}}_{{X,y}}.bin in {} or its {SUBFOLDER}/ \
             subfolder",
            dir.display()
        ),
        hint: format!("{HINT}{}", crate::tarball::unpack_hint(dir)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixel(image: usize, c: usize, row: usize, col: usize) -> u8 {
        ((image * 29 + c * 11 + row * 7 + col) % 256) as u8
    }

    fn write_split(dir: &Path, split: &str, labels: &[u8]) -> std::io::Result<()> {
        crate::fixtures::write_stl10(dir, split, labels, pixel)
    }

    #[test]
    fn reads_column_major_planes_and_labels_from_1() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join(SUBFOLDER);
        std::fs::create_dir(&dir)?;
        write_split(&dir, "train", &[1, 10, 4])?;
        write_split(&dir, "test", &[7])?;
        let train = load(root.path(), Split::Train)?;
        assert_eq!(train.name, "stl10");
        assert_eq!(train.labels, vec![0, 9, 3]);
        assert_eq!((train.channels, train.height, train.width), (3, 96, 96));
        assert_eq!(train.image(2)[PLANE + 5 * 96 + 90], pixel(2, 1, 5, 90));
        assert_eq!(train.image(0)[2 * PLANE + 95 * 96], pixel(0, 2, 95, 0));
        let test = load(root.path(), Split::Test)?;
        assert_eq!(test.labels, vec![6]);
        assert_eq!(test.image(0)[1], pixel(0, 0, 0, 1));
        Ok(())
    }

    #[test]
    fn bad_files_name_the_path() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let message = load(dir.path(), Split::Train).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!(
                "{} not found: expected the STL-10 binary files",
                dir.path().join("stl10_binary/train_X.bin").display()
            )),
            "{message}"
        );
        // The download, not unpacked: named with the command that unpacks it.
        let archive = dir.path().join("stl10_binary.tar.gz");
        std::fs::write(&archive, b"")?;
        let message = load(dir.path(), Split::Train).unwrap_err().to_string();
        assert!(
            message.ends_with(&format!(
                "; {} is still packed: unpack it with `tar -xf {} -C {}`",
                archive.display(),
                archive.display(),
                dir.path().display()
            )),
            "{message}"
        );
        std::fs::remove_file(&archive)?;

        write_split(dir.path(), "train", &[1, 2])?;
        let x = dir.path().join("train_X.bin");
        let y = dir.path().join("train_y.bin");
        std::fs::write(&y, [1u8, 2, 3])?;
        assert_eq!(
            load(dir.path(), Split::Train).unwrap_err().to_string(),
            format!(
                "{}: 3 labels for 2 images in {}; expected one label byte per image; download \
                 and unpack the files again",
                y.display(),
                x.display()
            )
        );
        std::fs::write(&y, [1u8, 0])?;
        let message = load(dir.path(), Split::Train).unwrap_err().to_string();
        assert!(
            message.contains("label 1 is 0; expected labels 1..10"),
            "{message}"
        );

        let bytes = std::fs::read(&x)?;
        std::fs::write(&x, &bytes[..PIXELS + 10])?;
        let message = load(dir.path(), Split::Train).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}: 27658 bytes is not a positive multiple of the 27648 bytes of one 96x96x3 \
                 image (the file is truncated); expected STL-10 binary images; download and \
                 unpack the files again",
                x.display()
            )
        );
        Ok(())
    }
}
