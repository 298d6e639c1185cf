//! The local losses on tiny cases whose values are worked out by hand.

use auglocal_core::methods::resample::{adaptive_avg, avg_pool, bilinear, resample};
use auglocal_core::methods::{
    similarity_matrix, supervised_contrastive, InfoProAux, InfoProWeights, InputSpec, LocalLoss,
    LocalLossBuilder, LossSite, MethodInfo, PredSimAux,
};
use auglocal_core::nn::BoxedLayer;
use auglocal_core::plan::UnitAux;
use auglocal_core::{LocalNet, ParamBuilder, ParamStore, UnitSpec};
use candle_core::{Device, Tensor};

/// A backbone that only describes its units: enough to size auxiliary heads.
struct Shapes {
    name: &'static str,
    units: Vec<UnitSpec>,
    classes: usize,
}

impl LocalNet for Shapes {
    fn name(&self) -> &str {
        self.name
    }
    fn units(&self) -> &[UnitSpec] {
        &self.units
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn forward_unit(&self, _: usize, x: &Tensor, _: bool) -> candle_core::Result<Tensor> {
        Ok(x.clone())
    }
    fn head(&self, x: &Tensor, _: bool) -> candle_core::Result<Tensor> {
        Ok(x.clone())
    }
    fn build_block(
        &self,
        copy_of: usize,
        _: usize,
        _: usize,
        _: usize,
        _: &ParamBuilder,
    ) -> auglocal_core::Result<BoxedLayer> {
        Err(auglocal_core::Error::InvalidSetting {
            setting: "block",
            value: copy_of.to_string(),
            valid: "none: this test backbone has no blocks".into(),
        })
    }
}

fn shapes(name: &'static str, channels: usize, classes: usize) -> Shapes {
    Shapes {
        name,
        units: vec![
            UnitSpec {
                channels,
                reduction: 1,
            };
            3
        ],
        classes,
    }
}

/// 32x32 images normalised with the CIFAR statistics.
fn cifar(image_size: usize) -> InputSpec {
    InputSpec {
        image_size,
        mean: [125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0],
        std: [63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0],
    }
}

/// Builds method `method`'s loss after unit 0, module `module` of `modules`.
fn build(
    net: &Shapes,
    method: &str,
    input: InputSpec,
    module: usize,
    modules: usize,
) -> anyhow::Result<(Box<dyn LocalLoss>, ParamStore)> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let aux = UnitAux {
        unit: 0,
        depth: 0,
        blocks: Vec::new(),
        head: None,
        man: None,
    };
    let site = LossSite {
        net,
        aux: &aux,
        module,
        modules,
        input,
    };
    Ok((MethodInfo::named(method)?.build(&site, &pb)?, store))
}

fn set(store: &ParamStore, name: &str, value: Tensor) -> anyhow::Result<()> {
    let entry = store
        .get(name)
        .ok_or_else(|| anyhow::anyhow!("no tensor {name}"))?;
    entry.var.set(&value.reshape(entry.var.shape())?)?;
    Ok(())
}

fn scalar(t: &Tensor) -> anyhow::Result<f64> {
    Ok(t.to_scalar::<f32>()? as f64)
}

fn matrix(t: &Tensor) -> anyhow::Result<Vec<Vec<f32>>> {
    Ok(t.to_vec2::<f32>()?)
}

fn assert_close(actual: &[Vec<f32>], expected: &[&[f64]]) {
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        for (j, (a, e)) in a.iter().zip(e.iter()).enumerate() {
            assert!(
                (*a as f64 - e).abs() < 1e-5,
                "[{i}][{j}]: {a} vs {e}; whole: {actual:?}"
            );
        }
    }
}

#[test]
fn similarity_matrix_of_rows_by_hand() -> anyhow::Result<()> {
    // Centred rows: [-1,0,1], [1,0,-1], [1,-1,0], each of norm sqrt(2).
    let x = Tensor::new(&[[1f32, 2., 3.], [3., 2., 1.], [2., 0., 1.]], &Device::Cpu)?;
    assert_close(
        &matrix(&similarity_matrix(&x)?)?,
        &[&[1.0, -1.0, -0.5], &[-1.0, 1.0, 0.5], &[-0.5, 0.5, 1.0]],
    );
    // One-hot labels 0, 1, 0 of 3 classes: centred rows [2,-1,-1]/3 and [-1,2,-1]/3.
    let one_hot = Tensor::new(&[[1f32, 0., 0.], [0., 1., 0.], [1., 0., 0.]], &Device::Cpu)?;
    assert_close(
        &matrix(&similarity_matrix(&one_hot)?)?,
        &[&[1.0, -0.5, 1.0], &[-0.5, 1.0, -0.5], &[1.0, -0.5, 1.0]],
    );
    Ok(())
}

