//! Analyses of trained backbones: layer-wise linear probing ([`probe`]) and linear CKA
//! between the units of two networks ([`cka`]). Both start from each unit's output on a set
//! of images, extracted by [`unit_features`] with the backbone frozen in inference mode.

pub mod cka;
pub mod probe;

pub use cka::{linear_cka, Gram};
pub use probe::RidgeProbe;

use candle_core::Tensor;

use crate::net::LocalNet;
use crate::nn::global_avg_pool;

/// How a unit's output (N, C, H, W) becomes one feature vector per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Features {
    /// Global average pooling: (N, C).
    Pooled,
    /// Every value: (N, C * H * W).
    Flattened,
}

/// The output of every unit of `net` for `images`, in inference mode (BatchNorm with running
/// statistics), as (N, D) f32 tensors in unit order, detached from any graph.
pub fn unit_features(
    net: &dyn LocalNet,
    images: &Tensor,
    features: Features,
) -> candle_core::Result<Vec<Tensor>> {
    let mut h = images.detach();
    let mut out = Vec::with_capacity(net.units().len());
    for unit in 0..net.units().len() {
        h = net.forward_unit(unit, &h, false)?.detach();
        out.push(match features {
            Features::Pooled => global_avg_pool(&h)?,
            Features::Flattened => h.flatten_from(1)?,
        });
    }
    Ok(out)
}
