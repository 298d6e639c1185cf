//! Readers for CIFAR-10 and CIFAR-100 (<https://www.cs.toronto.edu/~kriz/cifar.html>), in
//! either download: the "binary version" or the "python version" that torchvision fetches,
//! unpacked or still in its `.tar.gz`.
//!
//! A binary record is one or two label bytes followed by 3072 pixel bytes: 1024 red, 1024
//! green, 1024 blue, each a row-major 32x32 plane. That is already CHW, so records are copied
//! as is. A python batch is a pickled dict whose `data` rows have the same 3072-byte layout;
//! it is decoded as data (serde-pickle behind an opcode check): nothing in it is run.

use std::path::{Path, PathBuf};

use crate::{pickle, tarball, Error, ImageSet, Result, Split};

const SIDE: usize = 32;
const CHANNELS: usize = 3;
const PIXELS: usize = CHANNELS * SIDE * SIDE;
const DOWNLOAD_HINT: &str = "download the \"binary version\" or the \"python version\" from \
    https://www.cs.toronto.edu/~kriz/cifar.html into that directory (torchvision's \
    download=True leaves the python version there)";

/// What `--data-dir` must contain for CIFAR-10 (used in error messages).
pub(crate) const CIFAR10_HOLDING: &str =
    "data_batch_1.bin ... data_batch_5.bin and test_batch.bin (or their cifar-10-batches-bin/ \
     folder), torchvision's cifar-10-batches-py/ folder, or either tarball \
     (cifar-10-binary.tar.gz, cifar-10-python.tar.gz) from \
     https://www.cs.toronto.edu/~kriz/cifar.html";
/// What `--data-dir` must contain for CIFAR-100 (used in error messages).
pub(crate) const CIFAR100_HOLDING: &str =
    "train.bin and test.bin (or their cifar-100-binary/ folder), torchvision's \
     cifar-100-python/ folder, or either tarball (cifar-100-binary.tar.gz, \
     cifar-100-python.tar.gz) from https://www.cs.toronto.edu/~kriz/cifar.html";

/// One of the two downloads of a dataset.
struct Layout {
    /// The folder its tarball unpacks to; its files are also accepted directly in the
    /// directory given.
    folder: &'static str,
    /// The tarball's name as downloaded.
    tarball: &'static str,
    train: &'static [&'static str],
    test: &'static [&'static str],
    pickled: bool,
}

impl Layout {
    fn files(&self, split: Split) -> &'static [&'static str] {
        match split {
            Split::Train => self.train,
            Split::Test => self.test,
        }
    }
}

/// One dataset: its two downloads and where each keeps the label.
struct Format {
    dataset: &'static str,
    binary: Layout,
    python: Layout,
    /// Binary records: bytes before the pixels, and which of them is the class.
    label_bytes: usize,
    label_offset: usize,
    /// Python batches: the dict entry holding the classes.
    label_key: &'static str,
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

    fn parse(&self, layout: &Layout, bytes: &[u8], path: &Path, into: &mut Parsed) -> Result<()> {
        if layout.pickled {
            self.batch(bytes, path, into)
        } else {
            records(self, bytes, path, &mut into.images, &mut into.labels)
        }
    }