/// Three samples of 4 channels on 2x2 positions; channel c of sample i holds
/// `[0, v, 0, v]` with v from `scales[i][c]`, whose standard deviation is v/sqrt(3).
fn channel_features(scales: [[f32; 4]; 3]) -> anyhow::Result<Tensor> {
    let values: Vec<f32> = scales
        .iter()
        .flat_map(|s| s.iter().flat_map(|&v| [0.0, v, 0.0, v]))
        .collect();
    Ok(Tensor::from_vec(values, (3, 4, 2, 2), &Device::Cpu)?)
}

/// Similarity of the hand case below: standard deviations proportional to [1,2,3,4],
/// [4,3,2,1] and [1,1,1,5]; centred, [-1.5,-.5,.5,1.5] (norm sqrt 5), its negative, and
/// [-1,-1,-1,3] (norm sqrt 12). So s01 = -1 and s02 = 6/sqrt(60) = -s12.
fn hand_similarity() -> [[f64; 3]; 3] {
    let a = 6.0 / 60f64.sqrt();
    [[1.0, -1.0, a], [-1.0, 1.0, -a], [a, -a, 1.0]]
}

#[test]
fn similarity_matrix_uses_per_channel_std_of_4d_features() -> anyhow::Result<()> {
    let x = channel_features([[1., 2., 3., 4.], [4., 3., 2., 1.], [1., 1., 1., 5.]])?;
    let s = hand_similarity();
    assert_close(
        &matrix(&similarity_matrix(&x)?)?,
        &[&s[0][..], &s[1][..], &s[2][..]],
    );
    Ok(())
}

#[test]
fn predsim_is_099_similarity_plus_001_prediction() -> anyhow::Result<()> {
    let net = shapes("toy", 4, 3);
    let input = cifar(2);
    let (loss, store) = build(&net, "predsim", input, 0, 3)?;
    // The 3x3 conv passes each channel through (centre tap 1), so the similarity branch
    // sees the features themselves; a zero classifier predicts uniformly: CE = ln 3.
    let mut kernel = vec![0f32; 4 * 4 * 9];
    for c in 0..4 {
        kernel[(c * 4 + c) * 9 + 4] = 1.0;
    }
    set(
        &store,
        "sim.conv.weight",
        Tensor::new(kernel, &Device::Cpu)?,
    )?;
    set(
        &store,
        "head.fc.weight",
        Tensor::zeros(3 * 16, candle_core::DType::F32, &Device::Cpu)?,
    )?;
    set(
        &store,
        "head.fc.bias",
        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu)?,
    )?;
    let x = channel_features([[1., 2., 3., 4.], [4., 3., 2., 1.], [1., 1., 1., 5.]])?;
    let labels = Tensor::new(&[0u32, 1, 0], &Device::Cpu)?;
    // Label similarity: [[1,-.5,1],[-.5,1,-.5],[1,-.5,1]].
    let sh = hand_similarity();
    let sy = [[1.0, -0.5, 1.0], [-0.5, 1.0, -0.5], [1.0, -0.5, 1.0]];
    let mse = (0..3)
        .flat_map(|i| (0..3).map(move |j| (i, j)))
        .map(|(i, j)| (sh[i][j] - sy[i][j]).powi(2))
        .sum::<f64>()
        / 9.0;
    let value = scalar(&loss.loss(&x, &labels, &x)?)?;
    let expected = 0.99 * mse + 0.01 * 3f64.ln();
    assert!((value - expected).abs() < 1e-5, "{value} vs {expected}");
    Ok(())
}

#[test]
fn infopro_reconstructs_the_unnormalised_image() -> anyhow::Result<()> {
    let net = shapes("resnet32", 4, 10);
    let input = InputSpec {
        image_size: 2,
        mean: [0.2, 0.4, 0.6],
        std: [0.5, 0.5, 0.5],
    };
    // Module 0: ixx 5, ixy 0.05 (ResNet-32's first weights).
    let (loss, store) = build(&net, "infopro", input, 0, 3)?;
    // A zero last decoder conv with bias ln 3 outputs sigmoid(ln 3) = 3/4 everywhere; a
    // zero classifier gives CE = ln 10.
    let zeros = |n: usize| Tensor::zeros(n, candle_core::DType::F32, &Device::Cpu);
    set(&store, "decoder.conv2.weight", zeros(3 * 12 * 9)?)?;
    set(
        &store,
        "decoder.conv2.bias",
        Tensor::new(&[3f32.ln(); 3], &Device::Cpu)?,
    )?;
    set(&store, "head.fc2.weight", zeros(10 * 128)?)?;
    set(&store, "head.fc2.bias", zeros(10)?)?;
    let features = Tensor::randn(0f32, 1.0, (2, 4, 2, 2), &Device::Cpu)?;
    let labels = Tensor::new(&[3u32, 7], &Device::Cpu)?;
    // Normalised value 0.2 everywhere: the image was 0.2*0.5 + mean = [0.3, 0.5, 0.7],
    // whose mean t is 0.5. BCE = -(t ln 3/4 + (1-t) ln 1/4).
    let images = (Tensor::ones((2, 3, 2, 2), candle_core::DType::F32, &Device::Cpu)? * 0.2)?;
    let bce = -(0.5 * 0.75f64.ln() + 0.5 * 0.25f64.ln());
    let value = scalar(&loss.loss(&features, &labels, &images)?)?;
    let expected = 5.0 * bce + 0.05 * 10f64.ln();
    assert!((value - expected).abs() < 1e-5, "{value} vs {expected}");
    // Against the normalised image (0.2 everywhere) the BCE would differ.
    let wrong = 5.0 * -(0.2 * 0.75f64.ln() + 0.8 * 0.25f64.ln()) + 0.05 * 10f64.ln();
    assert!((value - wrong).abs() > 0.5);
    Ok(())
}

