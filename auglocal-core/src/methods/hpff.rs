//! HPFF's patch feature fusion (Su et al., ECCV 2024), as the `+hpff` modifier.
//!
//! The module's output is cut into its 2x2 quadrants, and the method's local loss, built
//! for a quarter of the image ([`Modified`](super::Modified) halves the image side it is
//! built for), runs on them as on four images each: a batch of 4N patches, every label
//! given four times, and each patch's image quadrant where the loss reconstructs the image
//! (InfoPro's decoder then rebuilds each quadrant from its own patch; HPFF's CIFAR code
//! gives each quadrant a decoder of its own and sums their terms, ours shares one decoder
//! and averages). The loss is thus the mean over the patches; the module's prediction (its
//! counted Prec@1 and `eval --aux`) is the mean of the four patches' logits.
//!
//! HPFF's other half, the cascade modules, backpropagates a loss through two adjacent
//! modules, so it does not keep modules gradient-isolated and is not built here.

use candle_core::Tensor;

use super::loss::{LocalLoss, LossSite};
use crate::error::{Error, Result};

/// The 2x2 quadrants of `x` (N, C, H, W) as a batch (4N, C, H/2, W/2): top left, top right,
/// bottom left, bottom right, each N long. H and W must be even.
pub fn quadrants(x: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h % 2 != 0 || w % 2 != 0 || h == 0 || w == 0 {
        candle_core::bail!(
            "patch feature fusion (+hpff) cuts features into 2x2 quadrants and needs an even height and width, got {h}x{w}; choose an image size whose features stay even at every module"
        );
    }
    let (h2, w2) = (h / 2, w / 2);
    let rows = [x.narrow(2, 0, h2)?, x.narrow(2, h2, h2)?];
    let mut parts = Vec::with_capacity(4);
    for row in &rows {
        parts.push(row.narrow(3, 0, w2)?);
        parts.push(row.narrow(3, w2, w2)?);
    }
    Tensor::cat(&parts, 0)
}

/// The mean over the four patches of each image: (4N, ...) laid out as [`quadrants`] lays
/// them, to (N, ...).
pub fn fuse_patches(x: &Tensor) -> candle_core::Result<Tensor> {
    let n = x.dim(0)? / 4;
    let mut dims = x.dims().to_vec();
    dims[0] = n;
    dims.insert(0, 4);
    x.reshape(dims)?.mean(0)
}

/// A method's local loss run on the 2x2 patches of its input (module docs).
pub struct PatchFusion {
    loss: Box<dyn LocalLoss>,
}

impl PatchFusion {
    /// `loss`, built for patches (a site with half the image side), run on patches.
    pub fn new(loss: Box<dyn LocalLoss>) -> Self {
        PatchFusion { loss }
    }

    /// Refuses a site whose features or image cannot be cut in even quadrants.
    pub fn check_site(site: &LossSite<'_>) -> Result<()> {
        let side = site.feature_size()?;
        if !side.is_multiple_of(2) || !site.input.image_size.is_multiple_of(2) {
            return Err(Error::InvalidSetting {
                setting: "image size for +hpff",
                value: format!(
                    "{0}x{0} ({1}x{1} features after unit {2} of {3})",
                    site.input.image_size,
                    side,
                    site.aux.unit,
                    site.net.name()
                ),
                valid: "an image size whose features are even at every local loss, to cut them into 2x2 patches".into(),
            });
        }
        Ok(())
    }
}

fn repeat4(labels: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::cat(&[labels, labels, labels, labels], 0)
}

impl LocalLoss for PatchFusion {
    fn loss(
        &self,
        features: &Tensor,
        labels: &Tensor,
        images: &Tensor,
    ) -> candle_core::Result<Tensor> {
        Ok(self.loss_and_logits(features, labels, images)?.0)
    }

    fn loss_and_logits(
        &self,
        features: &Tensor,
        labels: &Tensor,
        images: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let images = match self.loss.needs_images() {
            true => quadrants(images)?,
            false => images.clone(),
        };
        let (loss, logits) =
            self.loss
                .loss_and_logits(&quadrants(features)?, &repeat4(labels)?, &images)?;
        let logits = match logits {
            Some(logits) => Some(fuse_patches(&logits)?),
            None => None,
        };
        Ok((loss, logits))
    }

    fn eval_logits(&self, features: &Tensor) -> candle_core::Result<Option<Tensor>> {
        match self.loss.eval_logits(&quadrants(features)?)? {
            Some(logits) => Ok(Some(fuse_patches(&logits)?)),
            None => Ok(None),
        }
    }

    fn needs_images(&self) -> bool {
        self.loss.needs_images()
    }

    fn after_update(&self) -> candle_core::Result<()> {
        self.loss.after_update()
    }

    fn after_backbone_loaded(&self) -> candle_core::Result<()> {
        self.loss.after_backbone_loaded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn quadrants_and_fusion_by_hand() -> candle_core::Result<()> {
        // Two images of one channel, 4x4, values 0..16 and 100..116.
        let a: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let b: Vec<f32> = (0..16).map(|v| 100.0 + v as f32).collect();
        let x = Tensor::from_vec([a, b].concat(), (2, 1, 4, 4), &Device::Cpu)?;
        let q = quadrants(&x)?;
        assert_eq!(q.dims(), &[8, 1, 2, 2]);
        let q = q.flatten_from(1)?.to_vec2::<f32>()?;
        // Rows 0..4 of the 4x4 image are 0-3, 4-7, 8-11, 12-15.
        let expected = [
            [0.0, 1.0, 4.0, 5.0],         // image 0, top left
            [100.0, 101.0, 104.0, 105.0], // image 1, top left
            [2.0, 3.0, 6.0, 7.0],         // image 0, top right
            [102.0, 103.0, 106.0, 107.0],
            [8.0, 9.0, 12.0, 13.0], // bottom left
            [108.0, 109.0, 112.0, 113.0],
            [10.0, 11.0, 14.0, 15.0], // bottom right
            [110.0, 111.0, 114.0, 115.0],
        ];
        assert_eq!(q, expected.map(|r| r.to_vec()).to_vec());
        // Fusing the patches' "logits" (their sums) averages each image's four.
        let sums = Tensor::from_vec(
            q.iter().map(|r| r.iter().sum()).collect::<Vec<f32>>(),
            (8, 1),
            &Device::Cpu,
        )?;
        let fused = fuse_patches(&sums)?.to_vec2::<f32>()?;
        assert_eq!(
            fused,
            vec![
                vec![(10.0 + 18.0 + 42.0 + 50.0) / 4.0],
                vec![(410.0 + 418.0 + 442.0 + 450.0) / 4.0]
            ]
        );
        assert!(quadrants(&Tensor::zeros(
            (1, 1, 3, 4),
            candle_core::DType::F32,
            &Device::Cpu
        )?)
        .unwrap_err()
        .to_string()
        .contains("needs an even height and width, got 3x4"));
        Ok(())
    }
}
