//! What the command line adds to a library error: the flag that changes the setting at
//! fault, or the command that continues. The libraries' messages carry the facts (path,
//! value, valid range) and name no flag; the flags are this crate's.

use auglocal_core::Error as CoreError;

/// `error` with the flag that fixes it appended, where a library error in its chain has one.
pub fn with_flag(error: anyhow::Error) -> anyhow::Error {
    match hint(&error) {
        Some(hint) => anyhow::anyhow!("{error:#}{hint}"),
        None => error,
    }
}

/// The text to append for the first library error of `error`'s chain that has a flag.
fn hint(error: &anyhow::Error) -> Option<String> {
    error.chain().find_map(|cause| {
        let core = cause.downcast_ref::<CoreError>();
        if let Some(CoreError::External(inner)) = core {
            // A data error reached the core through a batch source.
            return inner
                .downcast_ref::<auglocal_data::Error>()
                .and_then(data_hint);
        }
        core.and_then(core_hint).or_else(|| {
            cause
                .downcast_ref::<auglocal_data::Error>()
                .and_then(data_hint)
        })
    })
}

fn core_hint(error: &CoreError) -> Option<String> {
    match error {
        CoreError::NonFinite { .. } => Some(" (or pass --on-nan skip to skip such batches)".into()),
        CoreError::NoCheckpoint { exists: false, .. } => {
            Some("; pass the --out directory of a training run (or its checkpoint/ folder)".into())
        }
        CoreError::NoCheckpoint { exists: true, .. } => {
            Some(", written by `auglocal train --out DIR` at the end of each epoch".into())
        }
        CoreError::CheckpointNotWritten { .. } => Some(", then continue with --resume".into()),
        CoreError::InvalidSetting { setting, .. } => {
            let flag = match *setting {
                "auxiliary depth" => "--aux-depth",
                "pyramid coefficient" => "--pyramid",
                "number of modules" => "--modules",
                "model for AugLocal" => "--model",
                "momentum" => "--momentum",
                "weight decay" => "--weight-decay",
                "beta1" | "beta2" => "--betas",
                "eps" => "--eps",
                "nesterov" => "--no-nesterov",
                "image size" => "--image-size",
                "image size for +hpff" => "--image-size, or --method without +hpff",
                "method modifier" | "MAN block" => "--method",
                "pipeline stages" => "--stages",
                _ => return None,
            };
            Some(format!(" (set by {flag})"))
        }
        _ => None,
    }
}

fn data_hint(error: &auglocal_data::Error) -> Option<String> {
    use auglocal_data::Error;
    Some(
        match error {
            Error::MissingDataDir { .. } => "; pass it with --data-dir DIR",
            Error::NotAnImage { .. } => " or pass --skip-bad-images",
            Error::Columns { .. } => " with --label-column",
            Error::NotCached { .. } => {
                "; run once without --offline (and without HF_HUB_OFFLINE=1) to download it"
            }
            Error::Download { .. } => ", or pass --offline to read a filled cache",
            _ => return None,
        }
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn message(error: impl Into<anyhow::Error>) -> String {
        format!("{:#}", with_flag(error.into()))
    }

    #[test]
    fn library_errors_get_their_flag() {
        let missing = CoreError::NoCheckpoint {
            path: PathBuf::from("runs/x"),
            exists: false,
        };
        assert_eq!(
            message(missing),
            "checkpoint runs/x: no such directory; pass the --out directory of a training run (or its checkpoint/ folder)"
        );
        let nan = CoreError::NonFinite {
            what: "loss".into(),
            step: 3,
            module: 1,
            value: f32::NAN,
        };
        assert_eq!(
            message(nan),
            "non-finite loss at step 3 in module 1: NaN; lower the learning rate or check the input data (or pass --on-nan skip to skip such batches)"
        );
        // Through a context, and through the core from a batch source.
        let no_dir = auglocal_data::Error::MissingDataDir {
            dataset: "svhn",
            holding: "train_32x32.mat",
        };
        let wrapped = anyhow::Error::from(CoreError::external(no_dir)).context("epoch 1");
        assert_eq!(
            format!("{:#}", with_flag(wrapped)),
            "epoch 1: no data directory given for svhn: expected the directory holding train_32x32.mat; pass it with --data-dir DIR"
        );
        let image = auglocal_data::Error::NotAnImage {
            path: PathBuf::from("a/b.txt"),
            problem: "not an image".into(),
        };
        assert_eq!(
            message(image),
            "a/b.txt: not an image; expected a JPEG or PNG image; remove the file or pass --skip-bad-images"
        );
        // Errors without a flag pass unchanged.
        let io = auglocal_data::Error::InvalidSetting {
            setting: "batch size",
            value: "0".into(),
            expected: "at least 1".into(),
        };
        assert_eq!(message(io), "invalid batch size: 0; expected at least 1");
    }
}