#[test]
fn infopro_weights_move_linearly_across_modules() -> anyhow::Result<()> {
    let close =
        |(a, b): (f64, f64), (x, y): (f64, f64)| (a - x).abs() < 1e-12 && (b - y).abs() < 1e-12;
    let r32 = InfoProWeights::for_model("resnet32");
    // K = 16: modules 0..=14 have local losses; module 7 is half way.
    assert!(close(r32.at(0, 16), (5.0, 0.05)));
    assert!(close(r32.at(14, 16), (0.2, 0.5)));
    assert!(close(r32.at(7, 16), (2.6, 0.275)));
    let r110 = InfoProWeights::for_model("resnet110");
    assert!(close(r110.at(0, 55), (5.0, 0.0)));
    assert!(close(r110.at(53, 55), (0.5, 1.0)));
    assert!(close(
        r110.at(20, 55),
        (5.0 - 4.5 * 20.0 / 53.0, 20.0 / 53.0)
    ));
    // Two modules: one local loss, at the first weights.
    assert!(close(r32.at(0, 2), (5.0, 0.05)));
    // The built loss carries its module's weights.
    let net = shapes("resnet32", 4, 10);
    let input = cifar(2);
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let aux = UnitAux {
        unit: 0,
        depth: 0,
        blocks: Vec::new(),
        head: None,
        man: None,
    };
    let site = LossSite {
        net: &net,
        aux: &aux,
        module: 7,
        modules: 16,
        input,
    };
    let built = InfoProAux::new(&site, r32, false, &pb)?;
    assert!(close(built.weights(), (2.6, 0.275)));
    Ok(())
}

#[test]
fn supervised_contrastive_by_hand() -> anyhow::Result<()> {
    // f0 = f1 = (1,0) share label 0; f2 = (0,1) has no positive. At T = 1 anchor 0 sees
    // logits [1,1,0] - 1 = [0,0,-1]: log p(1) = -ln(1 + 1/e); anchor 1 likewise; anchor 2
    // counts 0. Mean over anchors: 2/3 ln(1 + 1/e).
    let f = Tensor::new(&[[1f32, 0.], [1., 0.], [0., 1.]], &Device::Cpu)?;
    let labels = Tensor::new(&[0u32, 0, 1], &Device::Cpu)?;
    let value = scalar(&supervised_contrastive(&f, &labels, 1.0)?)?;
    let expected = 2.0 / 3.0 * (1.0 + (-1f64).exp()).ln();
    assert!((value - expected).abs() < 1e-6, "{value} vs {expected}");
    Ok(())
}

#[test]
fn dgl_head_shapes_and_value() -> anyhow::Result<()> {
    // CIFAR stage 1: 16 channels of side 32 -> pool to 8, MLP on 16*2*2 = 64 features.
    let net = shapes("toy", 16, 10);
    let (_, store) = build(&net, "dgl", cifar(32), 0, 3)?;
    let shape = |n: &str| store.get(n).map(|e| e.var.dims().to_vec());
    assert_eq!(shape("head.conv.2.conv.weight"), Some(vec![16, 16, 1, 1]));
    assert_eq!(shape("head.mlp.1.fc.weight"), Some(vec![64, 64]));
    assert_eq!(shape("head.mlp.0.fc.bias"), None);
    assert_eq!(shape("head.fc.weight"), Some(vec![10, 64]));
    // 3 x (conv 256 + BN 32) + 2 x (linear 4096 + BN 128) + 650.
    assert_eq!(ParamStore::count_params(&store.entries()), 9962);

    // Value: a zero final layer with bias [ln 2, 0, 0] gives logits whose exponentials
    // sum to 4: CE(label 0) = ln 4 - ln 2, CE(label 1) = ln 4; mean 1.5 ln 2.
    let net = shapes("toy", 4, 3);
    let input = cifar(8);
    let (loss, store) = build(&net, "dgl", input, 0, 3)?;
    set(
        &store,
        "head.fc.weight",
        Tensor::zeros(3 * 16, candle_core::DType::F32, &Device::Cpu)?,
    )?;
    set(
        &store,
        "head.fc.bias",
        Tensor::new(&[2f32.ln(), 0., 0.], &Device::Cpu)?,
    )?;
    let x = Tensor::randn(0f32, 1.0, (2, 4, 8, 8), &Device::Cpu)?;
    let labels = Tensor::new(&[0u32, 1], &Device::Cpu)?;
    let value = scalar(&loss.loss(&x, &labels, &x)?)?;
    assert!((value - 1.5 * 2f64.ln()).abs() < 1e-6, "{value}");
    Ok(())
}

