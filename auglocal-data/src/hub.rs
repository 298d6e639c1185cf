//! Datasets from the Hugging Face Hub: parquet shards of a dataset repository, fetched with
//! `hf-hub` into the standard cache (`$HF_HOME/hub`, by default `~/.cache/huggingface/hub`)
//! or, offline, read from it alone.
//!
//! `hub:<owner>/<name>` names any repository, `hub:<owner>/<name>/<config>` one of its
//! configurations (a folder of shards), and `hub:cifar10`, `hub:cifar100`, `hub:svhn`,
//! `hub:stl10` the presets below. A split's files are the `*.parquet` files whose name
//! starts with the split (`train-00000-of-00001.parquet`) or that sit in a folder named
//! after it (`default/train/0000.parquet`); the test split falls back to `validation`.

use std::path::{Path, PathBuf};

use crate::parquet_images::{self, Columns};
use crate::{Error, ImageSet, Result, Split};

/// A dataset repository and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubDataset {
    /// `owner/name` on the Hub.
    pub repo: String,
    /// Only shards under a folder of this name (a configuration), if set.
    pub config: Option<String>,
    /// Columns to read.
    pub columns: Columns,
    /// Number of classes, if known (else the largest label + 1).
    pub classes: Option<usize>,
    /// The local dataset whose recipe (augmentation, normalisation) applies.
    pub recipe: Option<&'static str>,
}

/// The presets: a short name, its repository, configuration, label column and classes.
pub const PRESETS: &[(&str, &str, Option<&str>, &str, usize)] = &[
    ("cifar10", "uoft-cs/cifar10", None, "label", 10),
    ("cifar100", "uoft-cs/cifar100", None, "fine_label", 100),
    (
        "svhn",
        "ufldl-stanford/svhn",
        Some("cropped_digits"),
        "label",
        10,
    ),
    ("stl10", "tanganke/stl10", None, "label", 10),
];

impl HubDataset {
    /// Parses what follows `hub:`: a preset name, `owner/name` or `owner/name/config`.
    pub fn parse(spec: &str) -> Result<Self> {
        if let Some(&(name, repo, config, label, classes)) =
            PRESETS.iter().find(|(name, ..)| *name == spec)
        {
            return Ok(HubDataset {
                repo: repo.to_string(),
                config: config.map(str::to_string),
                columns: Columns {
                    label: Some(label.to_string()),
                    image: None,
                },
                classes: Some(classes),
                recipe: Some(name),
            });
        }
        let parts: Vec<&str> = spec.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            let presets: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
            return Err(Error::UnknownDataset {
                name: format!("hub:{spec}"),
                valid: format!(
                    "hub:<owner>/<name>, hub:<owner>/<name>/<config>, or a preset: hub:{}",
                    presets.join(", hub:")
                ),
            });
        }
        Ok(HubDataset {
            repo: format!("{}/{}", parts[0], parts[1]),
            config: parts.get(2).map(|c| c.to_string()),
            columns: Columns::default(),
            classes: None,
            recipe: None,
        })
    }
}

/// Where to look for files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubOptions {
    /// Use the cache only (also when `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// The hub cache folder (holding `datasets--*`); default `$HF_HOME/hub` or
    /// `~/.cache/huggingface/hub`.
    pub cache: Option<PathBuf>,
    /// Overrides the label column.
    pub label_column: Option<String>,
}

impl HubOptions {
    fn offline(&self) -> bool {
        self.offline
            || std::env::var("HF_HUB_OFFLINE")
                .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
    }

    fn cache(&self) -> PathBuf {
        self.cache
            .clone()
            .unwrap_or_else(|| hf_hub::Cache::from_env().path().clone())
    }
}

/// Loads a split: finds (or downloads) its parquet shards, reads and decodes them.
pub fn load(dataset: &HubDataset, split: Split, options: &HubOptions) -> Result<ImageSet> {
    let files = if options.offline() {
        cached_files(dataset, split, &options.cache())?
    } else {
        download(dataset, split, options)?
    };
    let mut columns = dataset.columns.clone();
    if options.label_column.is_some() {
        columns.label = options.label_column.clone();
    }
    let rows = parquet_images::read_rows(&files, &columns)?;
    parquet_images::decode(&format!("hub:{}", dataset.repo), rows, dataset.classes)
}

/// The cache folder of a dataset repository, as `huggingface_hub` names it.
pub fn repo_folder(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("datasets--{}", repo.replace('/', "--")))
}

