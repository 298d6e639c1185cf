//! Cutting the plan's modules into contiguous pipeline stages of balanced cost.
//!
//! A module's cost is measured ([`measured_costs`]: the seconds of its forward pass, loss
//! and backward pass on a batch, as a short timing pass before training), or counted
//! ([`module_costs`]: its multiply-adds per image plus a fixed cost per layer call). A run
//! measures on one rank and tells the others, so every rank cuts the same stages.

use std::ops::Range;

use serde::Serialize;

use std::time::Instant;

use candle_core::Tensor;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::flops::StepFlops;
use crate::params::Role;

/// The cost of one layer call in multiply-adds per image, beside its own multiply-adds: a
/// rough allowance for a layer's fixed work (its BatchNorm and ReLU passes, the framework's
/// per-op work), an estimate rather than a measurement. Runs of several processes time
/// their modules instead ([`measured_costs`]); the counted costs serve `auglocal inspect`.
pub const LAYER_OVERHEAD_MACS: f64 = 2.0e5;

/// The cost of each module of a step, per image.
pub fn module_costs(flops: &StepFlops) -> Vec<f64> {
    flops
        .modules
        .iter()
        .map(|m| {
            let macs = m.units.total() + m.loss.total();
            let calls = m.units.layers + m.loss.layers;
            macs as f64 + LAYER_OVERHEAD_MACS * calls as f64
        })
        .collect()
}

/// Each module's median seconds for its forward pass, loss and backward pass on `images`
/// and `labels` over `repeats` timed passes (after one untimed), with no update. BatchNorm's
/// running statistics are restored afterwards, so the engine is left as it was.
pub fn measured_costs(
    engine: &Engine,
    images: &Tensor,
    labels: &Tensor,
    repeats: usize,
) -> Result<Vec<f64>> {
    let buffers: Vec<(candle_core::Var, Tensor)> = engine
        .store()
        .entries()
        .iter()
        .filter(|e| e.role == Role::Buffer)
        .map(|e| Ok((e.var.clone(), e.var.as_tensor().copy()?)))
        .collect::<candle_core::Result<_>>()?;
    let k = engine.module_count();
    let mut seconds = vec![Vec::with_capacity(repeats); k];
    for pass in 0..=repeats.max(1) {
        let mut x = images.clone();
        for (m, times) in seconds.iter_mut().enumerate() {
            let started = Instant::now();
            let h = engine.module_forward(m, &x)?;
            let (loss, _) = engine.module_loss(m, &h, labels, images)?;
            loss.backward()?;
            engine.device().synchronize()?;
            if pass > 0 {
                times.push(started.elapsed().as_secs_f64());
            }
            x = h.detach();
        }
    }
    for (var, saved) in buffers {
        var.set(&saved)?;
    }
    Ok(seconds
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect())
}

/// How the modules are cut into stages, and what each stage is predicted to cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Partition {
    /// The modules of each stage, in order; together every module once.
    pub stages: Vec<Range<usize>>,
    /// Each stage's cost (the sum of its modules').
    pub costs: Vec<f64>,
}

impl Partition {
    /// Cuts `costs` (one per module, in order) into `stages` contiguous non-empty ranges
    /// whose largest total is as small as it can be.
    pub fn balanced(costs: &[f64], stages: usize) -> Result<Self> {
        let k = costs.len();
        if stages == 0 || stages > k {
            return Err(Error::InvalidSetting {
                setting: "pipeline stages",
                value: stages.to_string(),
                valid: format!("1..={k}: at least one module a stage ({k} modules)"),
            });
        }
        let mut prefix = vec![0.0; k + 1];
        for (i, c) in costs.iter().enumerate() {
            prefix[i + 1] = prefix[i] + c;
        }
        let span = |a: usize, b: usize| prefix[b] - prefix[a];
        // best[s][j]: the least largest stage total cutting modules 0..j into s stages.
        let mut best = vec![vec![f64::INFINITY; k + 1]; stages + 1];
        let mut cut = vec![vec![0usize; k + 1]; stages + 1];
        best[0][0] = 0.0;
        for s in 1..=stages {
            for j in s..=k {
                for i in s - 1..j {
                    let v = best[s - 1][i].max(span(i, j));
                    // Ties go to the later cut, so earlier stages take fewer modules.
                    if v <= best[s][j] {
                        best[s][j] = v;
                        cut[s][j] = i;
                    }
                }
            }
        }
        let mut ranges = Vec::with_capacity(stages);
        let mut end = k;
        for s in (1..=stages).rev() {
            let start = cut[s][end];
            ranges.push(start..end);
            end = start;
        }
        ranges.reverse();
        let costs = ranges.iter().map(|r| span(r.start, r.end)).collect();
        Ok(Partition {
            stages: ranges,
            costs,
        })
    }

    /// Each stage's share of the busiest stage's cost: the predicted fraction of time it
    /// computes when the pipeline runs at the busiest stage's pace.
    pub fn busy_shares(&self) -> Vec<f64> {
        let max = self.costs.iter().copied().fold(0.0, f64::max);
        self.costs
            .iter()
            .map(|c| c / max.max(f64::MIN_POSITIVE))
            .collect()
    }

    /// The stage holding module `module`.
    pub fn stage_of(&self, module: usize) -> Option<usize> {
        self.stages.iter().position(|r| r.contains(&module))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_cuts_by_hand() {
        // 1 2 3 4 5 6 into 3: [1 2 3 4] 10, [5] 5, [6] 6? No: the best largest is 9 with
        // [1 2 3] 6, [4 5] 9, [6] 6.
        let p = Partition::balanced(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3).unwrap();
        assert_eq!(p.stages, vec![0..3, 3..5, 5..6]);
        assert_eq!(p.costs, vec![6.0, 9.0, 6.0]);
        assert_eq!(p.busy_shares(), vec![6.0 / 9.0, 1.0, 6.0 / 9.0]);
        // One stage: everything; as many stages as modules: one each.
        assert_eq!(
            Partition::balanced(&[1.0, 1.0], 1).unwrap().stages,
            vec![0..2]
        );
        assert_eq!(
            Partition::balanced(&[5.0, 1.0, 1.0], 3).unwrap().stages,
            vec![0..1, 1..2, 2..3]
        );
        // Equal costs split evenly.
        let even = Partition::balanced(&[1.0; 8], 4).unwrap();
        assert_eq!(even.stages, vec![0..2, 2..4, 4..6, 6..8]);
        assert_eq!(
            Partition::balanced(&[1.0; 3], 4).unwrap_err().to_string(),
            "invalid pipeline stages: 4 (valid: 1..=3: at least one module a stage (3 modules))"
        );
    }
}
