//! The README's library example (`examples/library.rs`) trains, checkpoints and resumes:
//! two epochs in one go and one epoch, then a resumed second, end bit for bit the same.

mod common;
use common::metrics_without_timings;

#[allow(dead_code)]
#[path = "../examples/library.rs"]
mod library;

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
    assert_eq!(
        metrics_without_timings(&straight)?,
        metrics_without_timings(&stopped)?
    );
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
