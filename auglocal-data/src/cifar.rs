//! Readers for the CIFAR-10 and CIFAR-100 "binary version" files
//! (<https://www.cs.toronto.edu/~kriz/cifar.html>).
//!
//! Each record is one or two label bytes followed by 3072 pixel bytes: 1024 red, 1024 green,
//! 1024 blue, each a row-major 32x32 plane. That is already CHW, so records are copied as is.

use std::path::{Path, PathBuf};

use crate::{Error, ImageSet, Result, Split};

const SIDE: usize = 32;
const CHANNELS: usize = 3;
const PIXELS: usize = CHANNELS * SIDE * SIDE;
const DOWNLOAD_HINT: &str = "download the \"binary version\" from \
    https://www.cs.toronto.edu/~kriz/cifar.html and unpack it into that directory";

/// What `--data-dir` must contain for CIFAR-10 (used in error messages).
pub(crate) const CIFAR10_HOLDING: &str =
    "data_batch_1.bin ... data_batch_5.bin and test_batch.bin (or the unpacked \
     cifar-10-batches-bin/ folder) from the CIFAR-10 binary version at \
     https://www.cs.toronto.edu/~kriz/cifar.html";
/// What `--data-dir` must contain for CIFAR-100 (used in error messages).
pub(crate) const CIFAR100_HOLDING: &str =
    "train.bin and test.bin (or the unpacked cifar-100-binary/ folder) from the CIFAR-100 \
     binary version at https://www.cs.toronto.edu/~kriz/cifar.html";

/// One of the two binary layouts.
struct Format {
    dataset: &'static str,
    /// The folder the official tarball unpacks to; accepted inside the given directory.
    subfolder: &'static str,
    train: &'static [&'static str],
    test: &'static [&'static str],
    /// Bytes before the pixels.
    label_bytes: usize,
    /// Which of the label bytes is the class.
    label_offset: usize,
    classes: usize,
}

impl Format {
    fn record_size(&self) -> usize {
        self.label_bytes + PIXELS
    }

    fn set(&self, images: Vec<u8>, labels: Vec<u32>) -> ImageSet {
        ImageSet {
            name: self.dataset.to_string(),
            images,
            labels,
            channels: CHANNELS,
            height: SIDE,
            width: SIDE,
            classes: self.classes,
        }
    }

    fn files(&self, split: Split) -> &'static [&'static str] {
        match split {
            Split::Train => self.train,
            Split::Test => self.test,
        }
    }
}

const CIFAR10: Format = Format {
    dataset: "cifar10",
    subfolder: "cifar-10-batches-bin",
    train: &[
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
    ],
    test: &["test_batch.bin"],
    label_bytes: 1,
    label_offset: 0,
    classes: 10,
};

// Records carry the coarse (20-class) label first; the benchmark uses the fine one.
const CIFAR100: Format = Format {
    dataset: "cifar100",
    subfolder: "cifar-100-binary",
    train: &["train.bin"],
    test: &["test.bin"],
    label_bytes: 2,
    label_offset: 1,
    classes: 100,
};

/// Loads a CIFAR-10 split from `dir` or its `cifar-10-batches-bin/` subfolder.
///
/// Train reads `data_batch_1.bin` .. `data_batch_5.bin`, test reads `test_batch.bin`.
/// Files may hold any positive number of 3073-byte records.
pub fn load_cifar10(dir: &Path, split: Split) -> Result<ImageSet> {
    load(&CIFAR10, dir, split)
}

/// Loads a CIFAR-100 split (fine labels, 100 classes) from `dir` or its `cifar-100-binary/`
/// subfolder.
///
/// Train reads `train.bin`, test reads `test.bin`. Files may hold any positive number of
/// 3074-byte records.
pub fn load_cifar100(dir: &Path, split: Split) -> Result<ImageSet> {
    load(&CIFAR100, dir, split)
}

fn load(format: &Format, dir: &Path, split: Split) -> Result<ImageSet> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for file in format.files(split) {
        let path = locate(format, dir, file)?;
        read_records(format, &path, &mut images, &mut labels)?;
    }
    Ok(format.set(images, labels))
}