/// A split's shards in the cached snapshot of `main`.
pub fn cached_files(dataset: &HubDataset, split: Split, cache: &Path) -> Result<Vec<PathBuf>> {
    let folder = repo_folder(cache, &dataset.repo);
    let reference = folder.join("refs").join("main");
    let sha = std::fs::read_to_string(&reference).map_err(|_| Error::NotCached {
        path: reference.clone(),
        expected: format!(
            "dataset {} in the Hugging Face cache (refs/main naming a snapshot)",
            dataset.repo
        ),
        cache: cache.to_path_buf(),
    })?;
    let snapshot = folder.join("snapshots").join(sha.trim());
    let mut names = Vec::new();
    list_files(&snapshot, &snapshot, &mut names).map_err(|source| Error::Io {
        path: snapshot.clone(),
        source,
    })?;
    let chosen = split_files(&names, split, dataset.config.as_deref()).map_err(|problem| {
        Error::NotCached {
            path: snapshot.clone(),
            expected: format!("{problem} in the cached snapshot of {}", dataset.repo),
            cache: cache.to_path_buf(),
        }
    })?;
    Ok(chosen.iter().map(|name| snapshot.join(name)).collect())
}

fn list_files(root: &Path, dir: &Path, names: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            list_files(root, &path, names)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            let parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            names.push(parts.join("/"));
        }
    }
    Ok(())
}

fn download(dataset: &HubDataset, split: Split, options: &HubOptions) -> Result<Vec<PathBuf>> {
    let failed = |what: String, e: hf_hub::api::sync::ApiError| Error::Download {
        what,
        reason: e.to_string(),
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_cache_dir(options.cache())
        .build()
        .map_err(|e| failed("the Hugging Face Hub client".into(), e))?;
    let repo = api.dataset(dataset.repo.clone());
    let info = repo
        .info()
        .map_err(|e| failed(format!("the file list of dataset {}", dataset.repo), e))?;
    let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let chosen = split_files(&names, split, dataset.config.as_deref()).map_err(|problem| {
        Error::MissingFile {
            path: PathBuf::from(format!("https://huggingface.co/datasets/{}", dataset.repo)),
            expected: problem,
            hint: "name a configuration (hub:<owner>/<name>/<config>) or another dataset"
                .to_string(),
        }
    })?;
    chosen
        .iter()
        .map(|name| {
            repo.get(name)
                .map_err(|e| failed(format!("{name} of dataset {}", dataset.repo), e))
        })
        .collect()
}

/// Chooses a split's parquet files among a repository's file names (`/`-separated).
/// Errors say what was looked for and what there is.
pub fn split_files(
    names: &[String],
    split: Split,
    config: Option<&str>,
) -> std::result::Result<Vec<String>, String> {
    let parquet: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".parquet"))
        .filter(|n| config.is_none_or(|c| n.split('/').any(|part| part == c)))
        .collect();
    let candidates: &[&str] = match split {
        Split::Train => &["train"],
        Split::Test => &["test", "validation", "valid", "val"],
    };
    for wanted in candidates {
        let mut chosen: Vec<String> = parquet
            .iter()
            .filter(|n| {
                let parts: Vec<&str> = n.split('/').collect();
                let (file, folders) = parts.split_last().expect("split yields one part");
                folders.contains(wanted)
                    || file.strip_prefix(wanted).is_some_and(|rest| {
                        rest.starts_with('-') || rest.starts_with('.') || rest.starts_with('_')
                    })
            })
            .map(|n| n.to_string())
            .collect();
        if chosen.is_empty() {
            continue;
        }
        chosen.sort();
        // Shards of several configurations would mix datasets: ask for one.
        let mut folders: Vec<&str> = chosen
            .iter()
            .map(|n| {
                let top = n.split('/').next().unwrap_or("");
                if n.contains('/') {
                    top
                } else {
                    ""
                }
            })
            .collect();
        folders.dedup();
        if folders.len() > 1 && config.is_none() {
            return Err(format!(
                "one configuration: the {split} shards lie in several ({}); name one as \
                 hub:<owner>/<name>/<config>",
                folders.join(", ")
            ));
        }
        return Ok(chosen);
    }
    let seen: Vec<&str> = parquet.iter().map(|s| s.as_str()).collect();
    Err(format!(
        "parquet files of the {split} split ({}*.parquet or {}/*.parquet{}); found: [{}]",
        candidates[0],
        candidates[0],
        config.map(|c| format!(" under {c}/")).unwrap_or_default(),
        seen.join(", ")
    ))
}
