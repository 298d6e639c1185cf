//! The modifiers `+man` and `+hpff` on every local method: gradient isolation, MAN's moving
//! average by hand, what HPFF hands the method's loss, and learning.

mod common;

use std::sync::{Arc, Mutex};

use auglocal_core::dist::partition::Partition;
use auglocal_core::dist::{Comm, Tag, Topology};
use auglocal_core::methods::hpff::quadrants;
use auglocal_core::methods::{InputSpec, LocalLoss, LossSite, ModuleRule};
use auglocal_core::nn::cross_entropy;
use auglocal_core::params::{Owner, Role};
use auglocal_core::trainer::{Stage, Trainer, TrainerConfig};
use auglocal_core::{Engine, Method, ParamBuilder, ParamStore, Sgd, SgdConfig, METHODS};
use candle_core::{Device, Tensor};

fn cifar32() -> anyhow::Result<InputSpec> {
    Ok(auglocal_data::spec("cifar10")?.input(32))
}

fn batch(n: usize) -> anyhow::Result<(Tensor, Tensor)> {
    let images = Tensor::randn(0f32, 1.0, (n, 3, 32, 32), &Device::Cpu)?;
    // Two samples of each class, so the contrastive loss has positives.
    let labels: Vec<u32> = (0..n as u32).map(|i| i / 2 % 10).collect();
    Ok((images, Tensor::from_vec(labels, n, &Device::Cpu)?))
}

fn engine(name: &str, seed: u64) -> anyhow::Result<(Engine, ParamStore)> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, seed);
    let net = auglocal_models::build("resnet8", 10, &pb)?;
    let sgd = Sgd::new(SgdConfig::default())?;
    let engine = Engine::new(net, Method::named(name)?, cifar32()?, &pb, sgd)?;
    Ok((engine, store))
}