fn locate(format: &Format, dir: &Path, file: &str) -> Result<PathBuf> {
    let direct = dir.join(file);
    if direct.is_file() {
        return Ok(direct);
    }
    let nested = dir.join(format.subfolder).join(file);
    if nested.is_file() {
        return Ok(nested);
    }
    let all: Vec<&str> = format.train.iter().chain(format.test).copied().collect();
    Err(Error::MissingFile {
        path: direct,
        expected: format!(
            "the {} binary files {} in {} or in its {}/ subfolder",
            format.dataset,
            all.join(", "),
            dir.display(),
            format.subfolder
        ),
        hint: DOWNLOAD_HINT.to_string(),
    })
}

/// Reads CIFAR-10 (`cifar100` false) or CIFAR-100 records from bytes held in memory; `path`
/// only names them in errors.
pub fn parse(bytes: &[u8], cifar100: bool, path: &Path) -> Result<ImageSet> {
    let format = if cifar100 { &CIFAR100 } else { &CIFAR10 };
    let mut images = Vec::new();
    let mut labels = Vec::new();
    records(format, bytes, path, &mut images, &mut labels)?;
    Ok(format.set(images, labels))
}

fn read_records(
    format: &Format,
    path: &Path,
    images: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    records(format, &bytes, path, images, labels)
}

