//! Hugging Face Hub datasets from a cache built by hand in the real layout
//! (`datasets--owner--name/{refs/main, blobs/, snapshots/<sha>/...}`), with parquet files
//! written by the parquet crate as `datasets` writes them. No network: offline mode.

use std::path::{Path, PathBuf};

use auglocal_data::fixtures::{self, encode, write_image_parquet as write_parquet};
use auglocal_data::hub::{self, HubDataset, HubOptions};
use auglocal_data::{open_with, OpenOptions, Split};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// A recognisable RGB value for (image id, x, y).
fn rgb(id: usize, x: usize, y: usize) -> [u8; 3] {
    [(id * 30 + x) as u8, (y * 20 + 3) as u8, (200 - id) as u8]
}

fn png(id: usize, width: usize, height: usize) -> Vec<u8> {
    encode(width, height, image::ImageFormat::Png, |x, y| rgb(id, x, y))
}

fn repo(cache: &Path, name: &str) -> std::io::Result<PathBuf> {
    fixtures::hub_snapshot(cache, name, SHA)
}

fn offline(cache: &Path) -> OpenOptions {
    OpenOptions {
        hub: HubOptions {
            offline: true,
            cache: Some(cache.to_path_buf()),
            label_column: None,
        },
        ..Default::default()
    }
}

#[test]
fn a_cifar10_preset_reads_from_the_cache() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let snapshot = repo(cache.path(), "uoft-cs/cifar10")?;
    let train: Vec<Vec<u8>> = (0..3).map(|i| png(i, 5, 4)).collect();
    write_parquet(
        &snapshot.join("plain_text/train-00000-of-00001.parquet"),
        "img",
        &train,
        &[("label", vec![9, 0, 4])],
    )?;
    fixtures::hub_blob(&snapshot, "plain_text/train-00000-of-00001.parquet")?;
    write_parquet(
        &snapshot.join("plain_text/test-00000-of-00001.parquet"),
        "img",
        &[png(7, 5, 4)],
        &[("label", vec![2])],
    )?;

    let opened = open_with("hub:cifar10", Split::Train, &offline(cache.path()))?;
    let data = opened.data;
    assert_eq!(data.name(), "hub:uoft-cs/cifar10");
    assert_eq!(
        (data.len(), data.classes(), data.shape()),
        (3, 10, (3, 4, 5))
    );
    assert_eq!(
        (0..3).map(|i| data.label(i)).collect::<Vec<_>>(),
        vec![9, 0, 4]
    );
    // Pixels through the loader path with unit normalisation: (image 1, channel c, y 3, x 2).
    let unit = auglocal_data::Normalize {
        mean: [0.0; 3],
        std: [1.0 / 255.0; 3],
    };
    let mut out = vec![0.0; 60];
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    data.load(1, auglocal_data::Augment::None, &unit, &mut rng, &mut out)?;
    for c in 0..3 {
        assert_eq!(out[c * 20 + 3 * 5 + 2].round() as u8, rgb(1, 2, 3)[c]);
    }
    let test = open_with("hub:cifar10", Split::Test, &offline(cache.path()))?.data;
    assert_eq!((test.len(), test.label(0)), (1, 2));
    Ok(())
}

#[test]
fn label_columns_by_preset_by_name_or_by_override() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    for name in ["uoft-cs/cifar100", "someone/hundred"] {
        let snapshot = repo(cache.path(), name)?;
        write_parquet(
            &snapshot.join("cifar100/train-00000-of-00001.parquet"),
            "img",
            &[png(0, 2, 2), png(1, 2, 2)],
            &[("fine_label", vec![99, 5]), ("coarse_label", vec![19, 1])],
        )?;
    }
    let fine = open_with("hub:cifar100", Split::Train, &offline(cache.path()))?.data;
    assert_eq!((fine.classes(), fine.label(0), fine.label(1)), (100, 99, 5));

    let message = open_with("hub:someone/hundred", Split::Train, &offline(cache.path()))
        .unwrap_err()
        .to_string();
    let file = hub::repo_folder(cache.path(), "someone/hundred")
        .join("snapshots")
        .join(SHA)
        .join("cifar100/train-00000-of-00001.parquet");
    assert_eq!(
        message,
        format!(
            "{}: cannot tell the label column: integer columns are [fine_label, coarse_label]; \
             expected an image column (struct with `bytes`) and an integer label column, as \
             Hugging Face `datasets` writes them; name the label column",
            file.display()
        )
    );
    let mut options = offline(cache.path());
    options.hub.label_column = Some("coarse_label".into());
    let coarse = open_with("hub:someone/hundred", Split::Train, &options)?.data;
    // Without a preset the classes are the largest label + 1.
    assert_eq!((coarse.classes(), coarse.label(0)), (20, 19));
    Ok(())
}