fn values(store: &ParamStore, name: &str) -> Vec<f32> {
    let entry = store
        .get(name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    entry
        .var
        .as_tensor()
        .flatten_all()
        .and_then(|t| t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>())
        .unwrap()
}

/// Every method with local losses, with each modifier and both.
fn modified_methods() -> Vec<String> {
    let mut names = Vec::new();
    for m in METHODS.iter().filter(|m| m.loss.is_some()) {
        for modifiers in ["+man", "+hpff", "+man+hpff"] {
            names.push(format!("{}{modifiers}", m.name));
        }
    }
    names
}

#[test]
fn every_local_method_with_every_modifier_trains_only_its_own_module() -> anyhow::Result<()> {
    assert_eq!(modified_methods().len(), 18);
    for name in modified_methods() {
        let (mut engine, store) = engine(&name, 3)?;
        let ranges = engine.plan().module_units();
        let aux_units: Vec<usize> = engine.plan().aux.iter().map(|a| a.unit).collect();
        // resnet8 has 4 units: AugLocal (d = 2) cuts 2 modules, the baselines 4.
        let expected = match Method::named(&name)?.info().rule {
            ModuleRule::AugLocal => 2,
            _ => 4,
        };
        assert_eq!(ranges.len(), expected, "{name}");
        let params: Vec<_> = store
            .entries()
            .into_iter()
            .filter(|e| e.role == Role::Param)
            .collect();
        if name.contains("+man") {
            // LB trains with its module; EMA is never stepped.
            let lb = store.get("aux.0.man.lb.conv1.weight").expect("LB exists");
            assert_eq!((lb.role, lb.owner), (Role::Param, Some(Owner::Aux(0))));
            let ema = store.get("aux.0.man.ema.conv1.weight").expect("EMA exists");
            assert_eq!((ema.role, ema.owner), (Role::Buffer, Some(Owner::Aux(0))));
        }
        let (images, labels) = batch(8)?;
        let mut modules = 0;
        let report = engine.train_step_observed(&images, &labels, 0.05, &mut |m, grads| {
            modules += 1;
            common::assert_gradients_stay_in_module(&params, &ranges, &aux_units, m, grads, &name);
        })?;
        assert_eq!(modules, expected, "{name}");
        assert!(
            report.module_losses.iter().all(|l| l.is_finite()),
            "{name}: {:?}",
            report.module_losses
        );
    }
    Ok(())
}

#[test]
fn mans_copies_start_as_the_next_unit_and_ema_follows_it_by_hand() -> anyhow::Result<()> {
    let (mut engine, store) = engine("dgl+man", 5)?;
    // resnet8's unit 1 is `layer1.0`; module 0's MAN blocks copy it.
    let unit: Vec<_> = store.owned_by(&[Owner::Unit(1)]);
    let suffixes: Vec<String> = unit
        .iter()
        .map(|e| e.name.trim_start_matches("layer1.0.").to_string())
        .collect();
    assert!(suffixes.contains(&"bn1.running_mean".to_string()));
    for (e, suffix) in unit.iter().zip(&suffixes) {
        let start = values(&store, &e.name);
        assert_eq!(values(&store, &format!("aux.0.man.lb.{suffix}")), start);
        assert_eq!(values(&store, &format!("aux.0.man.ema.{suffix}")), start);
    }
    let (images, labels) = batch(8)?;
    // Step 1: module 0 updates, then EMA moves towards unit 1 as it was before this step
    // (module 1 updates after): both equal, so EMA stays where it was.
    let weight = |prefix: &str| values(&store, &format!("{prefix}conv1.weight"));
    let start = weight("layer1.0.");
    engine.train_step(&images, &labels, 0.1)?;
    let unit_after_1 = weight("layer1.0.");
    let ema_after_1 = weight("aux.0.man.ema.");
    assert_ne!(unit_after_1, start, "unit 1 was trained in step 1");
    for (e, s) in ema_after_1.iter().zip(&start) {
        assert!(
            (e - s).abs() <= 1e-6 * s.abs().max(1e-3),
            "EMA moved in step 1"
        );
    }
    // Step 2: ema = 0.995 * ema + 0.005 * unit (as it was after step 1), in f32.
    engine.train_step(&images, &labels, 0.1)?;
    let ema_after_2 = weight("aux.0.man.ema.");
    let mut largest = 0f64;
    for ((e1, u1), e2) in ema_after_1.iter().zip(&unit_after_1).zip(&ema_after_2) {
        let expected = 0.995 * *e1 as f64 + 0.005 * *u1 as f64;
        largest = largest.max((expected - *e2 as f64).abs());
    }
    assert!(largest < 1e-7, "EMA off the hand computation by {largest}");
    // LB was trained by module 0's loss: it left the copy.
    assert_ne!(weight("aux.0.man.lb."), ema_after_2);
    // Only parameters move by the average; BatchNorm statistics are EMA's own, from its
    // forward passes, so they are neither the unit's nor an average of them.
    let stats = |prefix: &str| values(&store, &format!("{prefix}bn1.running_mean"));
    assert_ne!(stats("aux.0.man.ema."), stats("layer1.0."));
    Ok(())
}

/// A loss that records what it was given and was built for.
#[derive(Default)]
struct Seen {
    site: Vec<(usize, usize, usize)>,
    inputs: Vec<(Tensor, Tensor, Tensor)>,
}

struct Recorder {
    seen: Arc<Mutex<Seen>>,
    projection: Tensor,
}

impl Recorder {
    fn logits(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        features.mean((2, 3))?.matmul(&self.projection)
    }
}

impl LocalLoss for Recorder {
    fn loss(&self, f: &Tensor, l: &Tensor, i: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.loss_and_logits(f, l, i)?.0)
    }

    fn loss_and_logits(
        &self,
        features: &Tensor,
        labels: &Tensor,
        images: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        self.seen
            .lock()
            .unwrap()
            .inputs
            .push((features.detach(), labels.clone(), images.clone()));
        let logits = self.logits(features)?;
        Ok((cross_entropy(&logits, labels)?, Some(logits)))
    }

    fn eval_logits(&self, features: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.logits(features)?))
    }

    fn needs_images(&self) -> bool {
        true
    }
}

/// An engine whose local losses are [`Recorder`]s; `projections` receives their weights.
fn recording_engine(
    name: &str,
    seen: &Arc<Mutex<Seen>>,
    projections: &Arc<Mutex<Vec<Tensor>>>,
) -> anyhow::Result<Engine> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let net = auglocal_models::build("resnet8", 10, &pb)?;
    let method = Method::named(name)?;
    let s = seen.clone();
    let p = projections.clone();
    let build = move |site: &LossSite<'_>,
                      pb: &ParamBuilder|
          -> auglocal_core::Result<Box<dyn LocalLoss>> {
        s.lock()
            .unwrap()
            .site
            .push((site.aux.unit, site.channels(), site.input.image_size));
        let projection = Tensor::randn(0f32, 1.0, (site.channels(), 10), pb.device())?;
        p.lock().unwrap().push(projection.clone());
        Ok(Box::new(Recorder {
            seen: s.clone(),
            projection,
        }))
    };
    let sgd = Sgd::new(SgdConfig::default())?;
    Ok(Engine::with_losses(
        net,
        method,
        cifar32()?,
        &pb,
        sgd,
        &build,
    )?)
}

