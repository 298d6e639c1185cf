//! The README's library example (`examples/library.rs`) trains, checkpoints and resumes:
//! two epochs in one go and one epoch, then a resumed second, end bit for bit the same.

use std::path::Path;

#[allow(dead_code)]
#[path = "../examples/library.rs"]
mod library;

/// The run's metrics lines without the timing fields (seconds, rates, memory).
fn metrics(run: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl"))?;
    text.lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line)?;
            let map = v.as_object_mut().expect("a metrics line is an object");
            for timing in [
                "seconds",
                "images_per_second",
                "peak_rss_bytes",
                "data_wait_seconds",
            ] {
                map.remove(timing);
            }
            Ok(v)
        })
        .collect()
}

#[test]
fn the_library_example_resumes_exactly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (straight, stopped) = (dir.path().join("straight"), dir.path().join("stopped"));
    let whole = library::train(&straight, 2)?;
    assert_eq!(whole.epochs.len(), 2);
    assert_eq!(library::train(&stopped, 1)?.epochs.len(), 1);
    let resumed = library::train(&stopped, 2)?;
    assert_eq!(
        resumed.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        [2]
    );
    // A third call has nothing left to do.
    assert!(library::train(&stopped, 2)?.epochs.is_empty());
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(straight.join("checkpoint").join(file))?;
        let b = std::fs::read(stopped.join("checkpoint").join(file))?;
        assert!(a == b, "{file} differs after the resume");
    }
    assert_eq!(metrics(&straight)?, metrics(&stopped)?);
    let (a, b) = (&whole.epochs[1], &resumed.epochs[0]);
    assert_eq!(
        (a.epoch, a.lr, a.steps, a.eval),
        (b.epoch, b.lr, b.steps, b.eval)
    );
    let sums = |e: &auglocal_core::trainer::EpochRecord| {
        (e.train.loss_sum, e.train.correct, e.train.images)
    };
    assert_eq!(sums(a), sums(b));
    assert_eq!(a.train.images, 512);
    Ok(())
}
