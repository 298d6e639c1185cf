//! The engine on real backbones: gradient isolation, what a step and an evaluation touch.

mod common;

use std::collections::HashMap;

use auglocal_core::dist::{PendingSum, ReplicaSums};
use auglocal_core::params::{Owner, Role};
use auglocal_core::{Engine, Method, ParamBuilder, ParamStore};
use candle_core::{DType, Device, Tensor};

fn engine(model: &str, method: Method) -> anyhow::Result<Engine> {
    common::engine(&Device::Cpu, model, method, 3)
}

fn batch(n: usize) -> anyhow::Result<(Tensor, Tensor)> {
    let images = Tensor::randn(0f32, 1.0, (n, 3, 32, 32), &Device::Cpu)?;
    let labels = Tensor::from_vec(
        (0..n as u32).map(|i| i % 10).collect::<Vec<_>>(),
        n,
        &Device::Cpu,
    )?;
    Ok((images, labels))
}

fn snapshot(store: &ParamStore) -> anyhow::Result<HashMap<String, Vec<f32>>> {
    store
        .entries()
        .into_iter()
        .filter(|e| e.var.dtype() == DType::F32)
        .map(|e| {
            Ok((
                e.name.clone(),
                e.var.as_tensor().flatten_all()?.to_vec1::<f32>()?,
            ))
        })
        .collect()
}

#[test]
fn local_losses_never_reach_earlier_units() -> anyhow::Result<()> {
    let mut engine = engine("resnet20", Method::auglocal(2, 0.5)?)?;
    let ranges = engine.plan().module_units();
    assert_eq!(ranges.len(), 8);
    let entries: Vec<_> = engine
        .store()
        .entries()
        .into_iter()
        .filter(|e| e.role == Role::Param)
        .collect();
    let (images, labels) = batch(4)?;
    let mut checked = 0;
    engine.train_step_observed(&images, &labels, 0.1, &mut |m, grads| {
        let units = ranges[m].clone();
        let last = m == ranges.len() - 1;
        for e in &entries {
            let has_grad = grads.get(e.var.as_tensor()).is_some();
            let mine = match e.owner {
                Some(Owner::Unit(u)) => units.contains(&u),
                Some(Owner::Aux(u)) => !last && u == units.end - 1,
                Some(Owner::Head) => last,
                None => panic!("{} has no owner", e.name),
            };
            assert_eq!(
                has_grad, mine,
                "module {m}: gradient presence of {} ({:?})",
                e.name, e.owner
            );
            checked += 1;
        }
    })?;
    assert_eq!(checked, 8 * entries.len());
    Ok(())
}

#[test]
fn backprop_reaches_every_backbone_parameter() -> anyhow::Result<()> {
    let mut engine = engine("resnet8", Method::named("bp")?)?;
    let entries = engine.store().entries();
    assert!(entries
        .iter()
        .all(|e| !matches!(e.owner, Some(Owner::Aux(_)))));
    let (images, labels) = batch(4)?;
    let mut modules = 0;
    engine.train_step_observed(&images, &labels, 0.1, &mut |_, grads| {
        modules += 1;
        for e in entries.iter().filter(|e| e.role == Role::Param) {
            assert!(
                grads.get(e.var.as_tensor()).is_some(),
                "no gradient for {}",
                e.name
            );
        }
    })?;
    assert_eq!(modules, 1);
    Ok(())
}

#[test]
fn a_step_updates_every_module_and_evaluation_changes_nothing() -> anyhow::Result<()> {
    let mut engine = engine("resnet8", Method::auglocal(1, 0.0)?)?;
    let (images, labels) = batch(6)?;
    let before = snapshot(engine.store())?;
    let report = engine.train_step(&images, &labels, 0.1)?;
    assert_eq!(report.module_losses.len(), 3);
    assert_eq!(report.images, 6);
    assert!(report
        .module_losses
        .iter()
        .all(|l| l.is_finite() && *l > 0.0));
    let after = snapshot(engine.store())?;
    for (name, values) in &before {
        assert_ne!(
            values, &after[name],
            "{name} did not change in a training step"
        );
    }
    // Evaluation: backbone only, inference mode; nothing changes, auxiliary nets untouched.
    let totals = engine.eval_batch(&images, &labels)?;
    assert_eq!(totals.images, 6);
    assert!(totals.correct <= 6 && totals.loss_sum.is_finite());
    assert_eq!(snapshot(engine.store())?, after);
    Ok(())
}

