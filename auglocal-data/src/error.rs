//! Typed errors of the data crate. Every message names the file or setting, says what was
//! expected and what to do about it.

use std::path::PathBuf;

/// Errors raised by `auglocal-data`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A dataset file that should exist does not.
    #[error("{} not found: expected {expected}; {hint}", path.display())]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
        /// Which files were expected and where.
        expected: String,
        /// How to get the files.
        hint: String,
    },

    /// A CIFAR file whose length is not a positive multiple of its record size.
    #[error(
        "{} is {len} bytes, which is not a positive multiple of the {record_size}-byte record \
         size: the file is truncated or not the CIFAR binary version; download the \"binary \
         version\" from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it again",
        path.display()
    )]
    Truncated {
        /// The offending file.
        path: PathBuf,
        /// Bytes per record in this format.
        record_size: usize,
        /// The file's length in bytes.
        len: u64,
    },

    /// A record whose label is not a valid class.
    #[error(
        "{}: record {index} has label {label}, but labels must be in 0..={max} ({classes} \
         classes); the file is corrupt or belongs to another dataset, download it again",
        path.display(),
        max = classes.saturating_sub(1)
    )]
    LabelOutOfRange {
        /// The offending file.
        path: PathBuf,
        /// The record's position in the file, from 0.
        index: usize,
        /// The label found.
        label: u32,
        /// How many classes the dataset has.
        classes: usize,
    },

    /// A dataset file that exists but does not hold what its format promises: a wrong shape,
    /// a bad header, a value out of range, bytes that do not decode.
    #[error("{}: {problem}; expected {expected}", path.display())]
    BadFile {
        /// The offending file.
        path: PathBuf,
        /// What is wrong, with the place in the file.
        problem: String,
        /// What the reader expected, and what to do.
        expected: String,
    },

    /// A file of an image folder that is not a JPEG or PNG image (or does not decode).
    #[error("{}: {problem}; expected a JPEG or PNG image; remove the file", path.display())]
    NotAnImage {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },

    /// A parquet file whose image and label columns cannot be told apart.
    #[error(
        "{}: {problem}; expected an image column (struct with `bytes`) and an integer label \
         column, as Hugging Face `datasets` writes them; name the label column",
        path.display()
    )]
    Columns {
        /// The offending file.
        path: PathBuf,
        /// What is missing or ambiguous, with the columns found.
        problem: String,
    },

    /// A Hub dataset asked for offline that the Hugging Face cache does not hold.
    #[error(
        "{} not found: expected {expected}; offline mode is on and the Hugging Face cache {} does \
         not hold it (HF_HUB_CACHE names another cache, or HF_HOME the folder whose hub/ is one)",
        path.display(),
        cache.display()
    )]
    NotCached {
        /// The cache path that was looked for.
        path: PathBuf,
        /// What should have been there.
        expected: String,
        /// The cache folder searched.
        cache: PathBuf,
    },

    /// A dataset name that [`crate::open`] does not know.
    #[error("unknown dataset `{name}`; valid names are: {valid}")]
    UnknownDataset {
        /// The name given.
        name: String,
        /// The accepted names, comma-separated.
        valid: String,
    },

    /// A dataset read from disk was asked for without a directory.
    #[error("no data directory given for {dataset}: expected the directory holding {holding}")]
    MissingDataDir {
        /// The dataset name.
        dataset: &'static str,
        /// What the directory must contain.
        holding: &'static str,
    },

    /// A loader setting or in-memory dataset that cannot work.
    #[error("invalid {setting}: {value}; expected {expected}")]
    InvalidSetting {
        /// What was set.
        setting: &'static str,
        /// The value given.
        value: String,
        /// What would be valid.
        expected: String,
    },

    /// Reading a dataset file failed.
    #[error("could not read {}: {source}; check that the file exists and is readable", path.display())]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },

    /// Fetching from the Hugging Face Hub failed.
    #[error("could not download {what}: {reason}; check the network and the name")]
    Download {
        /// What was being fetched.
        what: String,
        /// The client's error.
        reason: String,
    },

    /// Building a batch tensor failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
