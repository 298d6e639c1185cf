use candle_core::{DType, Tensor, Var, D};
use candle_nn::ModuleT;

use super::resample::{bilinear, resample};
use super::{LocalLoss, LossSite};
use crate::nn::{cross_entropy, global_avg_pool, BatchNorm2d, Conv2d, Linear};
use crate::params::{Init, ParamBuilder};

/// Hidden width of the classifier's MLP, and the embedding of the contrastive form.
const FEATURE_DIM: usize = 128;
/// Channels of the decoder's hidden layer.
const DECODER_CHANNELS: usize = 12;
/// Temperature of the supervised contrastive loss.
const TEMPERATURE: f64 = 0.07;

/// The table's builder of `infopro` ([`super::METHODS`]), with the reference's weights.
pub(super) fn build_softmax(
    site: &LossSite<'_>,
    pb: &ParamBuilder,
) -> crate::Result<Box<dyn LocalLoss>> {
    let weights = InfoProWeights::for_model(site.net.name());
    Ok(Box::new(InfoProAux::new(site, weights, false, pb)?))
}

/// The table's builder of `infopro-contrast`.
pub(super) fn build_contrast(
    site: &LossSite<'_>,
    pb: &ParamBuilder,
) -> crate::Result<Box<dyn LocalLoss>> {
    let weights = InfoProWeights::for_model(site.net.name());
    Ok(Box::new(InfoProAux::new(site, weights, true, pb)?))
}

/// InfoPro's loss weights: `ixx` on the reconstruction, `ixy` on the classification term,
/// each moving linearly from its first value (module 0) to its second (module K-2, the last
/// one with a local loss), as the reference's `ixx_1 -> ixx_2`, `ixy_1 -> ixy_2`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InfoProWeights {
    /// Weight of the reconstruction term: (at module 0, at module K-2).
    pub ixx: (f64, f64),
    /// Weight of the classification term: (at module 0, at module K-2).
    pub ixy: (f64, f64),
}

impl InfoProWeights {
    /// The reference's published weights: ResNet-110's for `resnet110`, ResNet-32's for
    /// every other backbone.
    pub fn for_model(model: &str) -> Self {
        if model == "resnet110" {
            InfoProWeights {
                ixx: (5.0, 0.5),
                ixy: (0.0, 1.0),
            }
        } else {
            InfoProWeights {
                ixx: (5.0, 0.2),
                ixy: (0.05, 0.5),
            }
        }
    }

    /// `(ixx, ixy)` of module `module` (from 0) of a run with `modules` modules.
    pub fn at(&self, module: usize, modules: usize) -> (f64, f64) {
        let ratio = if modules > 2 {
            module as f64 / (modules - 2) as f64
        } else {
            0.0
        };
        let lerp = |(first, last): (f64, f64)| first * (1.0 - ratio) + last * ratio;
        (lerp(self.ixx), lerp(self.ixy))
    }
}

/// A 3x3 convolution with a bias (the decoder's, as PyTorch's default `Conv2d`).
struct BiasedConv {
    conv: Conv2d,
    bias: Var,
}

