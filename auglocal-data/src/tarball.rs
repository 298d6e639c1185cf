//! Datasets still packed as they were downloaded: members read straight from a `.tar.gz`,
//! and for the readers that do not read archives, the command that unpacks one.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Largest member kept in memory (CIFAR-100's `train` is 155 MiB): a bigger one is not a
/// dataset file and would only exhaust memory.
const MAX_MEMBER: u64 = 1 << 30;

/// Reads the members named `names` (paths inside the archive, `./` ignored) from the gzip
/// compressed tar file at `path`, in the order of `names`. One pass over the archive.
pub(crate) fn read_members(path: &Path, names: &[String]) -> Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |problem: String| Error::BadFile {
        path: path.to_path_buf(),
        problem,
        expected: format!(
            "the archive as downloaded, holding {}; download it again (`tar -tzf {}` shows what \
             it holds)",
            names.join(", "),
            path.display()
        ),
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut found: Vec<Option<Vec<u8>>> = vec![None; names.len()];
    let entries = archive
        .entries()
        .map_err(|error| bad(format!("cannot be unpacked: {error}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|error| bad(format!("cannot be unpacked: {error}")))?;
        let member = entry
            .path()
            .map_err(|error| bad(format!("has a member with an unreadable name: {error}")))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let Some(slot) = names.iter().position(|name| *name == member) else {
            continue;
        };
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > MAX_MEMBER {
            return Err(bad(format!("member {member} claims {size} bytes")));
        }
        // The header's size is only a claim: reserve at most 64 MiB up front.
        let mut bytes = Vec::with_capacity(size.min(64 << 20) as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|error| bad(format!("cannot be unpacked at {member}: {error}")))?;
        found[slot] = Some(bytes);
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    names
        .iter()
        .zip(found)
        .map(|(name, bytes)| bytes.ok_or_else(|| bad(format!("has no member {name}"))))
        .collect()
}

/// Archives lying in `dir` (`.tar.gz`, `.tgz`, `.tar`, `.zip`), sorted: what a user who
/// downloaded but did not unpack has there.
pub fn packed_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut packed: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase());
            let name = name.unwrap_or_default();
            path.is_file()
                && [".tar.gz", ".tgz", ".tar", ".zip"]
                    .iter()
                    .any(|ext| name.ends_with(ext))
        })
        .collect();
    packed.sort();
    packed
}

/// `"; ARCHIVE is still packed: unpack it with `COMMAND`"`, one clause per archive in
/// `dir`, or nothing.
pub fn unpack_hint(dir: &Path) -> String {
    packed_in(dir)
        .iter()
        .map(|archive| {
            let command = if archive.extension().is_some_and(|ext| ext == "zip") {
                format!("unzip {} -d {}", quoted(archive), quoted(dir))
            } else {
                format!("tar -xf {} -C {}", quoted(archive), quoted(dir))
            };
            format!(
                "; {} is still packed: unpack it with `{command}`",
                archive.display()
            )
        })
        .collect()
}

/// A path as a shell word: bare when it is plain, in single quotes otherwise.
fn quoted(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::write_tar_gz;

    #[test]
    fn reads_members_in_the_order_asked() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.tar.gz");
        write_tar_gz(
            &path,
            &[("top/one", b"1"), ("./top/two", b"22"), ("other", b"x")],
        )?;
        let names = ["top/two".to_string(), "top/one".to_string()];
        assert_eq!(
            read_members(&path, &names)?,
            vec![b"22".to_vec(), b"1".to_vec()]
        );

        let error = read_members(&path, &["top/three".to_string()]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("has no member top/three"), "{message}");
        assert!(message.contains("tar -tzf"), "{message}");

        // Cut in the middle of the compressed stream.
        let bytes = std::fs::read(&path)?;
        std::fs::write(&path, &bytes[..bytes.len() / 2])?;
        let message = read_members(&path, &names).unwrap_err().to_string();
        assert!(message.contains("cannot be unpacked"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        Ok(())
    }

    #[test]
    fn names_each_archive_with_its_unpack_command() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(unpack_hint(dir.path()), "");
        std::fs::write(dir.path().join("stl10_binary.tar.gz"), b"")?;
        std::fs::write(dir.path().join("my data.zip"), b"")?;
        std::fs::write(dir.path().join("notes.txt"), b"")?;
        let d = dir.path().display();
        assert_eq!(
            unpack_hint(dir.path()),
            format!(
                "; {d}/my data.zip is still packed: unpack it with `unzip '{d}/my data.zip' -d \
                 {d}`; {d}/stl10_binary.tar.gz is still packed: unpack it with `tar -xf \
                 {d}/stl10_binary.tar.gz -C {d}`"
            )
        );
        Ok(())
    }
}
