//! Your own local loss: a linear classifier on globally max-pooled features.
use auglocal_core::methods::{LocalLoss, LossSite, MethodSettings};
use auglocal_core::nn::{cross_entropy, Linear};
use auglocal_core::{Engine, Method, ParamBuilder, ParamStore, Sgd, SgdConfig};
use candle_core::{Device, Tensor};
use candle_nn::ModuleT;

struct MaxPoolHead {
    fc: Linear,
}

impl LocalLoss for MaxPoolHead {
    fn loss(
        &self,
        features: &Tensor,
        labels: &Tensor,
        _images: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let pooled = features.max(3)?.max(2)?; // (N, C)
        cross_entropy(&self.fc.forward_t(&pooled, true)?, labels)
    }
}

fn main() -> anyhow::Result<()> {
    let (device, store) = (Device::Cpu, ParamStore::new());
    let pb = ParamBuilder::new(&store, &device, 0);
    let net = auglocal_models::build("resnet20", 10, &pb)?;
    // The baselines' module boundaries (any method with one head per unit): K = 4 here,
    // local losses after units 0, 1 and 2.
    let k4 = MethodSettings {
        modules: Some(4),
        ..MethodSettings::default()
    };
    let method = Method::new("greedy", k4)?;
    // Called once per local module; tensors made through `pb` are named aux.<unit>.*
    let build =
        |site: &LossSite<'_>, pb: &ParamBuilder| -> auglocal_core::Result<Box<dyn LocalLoss>> {
            let fc = Linear::new(site.channels(), site.net.classes(), true, &pb.pp("fc"))?;
            Ok(Box::new(MaxPoolHead { fc }))
        };
    let input = auglocal_data::spec("cifar10")?.input(32);
    let sgd = Sgd::new(SgdConfig::default())?;
    let mut engine = Engine::with_losses(net, method, input, &pb, sgd, &build)?;
    let images = Tensor::randn(0f32, 1.0, (8, 3, 32, 32), &device)?;
    let labels = Tensor::new(&[0u32, 1, 2, 3, 4, 5, 6, 7], &device)?;
    for step in 1..=3 {
        let report = engine.train_step(&images, &labels, 0.05)?;
        println!("step {step}: module losses {:?}", report.module_losses);
    }
    Ok(())
}