#[test]
fn configurations_must_be_chosen_when_there_are_several() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let snapshot = repo(cache.path(), "ufldl-stanford/svhn")?;
    for (config, side) in [("cropped_digits", 3), ("full_numbers", 6)] {
        for split in ["train", "test", "extra"] {
            write_parquet(
                &snapshot.join(format!("{config}/{split}-00000-of-00001.parquet")),
                "image",
                &[png(1, side, side)],
                &[("label", vec![3])],
            )?;
        }
    }
    let preset = open_with("hub:svhn", Split::Train, &offline(cache.path()))?.data;
    assert_eq!((preset.shape(), preset.len()), ((3, 3, 3), 1));
    let message = open_with(
        "hub:ufldl-stanford/svhn",
        Split::Test,
        &offline(cache.path()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains(
            "expected one configuration: the test shards lie in several (cropped_digits, \
             full_numbers); name one as hub:<owner>/<name>/<config>"
        ),
        "{message}"
    );
    let chosen = open_with(
        "hub:ufldl-stanford/svhn/full_numbers",
        Split::Test,
        &offline(cache.path()),
    )?
    .data;
    assert_eq!(chosen.shape(), (3, 6, 6));
    Ok(())
}

#[test]
fn offline_misses_say_what_is_missing() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let message = open_with("hub:stl10", Split::Train, &offline(cache.path()))
        .unwrap_err()
        .to_string();
    let reference = hub::repo_folder(cache.path(), "tanganke/stl10").join("refs/main");
    assert_eq!(
        message,
        format!(
            "{} not found: expected dataset tanganke/stl10 in the Hugging Face cache (refs/main \
             naming a snapshot); offline mode is on and the Hugging Face cache {} does not \
             hold it (HF_HUB_CACHE names another cache, or HF_HOME the folder whose hub/ is one)",
            reference.display(),
            cache.path().display()
        )
    );

    let snapshot = repo(cache.path(), "tanganke/stl10")?;
    write_parquet(
        &snapshot.join("data/train-00000-of-00001.parquet"),
        "image",
        &[png(0, 2, 2)],
        &[("label", vec![1])],
    )?;
    let message = open_with("hub:stl10", Split::Test, &offline(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(
            "expected parquet files of the test split (test*.parquet or test/*.parquet); found: \
             [data/train-00000-of-00001.parquet] in the cached snapshot of tanganke/stl10"
        ),
        "{message}"
    );
    Ok(())
}

#[test]
fn hf_hub_offline_in_the_environment_keeps_off_the_network() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    // Only this test sets the variable; every other test here is offline anyway.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let options = OpenOptions {
        hub: HubOptions {
            offline: false,
            cache: Some(cache.path().to_path_buf()),
            label_column: None,
        },
        ..Default::default()
    };
    let message = open_with("hub:owner/never-downloaded", Split::Train, &options)
        .unwrap_err()
        .to_string();
    std::env::remove_var("HF_HUB_OFFLINE");
    assert!(
        message.contains("expected dataset owner/never-downloaded in the Hugging Face cache"),
        "{message}"
    );
    Ok(())
}

#[test]
fn bad_rows_name_the_file_and_row() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let snapshot = repo(cache.path(), "uoft-cs/cifar10")?;
    let file = snapshot.join("plain_text/train-00000-of-00001.parquet");
    write_parquet(
        &file,
        "img",
        &[png(0, 2, 2), png(1, 2, 2)],
        &[("label", vec![3, 10])],
    )?;
    assert_eq!(
        open_with("hub:cifar10", Split::Train, &offline(cache.path()))
            .unwrap_err()
            .to_string(),
        format!(
            "{}: row 1 has label 10; expected labels in 0..10",
            file.display()
        )
    );
    write_parquet(
        &file,
        "img",
        &[png(0, 2, 2), png(1, 3, 2)],
        &[("label", vec![3, 4])],
    )?;
    let message = open_with("hub:cifar10", Split::Train, &offline(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("row 1 is 2x3 but the first image is 2x2"),
        "{message}"
    );
    write_parquet(
        &file,
        "img",
        &[b"not a png".to_vec()],
        &[("label", vec![3])],
    )?;
    let message = open_with("hub:cifar10", Split::Train, &offline(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with(&format!(
            "{}: row 0: the image does not decode",
            file.display()
        )),
        "{message}"
    );
    std::fs::write(&file, b"PAR1 but not really")?;
    let message = open_with("hub:cifar10", Split::Train, &offline(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with(&format!("{}: not a readable parquet file", file.display())),
        "{message}"
    );
    Ok(())
}

#[test]
fn split_files_follow_both_hub_layouts() {
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let converted = names(&[
        "default/train/0000.parquet",
        "default/train/0001.parquet",
        "default/validation/0000.parquet",
        "README.md",
    ]);
    assert_eq!(
        hub::split_files(&converted, Split::Train, None),
        Ok(names(&[
            "default/train/0000.parquet",
            "default/train/0001.parquet"
        ]))
    );
    assert_eq!(
        hub::split_files(&converted, Split::Test, None),
        Ok(names(&["default/validation/0000.parquet"]))
    );
    let shards = names(&[
        "data/train-00001-of-00002.parquet",
        "data/train-00000-of-00002.parquet",
        "data/trainval-00000-of-00001.parquet",
        "data/test-00000-of-00001.parquet",
    ]);
    assert_eq!(
        hub::split_files(&shards, Split::Train, None),
        Ok(names(&[
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet"
        ]))
    );
    assert_eq!(
        HubDataset::parse("owner/name/config")
            .map(|d| (d.repo, d.config))
            .ok(),
        Some(("owner/name".to_string(), Some("config".to_string())))
    );
}