    /// One python batch: `data` (uint8, N x 3072) and N labels under `label_key`.
    fn batch(&self, bytes: &[u8], path: &Path, into: &mut Parsed) -> Result<()> {
        let bad = |problem: String| Error::BadFile {
            path: path.to_path_buf(),
            problem,
            expected: format!(
                "a {} python-version batch (a pickled dict of `data`, uint8 N x 3072, and \
                 `{}`, N integers below {}); download it again",
                self.dataset, self.label_key, self.classes
            ),
        };
        let batch: PickledBatch = pickle::decode(bytes).map_err(&bad)?;
        let missing = |key: &str| bad(format!("the pickle has no `{key}` entry"));
        let data = batch.data.as_ref().ok_or_else(|| missing("data"))?;
        let (shape, data) =
            pickle::u8_array(data).map_err(|problem| bad(format!("`data` {problem}")))?;
        let labels = match self.label_key {
            "labels" => batch.labels.as_ref(),
            _ => batch.fine_labels.as_ref(),
        };
        let labels = labels.ok_or_else(|| missing(self.label_key))?;
        let [n, PIXELS] = shape[..] else {
            return Err(bad(format!(
                "`data` has shape {shape:?}, not (N, {PIXELS})"
            )));
        };
        let labels = pickle::int_list(labels)
            .map_err(|problem| bad(format!("`{}` {problem}", self.label_key)))?;
        if labels.len() != n {
            return Err(bad(format!(
                "`data` holds {n} images but `{}` {} labels",
                self.label_key,
                labels.len()
            )));
        }
        if let Some(index) = labels.iter().position(|&l| l as usize >= self.classes) {
            return Err(Error::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label: labels[index].min(u64::from(u32::MAX)) as u32,
                classes: self.classes,
            });
        }
        into.images.extend_from_slice(data);
        into.labels.extend(labels.iter().map(|&l| l as u32));
        Ok(())
    }
}

/// The entries of a python batch that are read; the others (`batch_label`, `filenames`,
/// `coarse_labels`) are skipped. Keys match whether pickled as Python 2 or 3 `str`.
#[derive(serde::Deserialize)]
struct PickledBatch {
    data: Option<serde_pickle::Value>,
    labels: Option<serde_pickle::Value>,
    fine_labels: Option<serde_pickle::Value>,
}

#[derive(Default)]
struct Parsed {
    images: Vec<u8>,
    labels: Vec<u32>,
}

const CIFAR10: Format = Format {
    dataset: "cifar10",
    binary: Layout {
        folder: "cifar-10-batches-bin",
        tarball: "cifar-10-binary.tar.gz",
        train: &[
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
        ],
        test: &["test_batch.bin"],
        pickled: false,
    },
    python: Layout {
        folder: "cifar-10-batches-py",
        tarball: "cifar-10-python.tar.gz",
        train: &[
            "data_batch_1",
            "data_batch_2",
            "data_batch_3",
            "data_batch_4",
            "data_batch_5",
        ],
        test: &["test_batch"],
        pickled: true,
    },
    label_bytes: 1,
    label_offset: 0,
    label_key: "labels",
    classes: 10,
};

// Binary records carry the coarse (20-class) label first; the benchmark uses the fine one.
const CIFAR100: Format = Format {
    dataset: "cifar100",
    binary: Layout {
        folder: "cifar-100-binary",
        tarball: "cifar-100-binary.tar.gz",
        train: &["train.bin"],
        test: &["test.bin"],
        pickled: false,
    },
    python: Layout {
        folder: "cifar-100-python",
        tarball: "cifar-100-python.tar.gz",
        train: &["train"],
        test: &["test"],
        pickled: true,
    },
    label_bytes: 2,
    label_offset: 1,
    label_key: "fine_labels",
    classes: 100,
};

/// Loads a CIFAR-10 split from `dir`.
///
/// Tried in order: the binary files (`data_batch_1.bin` .. `data_batch_5.bin` for train,
/// `test_batch.bin` for test) in `dir` or its `cifar-10-batches-bin/`; the python batches
/// (`data_batch_1` .. `test_batch`) in `dir` or its `cifar-10-batches-py/`; the tarball
/// `cifar-10-binary.tar.gz`, then `cifar-10-python.tar.gz`, read without unpacking. Binary
/// files may hold any positive number of 3073-byte records, python batches any number of
/// rows.
pub fn load_cifar10(dir: &Path, split: Split) -> Result<ImageSet> {
    load(&CIFAR10, dir, split)
}

/// Loads a CIFAR-100 split (fine labels, 100 classes) from `dir`: `train.bin`/`test.bin` in
/// `dir` or `cifar-100-binary/`, then `train`/`test` in `dir` or `cifar-100-python/`, then
/// `cifar-100-binary.tar.gz`, then `cifar-100-python.tar.gz`. Binary files may hold any
/// positive number of 3074-byte records.
pub fn load_cifar100(dir: &Path, split: Split) -> Result<ImageSet> {
    load(&CIFAR100, dir, split)
}

