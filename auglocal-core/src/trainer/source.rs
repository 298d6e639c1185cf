//! Where batches come from: a [`BatchSource`] the caller implements (auglocal-data's
//! `Loader` does), and evaluation over one.

use candle_core::Tensor;

use crate::engine::{Engine, EvalTotals};
use crate::error::Result;

/// One batch: images (N, C, H, W) f32 as the network takes them, labels (N) u32.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The images, (N, C, H, W) f32, normalised as the network takes them.
    pub images: Tensor,
    /// Class index of each image, (N) u32.
    pub labels: Tensor,
    /// Images of the whole batch when this is one replica's shard of it (data-parallel
    /// training weights each shard's gradients by its share); `N` otherwise.
    pub global_images: usize,
}

/// Batches, epoch by epoch.
///
/// For an exact resume, batch `t` of epoch `e` must be the same whether the epoch started
/// at batch 0 or at `t`: a pure function of (seed, epoch, batch index), as auglocal-data's
/// loader makes it.
pub trait BatchSource {
    /// Batches in one epoch.
    fn batches_per_epoch(&self) -> usize;

    /// The batches of epoch `epoch` (counted from 1) from batch `start` on.
    fn batches(&self, epoch: usize, start: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_>;
}

/// Backbone-only inference over one pass of `source` (epoch 1, every batch): summed loss and
/// correct predictions. Auxiliary networks are not run.
pub fn evaluate(engine: &Engine, source: &dyn BatchSource) -> Result<EvalTotals> {
    let mut totals = EvalTotals::default();
    for batch in source.batches(1, 0) {
        let batch = batch?;
        totals.add(engine.eval_batch(&batch.images, &batch.labels)?);
    }
    Ok(totals)
}