#[test]
fn greedy_is_a_linear_classifier_on_pooled_features() -> anyhow::Result<()> {
    let net = shapes("toy", 2, 10);
    let (loss, store) = build(&net, "greedy", cifar(32), 0, 3)?;
    let mut w = vec![0f32; 10 * 2];
    w[0] = 1.0; // class 0 reads channel 0
    w[3] = 1.0; // class 1 reads channel 1
    set(&store, "head.fc.weight", Tensor::new(w, &Device::Cpu)?)?;
    set(
        &store,
        "head.fc.bias",
        Tensor::zeros(10, candle_core::DType::F32, &Device::Cpu)?,
    )?;
    // Sample 0: channel means (ln 3, 0), label 0: CE = ln(3 + 9) - ln 3 = ln 4.
    // Sample 1: all zero, label 1: CE = ln 10.
    let l3 = 3f32.ln();
    let x = Tensor::new(
        &[[[[l3, l3]], [[0., 0.]]], [[[0., 0.]], [[0., 0.]]]],
        &Device::Cpu,
    )?;
    let labels = Tensor::new(&[0u32, 1], &Device::Cpu)?;
    let value = scalar(&loss.loss(&x, &labels, &x)?)?;
    let expected = (4f64.ln() + 10f64.ln()) / 2.0;
    assert!((value - expected).abs() < 1e-6, "{value} vs {expected}");
    Ok(())
}

#[test]
fn resampling_maps_by_hand() -> anyhow::Result<()> {
    let cpu = Device::Cpu;
    // Bilinear 2 -> 3 with aligned corners samples at 0, 0.5, 1.
    let x = Tensor::new(&[[[[0f32, 1.], [2., 3.]]]], &cpu)?;
    let up = resample(&x, &bilinear(2, 3, &cpu)?, &bilinear(2, 3, &cpu)?)?;
    assert_eq!(
        up.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?,
        vec![vec![0., 0.5, 1.], vec![1., 1.5, 2.], vec![2., 2.5, 3.]]
    );
    // Adaptive 3 -> 2: bins [0, 2) and [1, 3).
    assert_eq!(
        adaptive_avg(3, 2, &cpu)?.to_vec2::<f32>()?,
        vec![vec![0.5, 0.5, 0.], vec![0., 0.5, 0.5]]
    );
    // Window 4, padding 2 on 7 inputs: the first window covers 2 zeros and inputs 0, 1.
    let pool = avg_pool(7, 4, 2, &cpu)?.to_vec2::<f32>()?;
    assert_eq!(pool[0], vec![0.25, 0.25, 0., 0., 0., 0., 0.]);
    assert_eq!(pool[1], vec![0., 0., 0.25, 0.25, 0.25, 0.25, 0.]);
    Ok(())
}

#[test]
fn predsim_sim_and_prediction_parts_are_exposed() -> anyhow::Result<()> {
    // The two parts recombine into the loss (guards the 0.99 / 0.01 weights).
    let net = shapes("toy", 4, 3);
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 1);
    let aux = UnitAux {
        unit: 0,
        depth: 0,
        blocks: Vec::new(),
        head: None,
        man: None,
    };
    let site = LossSite {
        net: &net,
        aux: &aux,
        module: 0,
        modules: 2,
        input: cifar(4),
    };
    let p = PredSimAux::new(&site, &pb)?;
    let x = Tensor::randn(0f32, 1.0, (3, 4, 4, 4), &Device::Cpu)?;
    let labels = Tensor::new(&[0u32, 1, 2], &Device::Cpu)?;
    let sim = scalar(&p.similarity_loss(&x, &labels)?)?;
    let pred = scalar(&p.prediction_loss(&x, &labels)?)?;
    let total = scalar(&p.loss(&x, &labels, &x)?)?;
    assert!((total - (0.99 * sim + 0.01 * pred)).abs() < 1e-6);
    Ok(())
}
