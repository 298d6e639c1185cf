//! What the model tests share: unit-by-unit shape walks and plan layouts.

use auglocal_core::methods::InputSpec;
use auglocal_core::plan::UnitAux;
use auglocal_core::{AuxPlan, Engine, LocalNet, Method, ParamBuilder, ParamStore, Sgd, SgdConfig};
use candle_core::{Device, Tensor};

/// Runs `net` unit by unit on a random (batch, 3, size, size) input, checking every unit's
/// output against its `UnitSpec` (channels, size / reduction), then the output layer.
pub fn check_unit_shapes(
    net: &dyn LocalNet,
    batch: usize,
    size: usize,
    train: bool,
) -> anyhow::Result<()> {
    let mut h = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &Device::Cpu)?;
    for (u, spec) in net.units().iter().enumerate() {
        h = net.forward_unit(u, &h, train)?;
        let side = size / spec.reduction;
        assert_eq!(
            h.dims(),
            &[batch, spec.channels, side, side],
            "{} unit {u} at {size}x{size}",
            net.name()
        );
    }
    let logits = net.head(&h, train)?;
    assert_eq!(
        logits.dims(),
        &[batch, net.classes()],
        "{} head",
        net.name()
    );
    Ok(())
}

/// `[k:in->out,sS]` notation of the spec.
pub fn layout(aux: &UnitAux) -> String {
    aux.blocks
        .iter()
        .map(|b| {
            format!(
                "[{}:{}->{},s{}]",
                b.copy_of, b.in_channels, b.out_channels, b.stride
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The plan of AugLocal at depth `depth` (pyramid `pyramid`) for registered model `name`.
pub fn plan(name: &str, depth: usize, pyramid: f64) -> anyhow::Result<AuxPlan> {
    let (net, _) = auglocal_models::build_zeroed(name, 10)?;
    Ok(AuxPlan::new(
        net.as_ref(),
        &Method::auglocal(depth, pyramid)?,
    )?)
}

/// One AugLocal training step of `net` (built from `pb`) at depth `depth` on a random
/// batch: every auxiliary network is built and runs; returns the module losses.
pub fn auglocal_step(
    net: Box<dyn LocalNet>,
    pb: &ParamBuilder,
    depth: usize,
    batch: usize,
    size: usize,
) -> anyhow::Result<Vec<f32>> {
    let classes = net.classes();
    let input = InputSpec {
        image_size: size,
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    let method = Method::auglocal(depth, 0.5)?;
    let mut engine = Engine::new(net, method, input, pb, Sgd::new(SgdConfig::default())?)?;
    let images = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &Device::Cpu)?;
    let labels: Vec<u32> = (0..batch).map(|i| (i % classes) as u32).collect();
    let labels = Tensor::from_vec(labels, batch, &Device::Cpu)?;
    let report = engine.train_step(&images, &labels, 0.01)?;
    assert!(report.module_losses.iter().all(|l| l.is_finite()));
    Ok(report.module_losses)
}

/// A seeded builder over a fresh store.
pub fn seeded(seed: u64) -> (ParamStore, ParamBuilder) {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, seed);
    (store, pb)
}