/// With plain SGD (no momentum, no decay) at lr 1, a step moves each module's parameters by
/// exactly its clipped gradient: a joint norm of `--clip-grad-norm`.
#[test]
fn clipping_bounds_each_modules_step() -> anyhow::Result<()> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 3);
    let net = auglocal_models::build("resnet8", 10, &pb)?;
    let input = auglocal_data::spec("cifar10")?.input(32);
    let plain = auglocal_core::SgdConfig {
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    let sgd = auglocal_core::Sgd::new(plain)?;
    let mut engine = Engine::new(net, Method::auglocal(1, 0.0)?, input, &pb, sgd)?;
    let max_norm = 1e-3;
    engine.set_clip_grad_norm(Some(max_norm));
    let (images, labels) = batch(6)?;
    let before = snapshot(engine.store())?;
    engine.train_step(&images, &labels, 1.0)?;
    let after = snapshot(engine.store())?;
    let modules = engine.plan().modules;
    assert_eq!(modules, 3);
    for m in 0..modules {
        let moved: f64 = engine
            .module_entries(m..m + 1)
            .iter()
            .filter(|e| e.role == Role::Param)
            .flat_map(|e| {
                let (b, a) = (&before[&e.name], &after[&e.name]);
                b.iter().zip(a).map(|(x, y)| f64::from(x - y).powi(2))
            })
            .sum::<f64>()
            .sqrt();
        assert!(
            (moved - max_norm).abs() < 1e-3 * max_norm,
            "module {m} moved {moved}, clipped to {max_norm}"
        );
    }
    Ok(())
}

#[test]
fn resnet_parameter_counts_and_unit_shapes() -> anyhow::Result<()> {
    // Option-B CIFAR ResNets: option A's counts plus the two projection shortcuts
    // (16*32 + 64 and 32*64 + 128 = 2,752 parameters).
    for (model, params, units) in [
        ("resnet20", 269_722 + 2_752, 10),
        ("resnet32", 464_154 + 2_752, 16),
        ("resnet110", 1_727_962 + 2_752, 55),
    ] {
        let engine = engine(model, Method::named("bp")?)?;
        assert_eq!(engine.parameter_counts(), (params, 0), "{model}");
        assert_eq!(engine.net().units().len(), units);
    }
    let engine = engine("resnet32", Method::named("bp")?)?;
    let mut x = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu)?;
    for unit in 0..16 {
        x = engine.net().forward_unit(unit, &x, false)?;
        let expected = match unit {
            0..=5 => (2, 16, 32, 32),
            6..=10 => (2, 32, 16, 16),
            _ => (2, 64, 8, 8),
        };
        assert_eq!(x.dims4()?, expected, "unit {unit}");
    }
    assert_eq!(engine.net().head(&x, false)?.dims2()?, (2, 10));
    Ok(())
}

#[test]
fn tensor_names_follow_pytorch() -> anyhow::Result<()> {
    let engine = engine("resnet32", Method::auglocal(1, 0.0)?)?;
    let names: Vec<String> = engine
        .store()
        .entries()
        .into_iter()
        .map(|e| e.name)
        .collect();
    for name in [
        "conv1.weight",
        "bn1.running_mean",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer1.4.bn2.bias",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "layer3.4.conv2.weight",
        "fc.weight",
        "fc.bias",
        "aux.0.blocks.0.conv1.weight",
        "aux.0.blocks.0.downsample.1.running_var",
        "aux.13.head.bn.weight",
        "aux.13.head.fc.bias",
    ] {
        assert!(names.iter().any(|n| n == name), "missing {name}");
    }
    assert!(!names.iter().any(|n| n.starts_with("layer1.0.downsample")));
    assert!(!names.iter().any(|n| n.starts_with("aux.14.")));
    Ok(())
}

#[test]
fn unknown_models_are_listed() {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let err = auglocal_models::build("resnet33", 10, &pb)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "unknown model `resnet33` (known models: resnet8, resnet20, resnet32, resnet56, resnet110, vgg19, mobilenetv2, resnet18, resnet34, resnet50, resnet101, vgg13)"
    );
}

#[test]
fn a_tensor_without_an_owner_is_refused_at_build_time() -> anyhow::Result<()> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    let net = auglocal_models::build("resnet8", 10, &pb)?;
    // Made through the root builder, which no owner was given: no module would step it.
    pb.pp("extra")
        .param("weight", &[4], auglocal_core::params::Init::Const(1.0))?;
    let input = auglocal_data::spec("cifar10")?.input(32);
    let sgd = auglocal_core::Sgd::new(auglocal_core::SgdConfig::default())?;
    let err = match Engine::new(net, Method::named("bp")?, input, &pb, sgd) {
        Ok(_) => panic!("an engine over an unowned tensor was built"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        err,
        "tensor `extra.weight` has no owner: create it through a builder tagged with ParamBuilder::owned_by (Owner::Unit(i) for unit i, Owner::Head for the output layer)"
    );
    Ok(())
}