fn load(format: &Format, dir: &Path, split: Split) -> Result<ImageSet> {
    let mut parsed = Parsed::default();
    for layout in [&format.binary, &format.python] {
        let found: Option<Vec<PathBuf>> = layout
            .files(split)
            .iter()
            .map(|file| locate(layout, dir, file))
            .collect();
        if let Some(paths) = found {
            for path in paths {
                let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                format.parse(layout, &bytes, &path, &mut parsed)?;
            }
            return Ok(format.set(parsed.images, parsed.labels));
        }
    }
    for layout in [&format.binary, &format.python] {
        let archive = dir.join(layout.tarball);
        if !archive.is_file() {
            continue;
        }
        let names: Vec<String> = layout
            .files(split)
            .iter()
            .map(|file| format!("{}/{file}", layout.folder))
            .collect();
        for (bytes, name) in tarball::read_members(&archive, &names)?.iter().zip(&names) {
            format.parse(layout, bytes, &archive.join(name), &mut parsed)?;
        }
        return Ok(format.set(parsed.images, parsed.labels));
    }
    Err(missing(format, dir, split))
}

fn locate(layout: &Layout, dir: &Path, file: &str) -> Option<PathBuf> {
    [dir.join(file), dir.join(layout.folder).join(file)]
        .into_iter()
        .find(|path| path.is_file())
}

/// Names the first missing file of the download the directory holds part of (the binary one
/// when it holds neither).
fn missing(format: &Format, dir: &Path, split: Split) -> Error {
    let present = |layout: &Layout| {
        let all = layout.train.iter().chain(layout.test);
        all.filter(|file| locate(layout, dir, file).is_some())
            .count()
    };
    let layout = if present(&format.python) > present(&format.binary) {
        &format.python
    } else {
        &format.binary
    };
    let file = layout
        .files(split)
        .iter()
        .find(|file| locate(layout, dir, file).is_none())
        .unwrap_or(&layout.files(split)[0]);
    let list = |layout: &Layout| {
        let all: Vec<&str> = layout.train.iter().chain(layout.test).copied().collect();
        all.join(", ")
    };
    Error::MissingFile {
        path: dir.join(file),
        expected: format!(
            "the {} binary files {} in {d} or in its {}/ subfolder, the python batches {} in \
             {d} or its {}/ subfolder, or the tarball {} or {} in {d}",
            format.dataset,
            list(&format.binary),
            format.binary.folder,
            list(&format.python),
            format.python.folder,
            format.binary.tarball,
            format.python.tarball,
            d = dir.display(),
        ),
        hint: format!("{DOWNLOAD_HINT}{}", tarball::unpack_hint(dir)),
    }
}

/// Reads CIFAR-10 (`cifar100` false) or CIFAR-100 records from bytes held in memory; `path`
/// only names them in errors.
pub fn parse(bytes: &[u8], cifar100: bool, path: &Path) -> Result<ImageSet> {
    let format = if cifar100 { &CIFAR100 } else { &CIFAR10 };
    let mut parsed = Parsed::default();
    records(format, bytes, path, &mut parsed.images, &mut parsed.labels)?;
    Ok(format.set(parsed.images, parsed.labels))
}

