//! Datasets from the Hugging Face Hub: parquet shards of a dataset repository, fetched with
//! `hf-hub` into the standard cache or, offline, read from it alone. The cache, the token
//! and offline mode come from the environment as `huggingface_hub` reads it:
//! `HF_HUB_CACHE` (else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), `HF_TOKEN` (else
//! the file at `HF_TOKEN_PATH`, else `$HF_HOME/token`), `HF_HUB_OFFLINE`.
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
        self.cache.clone().unwrap_or_else(default_cache)
    }
}

/// The hub cache `huggingface_hub` uses: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn default_cache() -> PathBuf {
    cache_from(&|name| std::env::var(name).ok(), home())
}

/// The token `huggingface_hub` sends: `HF_TOKEN`, else the file at `HF_TOKEN_PATH`, else
/// `$HF_HOME/token` (`~/.cache/huggingface/token`); `None` when none is set.
pub fn token() -> Option<String> {
    token_from(&|name| std::env::var(name).ok(), home(), &|path| {
        std::fs::read_to_string(path).ok()
    })
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// `$HF_HOME`, else `~/.cache/huggingface`.
fn hf_home(env: &dyn Fn(&str) -> Option<String>, home: Option<PathBuf>) -> PathBuf {
    match env("HF_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => home.unwrap_or_default().join(".cache").join("huggingface"),
    }
}

fn cache_from(env: &dyn Fn(&str) -> Option<String>, home: Option<PathBuf>) -> PathBuf {
    // HUGGINGFACE_HUB_CACHE is the older name, still read by huggingface_hub.
    match env("HF_HUB_CACHE")
        .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
        .filter(|v| !v.is_empty())
    {
        Some(dir) => PathBuf::from(dir),
        None => hf_home(env, home).join("hub"),
    }
}

fn token_from(
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<PathBuf>,
    read: &dyn Fn(&Path) -> Option<String>,
) -> Option<String> {
    let usable = |t: String| Some(t.trim().to_string()).filter(|t| !t.is_empty());
    if let Some(token) = env("HF_TOKEN").and_then(usable) {
        return Some(token);
    }
    let file = match env("HF_TOKEN_PATH").filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => hf_home(env, home).join("token"),
    };
    read(&file).and_then(usable)
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
        .with_token(token())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn the_cache_is_found_as_huggingface_hub_finds_it() {
        let home = Some(PathBuf::from("/home/u"));
        let at = |vars: &[(&str, &str)]| cache_from(&env(vars), home.clone());
        assert_eq!(at(&[]), Path::new("/home/u/.cache/huggingface/hub"));
        assert_eq!(at(&[("HF_HOME", "/data/hf")]), Path::new("/data/hf/hub"));
        assert_eq!(
            at(&[("HF_HOME", "/data/hf"), ("HF_HUB_CACHE", "/fast/hub")]),
            Path::new("/fast/hub")
        );
        assert_eq!(
            at(&[("HUGGINGFACE_HUB_CACHE", "/old/hub")]),
            Path::new("/old/hub")
        );
        assert_eq!(
            at(&[("HF_HUB_CACHE", "/new"), ("HUGGINGFACE_HUB_CACHE", "/old")]),
            Path::new("/new")
        );
        // Set but empty counts as unset, as in huggingface_hub.
        assert_eq!(
            at(&[("HF_HUB_CACHE", ""), ("HF_HOME", "")]),
            Path::new("/home/u/.cache/huggingface/hub")
        );
    }

    #[test]
    fn the_token_is_found_as_huggingface_hub_finds_it() {
        let home = Some(PathBuf::from("/home/u"));
        let files = |path: &Path| match path.to_str() {
            Some("/home/u/.cache/huggingface/token") => Some("hf_file\n".to_string()),
            Some("/data/hf/token") => Some("hf_home_file".to_string()),
            Some("/secrets/t") => Some("  hf_path  \n".to_string()),
            _ => None,
        };
        let token = |vars: &[(&str, &str)]| token_from(&env(vars), home.clone(), &files);
        assert_eq!(token(&[]).as_deref(), Some("hf_file"));
        assert_eq!(
            token(&[("HF_HOME", "/data/hf")]).as_deref(),
            Some("hf_home_file")
        );
        assert_eq!(
            token(&[("HF_TOKEN_PATH", "/secrets/t")]).as_deref(),
            Some("hf_path")
        );
        assert_eq!(
            token(&[("HF_TOKEN", "hf_env"), ("HF_TOKEN_PATH", "/secrets/t")]).as_deref(),
            Some("hf_env")
        );
        // An empty HF_TOKEN falls through to the file; no file, no token.
        assert_eq!(token(&[("HF_TOKEN", " ")]).as_deref(), Some("hf_file"));
        assert_eq!(token(&[("HF_HOME", "/nowhere")]), None);
    }
}
