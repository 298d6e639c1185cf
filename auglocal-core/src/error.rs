//! Typed errors of the core crate. Every message says what was wrong, what was expected and,
//! where it helps, what to do next.

use std::path::PathBuf;

/// Errors raised by `auglocal-core`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An auxiliary-plan setting is out of its valid range.
    #[error("invalid {setting}: {value} (valid: {valid})")]
    InvalidSetting {
        /// What the setting is, in words (e.g. `momentum`, `pipeline stages`).
        setting: &'static str,
        /// The value given, as text.
        value: String,
        /// The values that would be accepted, in words.
        valid: String,
    },

    /// A model name that no registry knows.
    #[error("unknown model `{name}` (known models: {known})")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// Every model name the registry holds, comma-separated.
        known: String,
    },

    /// A method name that the table of methods does not hold.
    #[error("unknown method `{name}` (known methods: {known})")]
    UnknownMethod {
        /// The name asked for.
        name: String,
        /// Every method name of the table, comma-separated.
        known: String,
    },

    /// A tensor was created through a builder without an owner, so no module would step it.
    #[error("tensor `{name}` has no owner: create it through a builder tagged with ParamBuilder::owned_by (Owner::Unit(i) for unit i, Owner::Head for the output layer)")]
    UnownedTensor {
        /// Full name of the tensor in the store.
        name: String,
    },

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Reading or writing a file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, as a verb phrase (`reading`, `renaming into place`).
        action: &'static str,
        /// The file or directory acted on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// No complete checkpoint at `path`: the directory does not exist (`exists` false), or
    /// holds none.
    #[error("checkpoint {}: {}", path.display(), if *exists { "no checkpoint here: expected checkpoint/model.safetensors and checkpoint/state.json" } else { "no such directory" })]
    NoCheckpoint {
        /// The run or checkpoint directory given.
        path: PathBuf,
        /// Whether `path` exists at all.
        exists: bool,
    },

    /// A new checkpoint could not be written; the previous one, if any, is untouched.
    #[error("checkpoint {}: cannot write the new checkpoint ({reason}); {}; free disk space (or fix the directory's permissions)", dir.display(), if *previous_intact { format!("the previous checkpoint in {} is intact", dir.display()) } else { "no earlier checkpoint existed".to_string() })]
    CheckpointNotWritten {
        /// The checkpoint directory that was to be replaced.
        dir: PathBuf,
        /// Why writing failed (the underlying error's message).
        reason: String,
        /// Whether a complete earlier checkpoint is still in `dir`.
        previous_intact: bool,
    },

    /// A checkpoint or weights file does not fit the model it is loaded into.
    #[error("checkpoint {}: {problem}", path.display())]
    Checkpoint {
        /// The checkpoint directory or file at fault.
        path: PathBuf,
        /// What is wrong, in words (e.g. a missing or misshapen tensor, an unreadable run
        /// state).
        problem: String,
    },

    /// A loss or gradient became NaN or infinite (`step` counts from 1, `module` from 0;
    /// `what` is `loss` or `gradient of <tensor>`).
    #[error("non-finite {what} at step {step} in module {module}: {value}; lower the learning rate or check the input data")]
    NonFinite {
        /// `loss`, or `gradient of <tensor>`.
        what: String,
        /// The training step, counting from 1.
        step: u64,
        /// The module whose loss or gradient it was, counting from 0.
        module: usize,
        /// The offending value (NaN or an infinity).
        value: f32,
    },

    /// The transport between processes (NCCL) failed at `operation`.
    #[error("{transport} {operation} failed: {problem}; check that each process of the run sees its own GPU (one per local rank) and that every rank reached the same step")]
    Transport {
        /// Which transport failed: `NCCL`, `MPI`, or `replica sums` for the default sums of
        /// [`crate::dist::Comm`].
        transport: &'static str,
        /// What it was doing (e.g. `sum over replicas`).
        operation: &'static str,
        /// The transport's own message, or what went wrong in words.
        problem: String,
    },

    /// An error from outside this crate: a batch source (data), or an observer of training
    /// (metrics files, progress display).
    #[error(transparent)]
    External(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Wraps an error of a caller's batch source or observer.
    pub fn external(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::External(e.into())
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn checkpoint(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

/// Result type of `auglocal-core`.
pub type Result<T> = std::result::Result<T, Error>;