/// Two data-parallel replicas (threads here, processes under MPI), each given the same 8
/// images, sum their half-weighted gradients module by module: they must end bit for bit
/// alike, and where the whole batch is those 8 images twice (the same BatchNorm statistics,
/// the same mean loss) they must take the single-process step on all 16.
#[test]
fn data_parallel_replicas_take_the_whole_batch_step() -> anyhow::Result<()> {
    use auglocal_core::engine::Replicas;
    use std::sync::mpsc;

    /// Two replicas' sums over a pair of channels, summed at once.
    struct ChannelSums {
        replica: usize,
        send: mpsc::Sender<Vec<f32>>,
        receive: mpsc::Receiver<Vec<f32>>,
    }
    impl ReplicaSums for ChannelSums {
        fn start_sum(&mut self, flat: &Tensor) -> auglocal_core::Result<PendingSum> {
            let mine = flat.to_vec1::<f32>()?;
            self.send
                .send(mine.clone())
                .expect("the other replica listens");
            let theirs = self.receive.recv().expect("the other replica sends");
            // Replica 0's buffer first, as MPI's sum adds them (f32 addition of two numbers
            // commutes anyway).
            let (a, b) = if self.replica == 0 {
                (&mine, &theirs)
            } else {
                (&theirs, &mine)
            };
            let total: Vec<f32> = a.iter().zip(b).map(|(a, b)| a + b).collect();
            Ok(PendingSum::done(Tensor::from_vec(
                total,
                mine.len(),
                &Device::Cpu,
            )?))
        }
        fn finish_sum(&mut self, pending: PendingSum) -> auglocal_core::Result<Tensor> {
            Ok(pending.into_done().expect("summed at once"))
        }
    }

    let (x, labels) = batch(8)?;
    let lr = 0.1;
    let mut single = engine("resnet8", Method::auglocal(1, 0.0)?)?;
    let whole = single.train_step(
        &Tensor::cat(&[&x, &x], 0)?,
        &Tensor::cat(&[&labels, &labels], 0)?,
        lr,
    )?;
    let single_params = snapshot(single.store())?;

    let (to_1, from_0) = mpsc::channel::<Vec<f32>>();
    let (to_0, from_1) = mpsc::channel::<Vec<f32>>();
    let links = [(to_1, from_1), (to_0, from_0)];
    // Each replica's parameters after the step, and its module losses.
    type Replica = (HashMap<String, Vec<f32>>, Vec<f32>);
    let replicas: Vec<Replica> = std::thread::scope(|s| {
        let handles: Vec<_> = links
            .into_iter()
            .enumerate()
            .map(|(replica, (send, receive))| {
                let (x, labels) = (&x, &labels);
                s.spawn(move || -> anyhow::Result<_> {
                    let mut engine = engine("resnet8", Method::auglocal(1, 0.0)?)?;
                    let mut sums = ChannelSums {
                        replica,
                        send,
                        receive,
                    };
                    let modules = engine.module_count();
                    let report = engine.train_modules(
                        0..modules,
                        x,
                        labels,
                        x,
                        lr,
                        Some(Replicas {
                            share: 0.5,
                            sums: &mut sums,
                        }),
                        &mut |_, _| {},
                    )?;
                    Ok((snapshot(engine.store())?, report.module_losses))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a replica panicked"))
            .collect::<anyhow::Result<_>>()
    })?;

    let (params_0, losses_0) = &replicas[0];
    let (params_1, losses_1) = &replicas[1];
    assert_eq!(params_0, params_1, "the replicas diverged");
    assert_eq!(losses_0, losses_1);
    // The summed losses are the whole batch's (each replica's half-weighted mean, added).
    for (m, (replica, whole)) in losses_0.iter().zip(&whole.module_losses).enumerate() {
        assert!(
            (replica - whole).abs() <= 1e-5 * whole.abs(),
            "module {m}: replicas' loss {replica}, single process {whole}"
        );
    }
    let params = single.store().entries();
    let mut compared = 0;
    for e in params.iter().filter(|e| e.role == Role::Param) {
        let (a, b) = (&params_0[&e.name], &single_params[&e.name]);
        let diff = a
            .iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = b.iter().map(|v| v.abs()).fold(0f32, f32::max);
        assert!(
            diff <= 1e-5 * scale.max(1e-3),
            "{}: replicas differ from the single process by {diff} (largest value {scale})",
            e.name
        );
        compared += 1;
    }
    assert!(compared > 20, "only {compared} parameters compared");
    Ok(())
}

/// A sum over replicas that comes back non-finite for the first module: under `--on-nan
/// skip` no module is updated and no module's BatchNorm averages move, although the second
/// module already ran forward while the first one's sum was under way.
#[test]
fn a_non_finite_replica_sum_skips_the_step_and_leaves_no_trace() -> anyhow::Result<()> {
    use auglocal_core::engine::Replicas;
    use auglocal_core::OnNonFinite;

    /// One replica whose first sum is all NaN.
    struct FirstSumNan {
        sums: usize,
    }
    impl ReplicaSums for FirstSumNan {
        fn start_sum(&mut self, flat: &Tensor) -> auglocal_core::Result<PendingSum> {
            self.sums += 1;
            let sum = match self.sums {
                1 => flat.affine(0.0, f64::NAN)?,
                _ => flat.clone(),
            };
            Ok(PendingSum::done(sum))
        }
        fn finish_sum(&mut self, pending: PendingSum) -> auglocal_core::Result<Tensor> {
            Ok(pending.into_done().expect("summed at once"))
        }
    }

    let mut engine = engine("resnet8", Method::auglocal(1, 0.0)?)?;
    engine.set_on_non_finite(OnNonFinite::Skip);
    let before = snapshot(engine.store())?;
    let buffers = engine
        .store()
        .entries()
        .iter()
        .filter(|e| e.role == Role::Buffer && e.var.dtype() == DType::F32)
        .count();
    assert!(buffers > 4, "resnet8 has BatchNorm averages ({buffers})");
    let (x, labels) = batch(8)?;
    let mut sums = FirstSumNan { sums: 0 };
    let modules = engine.module_count();
    let report = engine.train_modules(
        0..modules,
        &x,
        &labels,
        &x,
        0.1,
        Some(Replicas {
            share: 1.0,
            sums: &mut sums,
        }),
        &mut |_, _| {},
    )?;
    let skipped = report.skipped.expect("the step is skipped");
    assert_eq!((skipped.module, skipped.what.as_str()), (0, "loss"));
    assert!(skipped.value.is_nan());
    assert!(report.module_losses.is_empty() && report.output.is_none());
    assert_eq!(sums.sums, 2, "module 1's sum started while module 0's ran");
    // Module 0 ran forward (its BatchNorm averages moved, as on one process); nothing of
    // module 1 moved, and no parameter.
    let after = snapshot(engine.store())?;
    let mut moved: Vec<&str> = before
        .iter()
        .filter(|(name, values)| after[*name] != **values)
        .map(|(name, _)| name.as_str())
        .collect();
    moved.sort();
    let module_0: Vec<String> = engine
        .module_entries(0..1)
        .into_iter()
        .filter(|e| e.role == Role::Buffer && e.var.dtype() == DType::F32)
        .map(|e| e.name)
        .collect();
    let mut expected: Vec<&str> = module_0.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(moved, expected);
    Ok(())
}

/// Every module reports its classifier's correct predictions in a step (the reference's
/// per-module Prec@1): the count the module's own loss pass gives before the update, and
/// none for a loss without a classifier.
#[test]
fn every_module_reports_its_correct_predictions() -> anyhow::Result<()> {
    let (x, labels) = batch(16)?;
    let mut auglocal = engine("resnet8", Method::auglocal(1, 0.0)?)?;
    let k = auglocal.module_count();
    // Module by module, before any update: what each classifier gets right.
    let mut expected = Vec::new();
    let mut h = x.clone();
    for m in 0..k {
        let out = auglocal.module_forward(m, &h)?;
        expected.push(auglocal.module_loss(m, &out, &labels, &x)?.1);
        h = out.detach();
    }
    assert!(expected.iter().all(Option::is_some), "{expected:?}");
    let report = auglocal.train_step(&x, &labels, 0.1)?;
    assert_eq!(report.module_correct, expected);
    assert_eq!(
        report.module_correct.last().copied().flatten(),
        Some(report.correct)
    );
    assert!(report.module_correct.iter().flatten().all(|&c| c <= 16));

    // InfoPro's contrastive variant embeds instead of classifying: no count but the output's.
    let mut contrast = engine(
        "resnet8",
        Method::new("infopro-contrast", Default::default())?,
    )?;
    let report = contrast.train_step(&x, &labels, 0.1)?;
    let (last, locals) = report.module_correct.split_last().expect("modules");
    assert!(
        locals.iter().all(Option::is_none),
        "{:?}",
        report.module_correct
    );
    assert_eq!(*last, Some(report.correct));
    Ok(())
}
