//! The README's first command, as a newcomer runs it (`auglocal train --out DIR`, nothing
//! else): AugLocal and BP each end above 70% test accuracy on the embedded data, and test
//! accuracy rises every epoch. Alone in its binary: the two runs take about 3 minutes on 2
//! cores.

mod common;

use common::{auglocal, metrics, path_str};

#[test]
fn the_quick_start_learns_and_improves_every_epoch() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    for method in ["auglocal", "bp"] {
        let run = tmp.path().join(method);
        auglocal(&["train", "--out", path_str(&run), "--method", method])?;
        let epochs = metrics(&run)?;
        let accuracy: Vec<f64> = epochs
            .iter()
            .map(|m| m["test_acc"].as_f64().unwrap())
            .collect();
        assert_eq!(accuracy.len(), 6, "{method}: the recipe's 6 epochs");
        assert!(
            accuracy.windows(2).all(|w| w[1] > w[0]),
            "{method}: test accuracy {accuracy:?} does not rise every epoch"
        );
        let last = accuracy[5];
        assert!(last >= 0.70, "{method}: final test accuracy {last}");
        assert_eq!(
            epochs[0]["steps"],
            4096 / 64,
            "{method}: 4096 images, batch 64"
        );
    }
    Ok(())
}
