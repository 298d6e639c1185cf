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
        CoreError::InvalidSetting { setting, .. } => {
            let flag = match *setting {
                "auxiliary depth" => "--aux-depth",
                "pyramid coefficient" => "--pyramid",
                "number of modules" => "--modules",
                "model for AugLocal" => "--model",
                "momentum" => "--momentum",
                "weight decay" => "--weight-decay",
                "nesterov" => "--no-nesterov",
                "image size" => "--image-size",
                _ => return None,
            };
            Some(format!(" (set by {flag})"))
        }
        _ => None,
    }
}

fn data_hint(error: &auglocal_data::Error) -> Option<String> {
    let _ = error;
    None
}