impl BiasedConv {
    fn new(cin: usize, cout: usize, pb: &ParamBuilder) -> crate::Result<Self> {
        let bound = 1.0 / ((cin * 9) as f64).sqrt();
        Ok(BiasedConv {
            conv: Conv2d::new(cin, cout, 3, 1, 1, pb)?,
            bias: pb.param("bias", &[cout], Init::Uniform { bound })?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let bias = self.bias.as_tensor().reshape((1, (), 1, 1))?;
        self.conv.forward_t(x, true)?.broadcast_add(&bias)
    }
}

/// InfoPro (Wang et al. 2021), `ixx * reconstruction + ixy * classification`.
///
/// - Classification (softmax form): conv3x3 (C -> 2C at stride 2 below 64 channels, else
///   C -> C) + BN + ReLU, global average pooling, Linear(128), ReLU, Linear to the classes;
///   cross-entropy. The contrastive form ends in Linear(128) instead, L2-normalised, with
///   the [`supervised_contrastive`] loss at temperature 0.07.
/// - Reconstruction: bilinear upsampling (corners aligned) to the image size, conv3x3
///   (C -> 12, bias) + BN + ReLU, conv3x3 (12 -> 3, bias), sigmoid; binary cross-entropy
///   against the image as it was before normalisation (the loss undoes the loader's
///   normalisation with the [`InputSpec`](super::InputSpec) it was built with).
///
/// Tensor names under the builder's prefix: `head.{conv,bn,fc1,fc2}`,
/// `decoder.{conv1,bn,conv2}`.
pub struct InfoProAux {
    conv: Conv2d,
    bn: BatchNorm2d,
    fc1: Linear,
    fc2: Linear,
    contrastive: bool,
    upsample: Tensor,
    decoder1: BiasedConv,
    decoder_bn: BatchNorm2d,
    decoder2: BiasedConv,
    image_size: usize,
    mean: Tensor,
    std: Tensor,
    /// `(ixx, ixy)` of this module.
    weights: (f64, f64),
}

impl InfoProAux {
    /// The head for `site`, with the loss weights of `weights` at this module; the
    /// contrastive form when `contrastive`.
    pub fn new(
        site: &LossSite<'_>,
        weights: InfoProWeights,
        contrastive: bool,
        pb: &ParamBuilder,
    ) -> crate::Result<Self> {
        let input = site.input;
        let c = site.channels();
        let side = site.feature_size()?;
        let (width, stride) = if c < 64 { (2 * c, 2) } else { (c, 1) };
        let head = pb.pp("head");
        let out = if contrastive {
            FEATURE_DIM
        } else {
            site.net.classes()
        };
        let decoder = pb.pp("decoder");
        let device = pb.device();
        let channel = |v: [f32; 3]| Tensor::from_vec(v.to_vec(), (1, 3, 1, 1), device);
        Ok(InfoProAux {
            conv: Conv2d::new(c, width, 3, stride, 1, &head.pp("conv"))?,
            bn: BatchNorm2d::new(width, &head.pp("bn"))?,
            fc1: Linear::new(width, FEATURE_DIM, true, &head.pp("fc1"))?,
            fc2: Linear::new(FEATURE_DIM, out, true, &head.pp("fc2"))?,
            contrastive,
            upsample: bilinear(side, input.image_size, device)?,
            decoder1: BiasedConv::new(c, DECODER_CHANNELS, &decoder.pp("conv1"))?,
            decoder_bn: BatchNorm2d::new(DECODER_CHANNELS, &decoder.pp("bn"))?,
            decoder2: BiasedConv::new(DECODER_CHANNELS, 3, &decoder.pp("conv2"))?,
            image_size: input.image_size,
            mean: channel(input.mean)?,
            std: channel(input.std)?,
            weights: weights.at(site.module, site.modules),
        })
    }

    /// `(ixx, ixy)` this module's loss uses.
    pub fn weights(&self) -> (f64, f64) {
        self.weights
    }

    /// The classification term: cross-entropy, or the supervised contrastive loss.
    pub fn classification_loss(
        &self,
        features: &Tensor,
        labels: &Tensor,
    ) -> candle_core::Result<Tensor> {
        Ok(self.classification(features, labels)?.0)
    }

    /// [`InfoProAux::classification_loss`] and the classifier's logits (none for the
    /// contrastive variant, whose head embeds instead of classifying).
    fn classification(
        &self,
        features: &Tensor,
        labels: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let out = self.head(features, true)?;
        if self.contrastive {
            let out = out.to_dtype(DType::F32)?;
            let norm = out.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12f32)?;
            let loss = supervised_contrastive(&out.broadcast_div(&norm)?, labels, TEMPERATURE)?;
            Ok((loss, None))
        } else {
            Ok((cross_entropy(&out, labels)?, Some(out)))
        }
    }

    /// The classification head's output: logits, or the contrastive variant's embedding.
    fn head(&self, features: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self
            .bn
            .forward_relu(&self.conv.forward_t(features, train)?, train)?;
        let h = self.fc1.forward_t(&global_avg_pool(&h)?, train)?.relu()?;
        self.fc2.forward_t(&h, train)
    }

    /// The reconstruction term: binary cross-entropy of the decoded image against
    /// `images * std + mean`.
    pub fn reconstruction_loss(
        &self,
        features: &Tensor,
        images: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = images.dims4()?;
        if (h, w) != (self.image_size, self.image_size) {
            candle_core::bail!(
                "InfoPro's decoder was built for {0}x{0} images, got {h}x{w}; build the losses with InputSpec {{ image_size: {h}, .. }}",
                self.image_size
            );
        }
        let up = resample(features, &self.upsample, &self.upsample)?;
        let hidden = self
            .decoder_bn
            .forward_relu(&self.decoder1.forward(&up)?, true)?;
        let logits = self.decoder2.forward(&hidden)?.to_dtype(DType::F32)?;
        let target = images.broadcast_mul(&self.std)?.broadcast_add(&self.mean)?;
        binary_cross_entropy_with_logits(&logits, &target)
    }
}

/// Mean of `-(t log sigmoid(z) + (1 - t) log(1 - sigmoid(z)))`, computed as
/// `softplus(z) - t z` so that saturated outputs stay finite (PyTorch's `BCELoss` on the
/// sigmoid output instead clamps each log at -100: the same value wherever |z| < 100).
fn binary_cross_entropy_with_logits(
    logits: &Tensor,
    target: &Tensor,
) -> candle_core::Result<Tensor> {
    let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    (softplus - (target * logits)?)?.mean_all()
}

/// The supervised contrastive loss (Khosla et al. 2020) of one view, as InfoPro uses it:
/// for each anchor i, the mean over its positives p (same label, p != i) of
/// `-log(exp(f_i.f_p / T) / sum_{a != i} exp(f_i.f_a / T))`, averaged over anchors (an
/// anchor without positives counts 0). `features` (N, D) are L2-normalised rows. The
/// reference scales this by `T / base_T`, which is 1 there (both 0.07).
pub fn supervised_contrastive(
    features: &Tensor,
    labels: &Tensor,
    temperature: f64,
) -> candle_core::Result<Tensor> {
    let n = features.dim(0)?;
    let device = features.device();
    let logits = (features.matmul(&features.t()?)? / temperature)?;
    // Subtracting the row maximum changes nothing but keeps exp() finite.
    let logits = logits.broadcast_sub(&logits.max_keepdim(1)?.detach())?;
    let others = (Tensor::ones((n, n), DType::F32, device)? - Tensor::eye(n, DType::F32, device)?)?;
    let labels = labels.to_dtype(DType::U32)?;
    let same = labels
        .unsqueeze(1)?
        .broadcast_eq(&labels.unsqueeze(0)?)?
        .to_dtype(DType::F32)?;
    let positives = (same * &others)?;
    let denominator = (logits.exp()? * &others)?.sum_keepdim(1)?.log()?;
    let log_prob = logits.broadcast_sub(&denominator)?;
    let counts = positives.sum(1)?;
    // Anchors without a positive divide by 1 (their sum is 0).
    let counts = counts.maximum(1f32)?;
    let mean_pos = (positives * log_prob)?.sum(1)?.div(&counts)?;
    mean_pos.mean(D::Minus1)?.neg()
}

impl LocalLoss for InfoProAux {
    fn needs_images(&self) -> bool {
        true
    }

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
        let (ixx, ixy) = self.weights;
        let reconstruction = self.reconstruction_loss(features, images)?;
        let (classification, logits) = self.classification(features, labels)?;
        Ok((((reconstruction * ixx)? + (classification * ixy)?)?, logits))
    }

    fn eval_logits(&self, features: &Tensor) -> candle_core::Result<Option<Tensor>> {
        match self.contrastive {
            true => Ok(None),
            false => Ok(Some(self.head(features, false)?)),
        }
    }
}
