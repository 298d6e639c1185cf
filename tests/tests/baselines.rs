//! The baselines' plans and losses in the engine on a real backbone, and a user's own loss.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use auglocal_core::methods::{InputSpec, LocalLoss, LossSite, MethodSettings, ModuleRule};
use auglocal_core::nn::cross_entropy;
use auglocal_core::params::{Owner, Role};
use auglocal_core::{Engine, Method, ParamBuilder, ParamStore, Sgd, SgdConfig, METHODS};
use candle_core::{Device, Tensor};

/// Every method of the table with one head per unit (the baselines).
fn baselines() -> impl Iterator<Item = &'static str> {
    METHODS
        .iter()
        .filter(|m| m.rule == ModuleRule::SplitTable)
        .map(|m| m.name)
}

fn cifar32() -> anyhow::Result<InputSpec> {
    Ok(auglocal_data::spec("cifar10")?.input(32))
}

fn batch(n: usize) -> anyhow::Result<(Tensor, Tensor)> {
    let images = Tensor::randn(0f32, 1.0, (n, 3, 32, 32), &Device::Cpu)?;
    // Two samples of each class, so the contrastive loss has positives.
    let labels: Vec<u32> = (0..n as u32).map(|i| i / 2 % 10).collect();
    Ok((images, Tensor::from_vec(labels, n, &Device::Cpu)?))
}

#[test]
fn every_baseline_trains_only_its_own_module() -> anyhow::Result<()> {
    assert_eq!(
        baselines().collect::<Vec<_>>(),
        ["dgl", "infopro", "infopro-contrast", "predsim", "greedy"]
    );
    for head in baselines() {
        let store = ParamStore::new();
        let pb = ParamBuilder::new(&store, &Device::Cpu, 3);
        let net = auglocal_models::build("resnet8", 10, &pb)?;
        let method = Method::named(head)?;
        let mut engine = Engine::new(
            net,
            method,
            cifar32()?,
            &pb,
            Sgd::new(SgdConfig::default())?,
        )?;
        // resnet8: stem + 3 blocks, one module per unit.
        let ranges = engine.plan().module_units();
        assert_eq!(ranges, vec![0..1, 1..2, 2..3, 3..4], "{head:?}");
        let aux_units = [0, 1, 2];
        let params: Vec<_> = store
            .entries()
            .into_iter()
            .filter(|e| e.role == Role::Param)
            .collect();
        let (images, labels) = batch(8)?;
        let mut modules = 0;
        let report = engine.train_step_observed(&images, &labels, 0.05, &mut |m, grads| {
            modules += 1;
            common::assert_gradients_stay_in_module(
                &params,
                &ranges,
                &aux_units,
                m,
                grads,
                &format!("{head:?}"),
            );
        })?;
        assert_eq!(modules, 4);
        assert!(
            report.module_losses.iter().all(|l| l.is_finite()),
            "{head:?}: {:?}",
            report.module_losses
        );
    }
    Ok(())
}

#[test]
fn every_local_loss_falls_on_a_fixed_batch() -> anyhow::Result<()> {
    // Ten small steps on the same 8 images: each baseline's first local loss must fall
    // (greedy SL's, the slowest, by about 10%), which shows its gradients train the stem
    // and its head.
    let (images, labels) = batch(8)?;
    for head in baselines() {
        let store = ParamStore::new();
        let pb = ParamBuilder::new(&store, &Device::Cpu, 1);
        let net = auglocal_models::build("resnet8", 10, &pb)?;
        let method = Method::named(head)?;
        let mut engine = Engine::new(
            net,
            method,
            cifar32()?,
            &pb,
            Sgd::new(SgdConfig::default())?,
        )?;
        let mut first = Vec::new();
        for _ in 0..10 {
            first.push(engine.train_step(&images, &labels, 0.01)?.module_losses[0]);
        }
        assert!(
            first[9] < 0.93 * first[0],
            "{head:?}: module 0's loss did not fall: {first:?}"
        );
    }
    Ok(())
}

/// Cross-entropy of a fixed random projection of the pooled features: no parameters of its
/// own, so only the module's units learn from it.
struct Probe {
    projection: Tensor,
    calls: Arc<AtomicUsize>,
}

impl LocalLoss for Probe {
    fn loss(&self, features: &Tensor, labels: &Tensor, _: &Tensor) -> candle_core::Result<Tensor> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        cross_entropy(&features.mean((2, 3))?.matmul(&self.projection)?, labels)
    }
}

#[test]
fn a_users_own_loss_plugs_into_the_engine() -> anyhow::Result<()> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let net = auglocal_models::build("resnet8", 10, &pb)?;
    let method = Method::new(
        "greedy",
        MethodSettings {
            modules: Some(3),
            ..MethodSettings::default()
        },
    )?;
    let calls = Arc::new(AtomicUsize::new(0));
    let sites = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, s) = (calls.clone(), sites.clone());
    let build = move |site: &LossSite<'_>,
                      pb: &ParamBuilder|
          -> auglocal_core::Result<Box<dyn LocalLoss>> {
        s.lock()
            .unwrap()
            .push((site.aux.unit, site.module, site.modules, site.channels()));
        // One named buffer, to see where the builder's tensors go.
        pb.buffer_const("marker", &[1], candle_core::DType::F32, 1.0)?;
        let projection = Tensor::randn(0f32, 1.0, (site.channels(), 10), pb.device())?;
        Ok(Box::new(Probe {
            projection,
            calls: c.clone(),
        }))
    };
    let sgd = Sgd::new(SgdConfig::default())?;
    let mut engine = Engine::with_losses(net, method, cifar32()?, &pb, sgd, &build)?;
    // K = 3 on resnet8: local losses after units 0 and 1; units 2, 3 and the output layer
    // form the last module.
    assert_eq!(*sites.lock().unwrap(), vec![(0, 0, 3, 16), (1, 1, 3, 16)]);
    assert_eq!(engine.plan().module_units(), vec![0..1, 1..2, 2..4]);
    let marker = store
        .get("aux.1.marker")
        .expect("the builder's tensors live under aux.<unit>");
    assert_eq!(marker.owner, Some(Owner::Aux(1)));
    let (images, labels) = batch(4)?;
    let report = engine.train_step(&images, &labels, 0.05)?;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(report.module_losses.len(), 3);
    Ok(())
}