fn records(
    format: &Format,
    bytes: &[u8],
    path: &Path,
    images: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<()> {
    let record_size = format.record_size();
    if bytes.is_empty() || !bytes.len().is_multiple_of(record_size) {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            record_size,
            len: bytes.len() as u64,
        });
    }
    let records = bytes.len() / record_size;
    images.reserve(records * PIXELS);
    labels.reserve(records);
    for (index, record) in bytes.chunks_exact(record_size).enumerate() {
        let label = u32::from(record[format.label_offset]);
        if label as usize >= format.classes {
            return Err(Error::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label,
                classes: format.classes,
            });
        }
        labels.push(label);
        images.extend_from_slice(&record[format.label_bytes..]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recognisable pixel value for (file, record, channel, y, x).
    fn pixel(file: usize, record: usize, c: usize, y: usize, x: usize) -> u8 {
        ((file * 31 + record * 7 + c * 5 + y * 3 + x) % 256) as u8
    }

    /// Writes `records` records in the real format, labels given by `label(record)`.
    fn write_file(
        path: &Path,
        file: usize,
        label_bytes: &dyn Fn(usize) -> Vec<u8>,
        records: usize,
    ) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for r in 0..records {
            bytes.extend(label_bytes(r));
            for c in 0..3 {
                for y in 0..32 {
                    for x in 0..32 {
                        bytes.push(pixel(file, r, c, y, x));
                    }
                }
            }
        }
        std::fs::write(path, bytes)
    }

    fn write_cifar10(dir: &Path) -> std::io::Result<()> {
        for (f, name) in CIFAR10.train.iter().chain(CIFAR10.test).enumerate() {
            write_file(&dir.join(name), f, &|r| vec![((f + r) % 10) as u8], 3)?;
        }
        Ok(())
    }

    fn check_cifar10(dir: &Path) -> anyhow::Result<()> {
        let train = load_cifar10(dir, Split::Train)?;
        assert_eq!(train.name, "cifar10");
        assert_eq!(train.len(), 15);
        assert_eq!((train.channels, train.height, train.width), (3, 32, 32));
        assert_eq!(train.classes, 10);
        assert_eq!(train.images.len(), 15 * 3072);
        let expected: Vec<u32> = (0..5)
            .flat_map(|f| (0..3).map(move |r| ((f + r) % 10) as u32))
            .collect();
        assert_eq!(train.labels, expected);
        // Image 7 is file 2 (data_batch_3), record 1.
        let image = train.image(7);
        assert_eq!(image[0], pixel(2, 1, 0, 0, 0));
        assert_eq!(image[1024 + 5 * 32 + 9], pixel(2, 1, 1, 5, 9));
        assert_eq!(image[2 * 1024 + 31 * 32 + 31], pixel(2, 1, 2, 31, 31));

        let test = load_cifar10(dir, Split::Test)?;
        assert_eq!(test.len(), 3);
        assert_eq!(test.labels, vec![5, 6, 7]);
        assert_eq!(test.image(2)[1024 + 32 + 2], pixel(5, 2, 1, 1, 2));
        Ok(())
    }

    #[test]
    fn cifar10_reads_records_and_labels() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        write_cifar10(dir.path())?;
        check_cifar10(dir.path())
    }

    #[test]
    fn cifar10_accepts_the_tarball_subfolder() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let nested = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&nested)?;
        write_cifar10(&nested)?;
        check_cifar10(dir.path())
    }

    #[test]
    fn cifar100_uses_the_fine_label() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let nested = dir.path().join("cifar-100-binary");
        std::fs::create_dir(&nested)?;
        write_file(
            &nested.join("train.bin"),
            0,
            &|r| vec![19, (r * 33) as u8],
            4,
        )?;
        write_file(&nested.join("test.bin"), 1, &|r| vec![0, 99 - r as u8], 2)?;

        let train = load_cifar100(dir.path(), Split::Train)?;
        assert_eq!(train.name, "cifar100");
        assert_eq!(train.classes, 100);
        assert_eq!(train.labels, vec![0, 33, 66, 99]);
        assert_eq!(
            train.image(3)[2 * 1024 + 10 * 32 + 4],
            pixel(0, 3, 2, 10, 4)
        );
        assert_eq!(train.image(0)[0], pixel(0, 0, 0, 0, 0));

        let test = load_cifar100(dir.path(), Split::Test)?;
        assert_eq!(test.labels, vec![99, 98]);
        assert_eq!(test.image(1)[1024 + 3 * 32 + 7], pixel(1, 1, 1, 3, 7));
        Ok(())
    }

    #[test]
    fn missing_file_names_the_path_and_the_expected_files() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        write_cifar10(dir.path())?;
        let gone = dir.path().join("data_batch_4.bin");
        std::fs::remove_file(&gone)?;
        let error = load_cifar10(dir.path(), Split::Train).unwrap_err();
        assert!(matches!(&error, Error::MissingFile { path, .. } if *path == gone));
        let message = error.to_string();
        assert!(message.contains(&gone.display().to_string()), "{message}");
        assert!(message.contains("test_batch.bin"), "{message}");
        assert!(message.contains("cifar-10-batches-bin"), "{message}");
        assert!(message.contains("binary version"), "{message}");
        // The test split does not need the missing train file.
        assert_eq!(load_cifar10(dir.path(), Split::Test)?.len(), 3);

        let message = load_cifar100(dir.path(), Split::Test)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("test.bin") && message.contains("train.bin"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn truncated_file_names_the_path_and_the_sizes() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        write_cifar10(dir.path())?;
        let path = dir.path().join("test_batch.bin");
        let mut bytes = std::fs::read(&path)?;
        bytes.truncate(2 * 3073 + 100);
        std::fs::write(&path, &bytes)?;
        let message = load_cifar10(dir.path(), Split::Test)
            .unwrap_err()
            .to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("3073"), "{message}");
        assert!(message.contains(&(2 * 3073 + 100).to_string()), "{message}");
        assert!(message.contains("truncated"), "{message}");
        assert!(message.contains("binary version"), "{message}");

        std::fs::write(&path, [])?;
        let error = load_cifar10(dir.path(), Split::Test).unwrap_err();
        assert!(matches!(error, Error::Truncated { len: 0, .. }), "{error}");
        Ok(())
    }

    #[test]
    fn cifar100_python_version_is_rejected_by_length() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // A CIFAR-10 record length is not a multiple of CIFAR-100's 3074 bytes.
        write_file(&dir.path().join("test.bin"), 0, &|_| vec![1], 2)?;
        let error = load_cifar100(dir.path(), Split::Test).unwrap_err();
        assert!(
            matches!(
                error,
                Error::Truncated {
                    record_size: 3074,
                    len: 6146,
                    ..
                }
            ),
            "{error}"
        );
        Ok(())
    }

    #[test]
    fn out_of_range_label_names_the_record() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        write_cifar10(dir.path())?;
        let path = dir.path().join("data_batch_2.bin");
        write_file(&path, 1, &|r| vec![if r == 2 { 10 } else { 0 }], 3)?;
        let error = load_cifar10(dir.path(), Split::Train).unwrap_err();
        assert!(
            matches!(
                &error,
                Error::LabelOutOfRange {
                    index: 2,
                    label: 10,
                    classes: 10,
                    ..
                }
            ),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains("record 2") && message.contains("label 10"),
            "{message}"
        );
        assert!(message.contains("0..=9"), "{message}");
        Ok(())
    }
}