/// The mean of the four quarters of a batch of 4N rows, one addition at a time.
fn mean_of_quarters(x: &Tensor) -> candle_core::Result<Tensor> {
    let n = x.dim(0)? / 4;
    let sum = (((x.narrow(0, 0, n)? + x.narrow(0, n, n)?)? + x.narrow(0, 2 * n, n)?)?
        + x.narrow(0, 3 * n, n)?)?;
    sum / 4.0
}

#[test]
fn hpff_gives_the_loss_each_patch_with_its_label_and_image_quadrant() -> anyhow::Result<()> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let projections = Arc::new(Mutex::new(Vec::new()));
    let mut engine = recording_engine("greedy+hpff", &seen, &projections)?;
    // Built for a quarter of the image: 16x16 instead of 32x32, at the module's own unit.
    assert_eq!(
        seen.lock().unwrap().site,
        vec![(0, 16, 16), (1, 16, 16), (2, 32, 16)]
    );
    // Each quadrant of each image its own offset per channel, so the patches' logits differ.
    let offsets = (Tensor::randn(0f32, 1.0, (16, 3, 2, 2), &Device::Cpu)? * 3.0)?;
    let images = (batch(16)?.0 + offsets.upsample_nearest2d(32, 32)?)?;
    let projection = projections.lock().unwrap()[0].clone();
    let fused_prediction = |h: &Tensor| -> candle_core::Result<Tensor> {
        mean_of_quarters(&quadrants(h)?.mean((2, 3))?.matmul(&projection)?)?.argmax(1)
    };
    // Module 0's output, computed as the step will (BatchNorm on batch statistics). The
    // labels are what the mean of the four patches' logits predicts, so the module counts
    // all 16 right exactly when it fuses its patches that way.
    let output = engine.module_forward(0, &images)?;
    let labels = fused_prediction(&output)?;
    let report = engine.train_step(&images, &labels, 0.05)?;
    assert_eq!(report.module_correct[0], Some(16));
    let seen_now = seen.lock().unwrap();
    let (features, patch_labels, patch_images) = &seen_now.inputs[0];
    assert_eq!(features.dims(), &[64, 16, 16, 16]);
    let diff = (features - quadrants(&output)?)?.abs()?.max_all()?;
    assert_eq!(diff.to_scalar::<f32>()?, 0.0);
    assert_eq!(
        patch_labels.to_vec1::<u32>()?,
        labels.to_vec1::<u32>()?.repeat(4)
    );
    // The top-right patch of image 1 is row 16 + 1 and reads the image's top-right quadrant.
    let expected = images.get(1)?.narrow(1, 0, 16)?.narrow(2, 16, 16)?;
    let diff = (patch_images.get(17)? - expected)?.abs()?.max_all()?;
    assert_eq!(diff.to_scalar::<f32>()?, 0.0);
    drop(seen_now);
    // Evaluation fuses the same way, in inference mode.
    let h = engine.eval_modules(0..1, &images)?;
    let labels = fused_prediction(&h)?;
    let eval = engine.eval_every_module(&images, &labels)?;
    assert_eq!(eval[0].map(|t| t.correct), Some(16));
    Ok(())
}

#[test]
fn man_builds_the_methods_loss_for_the_next_units_output() -> anyhow::Result<()> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut engine = recording_engine("greedy+man+hpff", &seen, &Arc::default())?;
    // After units 0, 1, 2: the loss sits at units 1, 2, 3 (16, 32, 64 channels), for
    // patches of a 16x16 image.
    assert_eq!(
        seen.lock().unwrap().site,
        vec![(1, 16, 16), (2, 32, 16), (3, 64, 16)]
    );
    let (images, labels) = batch(4)?;
    engine.train_step(&images, &labels, 0.05)?;
    let seen = seen.lock().unwrap();
    // Module 2 ends at unit 2 (32 channels, 16x16); MAN maps it to unit 3's 64 channels at
    // 8x8, cut into 4x4 patches.
    assert_eq!(seen.inputs[2].0.dims(), &[16, 64, 4, 4]);
    Ok(())
}

#[test]
fn every_method_with_modifiers_learns_a_fixed_batch() -> anyhow::Result<()> {
    // Ten small steps on the same 8 images: module 0's local loss falls.
    let (images, labels) = batch(8)?;
    for name in [
        "auglocal+man",
        "dgl+man",
        "infopro+man",
        "dgl+hpff",
        "infopro+hpff",
        "predsim+man+hpff",
        "greedy+man+hpff",
    ] {
        let (mut engine, _) = engine(name, 1)?;
        let mut first = Vec::new();
        for _ in 0..10 {
            first.push(engine.train_step(&images, &labels, 0.01)?.module_losses[0]);
        }
        assert!(
            first[9] < 0.93 * first[0],
            "{name}: module 0's loss did not fall: {first:?}"
        );
    }
    Ok(())
}

