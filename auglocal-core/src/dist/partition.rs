//! Cutting the plan's modules into contiguous pipeline stages of balanced cost.
//!
//! A module's cost is its multiply-adds per image for a training step (its units and its
//! loss, forward and backward: [`crate::flops::step_flops`]) plus a fixed cost per layer
//! call, [`LAYER_OVERHEAD_MACS`], for what does not scale with multiply-adds (BatchNorm and
//! other elementwise passes, the framework's per-op work). Every rank computes the same
//! partition from the same plan, so no rank has to tell the others.

use std::ops::Range;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::flops::StepFlops;

/// The cost of one layer call in multiply-adds per image, beside its own multiply-adds:
/// roughly what a small convolution's fixed work (its BatchNorm, ReLU and launch) costs
/// next to its arithmetic on the CPU kernels. Calibrated on ResNet-110 AugLocal, whose
/// 8x8 auxiliary blocks are many small calls.
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
