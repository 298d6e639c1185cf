//! Loader throughput: images/s for decoding, augmenting and batching JPEGs of CIFAR size
//! (32x32) and ImageNet size (500x375 -> random-resized-crop 224), generated in a temporary
//! folder.
//!
//! `cargo run --release -p auglocal-data --example loader_bench -- [IMAGES] [THREADS]`

use std::sync::Arc;
use std::time::Instant;

use auglocal_data::{fixtures, Augment, FolderConfig, ImageFolder, Loader, LoaderConfig, Split};
use candle_core::Device;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let images: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(512);
    let threads: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(0);
    for (label, width, height, size) in [
        ("CIFAR-size 32x32 JPEG", 32, 32, 32),
        ("ImageNet-size 500x375 JPEG -> 224", 500, 375, 224),
    ] {
        let root = tempfile::tempdir()?;
        for i in 0..images {
            let class = format!("class{}", i % 10);
            let dir = root.path().join("train").join(&class);
            std::fs::create_dir_all(&dir)?;
            // Smooth gradients with some texture, so JPEG sizes are realistic.
            let bytes = fixtures::encode(width, height, image::ImageFormat::Jpeg, |x, y| {
                let v = (x * 3 + y * 5 + i * 17) % 256;
                [v as u8, ((x * y) % 251) as u8, (255 - v) as u8]
            });
            std::fs::write(dir.join(format!("{i}.jpg")), bytes)?;
        }
        let config = FolderConfig {
            size,
            resize: size * 256 / 224,
            skip_bad: false,
        };
        let folder = Arc::new(ImageFolder::open(root.path(), Split::Train, config)?);
        let normalize = auglocal_data::spec("imagefolder")?.normalize;
        let loader = Loader::new(
            folder,
            LoaderConfig {
                batch_size: 64,
                shuffle: true,
                augment: Augment::IMAGENET,
                normalize,
                seed: 0,
            },
            Device::Cpu,
        )?
        .with_workers(threads)?;
        // One untimed epoch warms the page cache, then two timed ones.
        loader.epoch(1, 0).try_for_each(|b| b.map(|_| ()))?;
        let started = Instant::now();
        for epoch in 2..=3 {
            loader.epoch(epoch, 0).try_for_each(|b| b.map(|_| ()))?;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{label}: {:.0} images/s ({} images x 2 epochs in {seconds:.2} s, {} threads)",
            2.0 * loader.images() as f64 / seconds,
            loader.images(),
            if threads == 0 {
                rayon::current_num_threads()
            } else {
                threads
            }
        );
    }
    Ok(())
}