#[test]
fn man_builds_on_every_backbone() -> anyhow::Result<()> {
    // MAN checks that the block it builds is the next unit again, tensor by tensor; every
    // backbone's units pass. Zeroed weights: building ResNet-50 or VGG-13 this way is cheap.
    for model in auglocal_models::MODELS {
        let store = ParamStore::new();
        let pb = ParamBuilder::zeros(&store, &Device::Cpu);
        let net = auglocal_models::build(model, 10, &pb)?;
        let input = cifar32()?;
        let sgd = Sgd::new(SgdConfig::default())?;
        let engine = Engine::new(net, Method::named("dgl+man")?, input, &pb, sgd)?;
        let blocks = engine.plan().aux.iter().filter(|a| a.man.is_some()).count();
        assert_eq!(blocks, engine.module_count() - 1, "{model}");
    }
    Ok(())
}

/// The first of two pipeline stages, as far as a trainer asks before it trains.
struct FirstOfTwoStages;

impl Comm for FirstOfTwoStages {
    fn topology(&self) -> Topology {
        Topology::new(2, 0, 2).expect("2 processes make 2 stages")
    }
    fn sum_over_replicas(&mut self, _: &mut [f32]) -> auglocal_core::Result<()> {
        unreachable!("a refused trainer sums nothing")
    }
    fn sum_over_replicas_f64(&mut self, _: &mut [f64]) -> auglocal_core::Result<()> {
        unreachable!("a refused trainer sums nothing")
    }
    fn broadcast_f64(&mut self, _: usize, _: &mut [f64]) -> auglocal_core::Result<()> {
        unreachable!("a refused trainer broadcasts nothing")
    }
    fn send(&mut self, _: usize, _: Tag, _: Vec<u8>) -> auglocal_core::Result<()> {
        unreachable!("a refused trainer sends nothing")
    }
    fn receive(&mut self, _: usize, _: Tag) -> auglocal_core::Result<Vec<u8>> {
        unreachable!("a refused trainer receives nothing")
    }
    fn flush(&mut self) -> auglocal_core::Result<()> {
        Ok(())
    }
    fn bytes_sent(&self) -> u64 {
        0
    }
    fn seconds_communicating(&self) -> f64 {
        0.0
    }
    fn abort(&self, code: i32) -> ! {
        panic!("abort({code})")
    }
}

#[test]
fn after_the_backbone_is_loaded_mans_copies_are_the_loaded_unit() -> anyhow::Result<()> {
    let (engine, store) = engine("dgl+man", 2)?;
    // What `train --init-from` does: new backbone weights, the auxiliary networks' kept.
    for e in store.owned_by(&[Owner::Unit(1)]) {
        if e.var.dtype() == candle_core::DType::F32 {
            e.var.set(&(e.var.as_tensor() + 0.25)?)?;
        }
    }
    let lb = |s: &str| values(&store, &format!("aux.0.man.{s}.bn1.weight"));
    assert_ne!(lb("lb"), values(&store, "layer1.0.bn1.weight"));
    engine.backbone_loaded()?;
    for e in store.owned_by(&[Owner::Unit(1)]) {
        let suffix = e.name.trim_start_matches("layer1.0.");
        let loaded = values(&store, &e.name);
        assert_eq!(values(&store, &format!("aux.0.man.lb.{suffix}")), loaded);
        assert_eq!(values(&store, &format!("aux.0.man.ema.{suffix}")), loaded);
    }
    Ok(())
}

#[test]
fn a_trainer_refuses_man_across_pipeline_stages() -> anyhow::Result<()> {
    for (name, refused) in [("dgl+man", true), ("dgl+hpff", false)] {
        let (engine, _) = engine(name, 0)?;
        let partition = Partition::balanced(&[1.0; 4], 2)?;
        let trainer = Trainer::new(engine, TrainerConfig::default())?;
        let result = trainer.in_stage(Stage::new(Box::new(FirstOfTwoStages), partition)?);
        match result {
            Err(e) => {
                assert!(refused, "{name}: {e}");
                assert_eq!(
                    e.to_string(),
                    "invalid pipeline stages: 2 for dgl+man (valid: 1 with +man: MAN's moving average follows the first unit of the next module, which another stage would train)"
                );
            }
            Ok(_) => assert!(!refused, "{name} was accepted on 2 stages"),
        }
    }
    Ok(())
}