/// Reads one CIFAR-10 (`cifar100` false) or CIFAR-100 python-version batch from bytes held
/// in memory; `path` only names it in errors.
pub fn parse_python(bytes: &[u8], cifar100: bool, path: &Path) -> Result<ImageSet> {
    let format = if cifar100 { &CIFAR100 } else { &CIFAR10 };
    let mut parsed = Parsed::default();
    format.batch(bytes, path, &mut parsed)?;
    Ok(format.set(parsed.images, parsed.labels))
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
        for (f, name) in CIFAR10
            .binary
            .train
            .iter()
            .chain(CIFAR10.binary.test)
            .enumerate()
        {
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

    /// The images of `write_file(.., file, .., records)` without their label bytes.
    fn pixels(file: usize, records: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for r in 0..records {
            for c in 0..3 {
                for y in 0..32 {
                    for x in 0..32 {
                        bytes.push(pixel(file, r, c, y, x));
                    }
                }
            }
        }
        bytes
    }

    /// The python version of `write_cifar10`: (name, pickled batch) for each file.
    fn cifar10_batches() -> Vec<(&'static str, Vec<u8>)> {
        let python = &CIFAR10.python;
        python
            .train
            .iter()
            .chain(python.test)
            .enumerate()
            .map(|(f, name)| {
                let labels: Vec<u32> = (0..3).map(|r| ((f + r) % 10) as u32).collect();
                (
                    *name,
                    crate::fixtures::cifar_pickle(&pixels(f, 3), &[("labels", &labels)]),
                )
            })
            .collect()
    }

    #[test]
    fn cifar10_reads_torchvisions_python_version() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let nested = dir.path().join("cifar-10-batches-py");
        std::fs::create_dir(&nested)?;
        for (name, bytes) in cifar10_batches() {
            std::fs::write(nested.join(name), bytes)?;
        }
        check_cifar10(dir.path())?;
        // The same batches directly in the directory.
        let flat = tempfile::tempdir()?;
        for (name, bytes) in cifar10_batches() {
            std::fs::write(flat.path().join(name), bytes)?;
        }
        check_cifar10(flat.path())
    }

    #[test]
    fn cifar10_reads_either_tarball_unpacked_or_not() -> anyhow::Result<()> {
        let python = tempfile::tempdir()?;
        let batches = cifar10_batches();
        let members: Vec<(String, &[u8])> = batches
            .iter()
            .map(|(name, bytes)| (format!("cifar-10-batches-py/{name}"), bytes.as_slice()))
            .collect();
        let members: Vec<(&str, &[u8])> = members.iter().map(|(n, b)| (n.as_str(), *b)).collect();
        crate::fixtures::write_tar_gz(&python.path().join("cifar-10-python.tar.gz"), &members)?;
        check_cifar10(python.path())?;

        let binary = tempfile::tempdir()?;
        let unpacked = tempfile::tempdir()?;
        write_cifar10(unpacked.path())?;
        let mut members = Vec::new();
        for name in CIFAR10.binary.train.iter().chain(CIFAR10.binary.test) {
            let bytes = std::fs::read(unpacked.path().join(name))?;
            members.push((format!("cifar-10-batches-bin/{name}"), bytes));
        }
        let members: Vec<(&str, &[u8])> = members
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        crate::fixtures::write_tar_gz(&binary.path().join("cifar-10-binary.tar.gz"), &members)?;
        check_cifar10(binary.path())?;

        // A tarball missing a member says which, and names the archive.
        let archive = python.path().join("cifar-10-python.tar.gz");
        crate::fixtures::write_tar_gz(&archive, &members[..2])?;
        let message = load_cifar10(python.path(), Split::Test)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(&archive.display().to_string())
                && message.contains("has no member cifar-10-batches-py/test_batch"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn cifar100_python_version_uses_the_fine_label() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let nested = dir.path().join("cifar-100-python");
        std::fs::create_dir(&nested)?;
        let fine = [0, 33, 66, 99];
        let coarse = [19, 0, 1, 2];
        let batch = crate::fixtures::cifar_pickle(
            &pixels(0, 4),
            &[("fine_labels", &fine), ("coarse_labels", &coarse)],
        );
        std::fs::write(nested.join("train"), batch)?;
        let train = load_cifar100(dir.path(), Split::Train)?;
        assert_eq!((train.name.as_str(), train.classes), ("cifar100", 100));
        assert_eq!(train.labels, fine);
        assert_eq!(
            train.image(3)[2 * 1024 + 10 * 32 + 4],
            pixel(0, 3, 2, 10, 4)
        );
        // No test split: the error names torchvision's file and folder too.
        let message = load_cifar100(dir.path(), Split::Test)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(&nested.parent().unwrap().join("test").display().to_string())
                && message.contains("cifar-100-python/")
                && message.contains("cifar-100-python.tar.gz"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn bad_python_batches_name_the_file_and_the_problem() -> anyhow::Result<()> {
        let path = Path::new("cifar-10-batches-py/test_batch");
        let fail = |bytes: &[u8]| parse_python(bytes, false, path).unwrap_err().to_string();
        let good = crate::fixtures::cifar_pickle(&pixels(0, 2), &[("labels", &[3, 4])]);
        assert_eq!(parse_python(&good, false, path)?.labels, vec![3, 4]);

        let message = fail(&good[..good.len() - 40]);
        assert!(
            message.starts_with("cifar-10-batches-py/test_batch: "),
            "{message}"
        );
        assert!(message.contains("download it again"), "{message}");

        let message = fail(&crate::fixtures::cifar_pickle(
            &pixels(0, 2),
            &[("labels", &[3])],
        ));
        assert!(
            message.contains("`data` holds 2 images but `labels` 1 labels"),
            "{message}"
        );
        let message = fail(&crate::fixtures::cifar_pickle(
            &pixels(0, 2),
            &[("fine_labels", &[3, 4])],
        ));
        assert!(
            message.contains("the pickle has no `labels` entry"),
            "{message}"
        );
        let message = fail(&crate::fixtures::cifar_pickle(
            &pixels(0, 2),
            &[("labels", &[3, 10])],
        ));
        assert!(
            message.contains("record 1 has label 10") && message.contains("0..=9"),
            "{message}"
        );
        // A pickle of something else entirely: the integer 7, or a dict without `data`.
        let message = fail(&[0x80, 2, b'K', 7, b'.']);
        assert!(message.contains("cannot be decoded: "), "{message}");
        let message = fail(&[0x80, 2, b'}', b'.']);
        assert!(
            message.contains("the pickle has no `data` entry"),
            "{message}"
        );
        // What the fuzzer found: a set holding NaN, whose conversion to a value sorted it
        // and panicked. It decodes as a list now and is refused as a batch.
        let crash = [
            0x80, 2, b'}', b'(', b'U', 4, b'd', b'a', b't', b'a', 0x8f, b'(', b'G', 0x7f, 0xf8, 0,
            0, 0, 0, 0, 0, b'G', 0x7f, 0xf8, 0, 0, 0, 0, 0, 1, b'K', 1, 0x90, b'u', b'.',
        ];
        let message = fail(&crash);
        assert!(
            message.contains("`data` is a sequence without a shape"),
            "{message}"
        );
        Ok(())
    }

    /// The fuzzer's inputs that made serde-pickle's conversion sort an unorderable set
    /// (and panic): refused as batches now, for both datasets.
    #[test]
    fn fuzz_cases_are_errors() {
        for bytes in [
            &include_bytes!("../tests/fuzz_cases/pickle-set-of-nan-a.pkl")[..],
            &include_bytes!("../tests/fuzz_cases/pickle-set-of-nan-b.pkl")[..],
        ] {
            for cifar100 in [false, true] {
                let path = Path::new("data_batch_1");
                let message = parse_python(bytes, cifar100, path).unwrap_err().to_string();
                assert!(message.starts_with("data_batch_1: "), "{message}");
            }
        }
    }

    #[test]
    fn names_a_foreign_archive_with_its_unpack_command() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("cifar10.tgz"), b"")?;
        let message = load_cifar10(dir.path(), Split::Train)
            .unwrap_err()
            .to_string();
        let archive = dir.path().join("cifar10.tgz");
        assert!(
            message.contains(&format!(
                "{} is still packed: unpack it with `tar -xf {} -C {}`",
                archive.display(),
                archive.display(),
                dir.path().display()
            )),
            "{message}"
        );
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
