//! The spec's golden layouts and the plan's error messages.

use auglocal_core::methods::MethodSettings;
use auglocal_core::nn::BoxedLayer;
use auglocal_core::plan::{pyramid_depths, AuxPlan, UnitAux};
use auglocal_core::{AuxHead, Error, LocalNet, Method, ParamBuilder, UnitSpec};
use candle_core::Tensor;

/// The units of a CIFAR ResNet (stem, then `per_stage` blocks of 16, 32 and 64 channels at
/// full, half and quarter resolution) and nothing else: all a plan reads.
struct Units {
    name: &'static str,
    units: Vec<UnitSpec>,
}

fn resnet(name: &'static str, per_stage: usize) -> Units {
    let unit = |channels, reduction| UnitSpec {
        channels,
        reduction,
    };
    let mut units = vec![unit(16, 1); per_stage + 1];
    units.extend(vec![unit(32, 2); per_stage]);
    units.extend(vec![unit(64, 4); per_stage]);
    Units { name, units }
}

impl LocalNet for Units {
    fn name(&self) -> &str {
        self.name
    }
    fn units(&self) -> &[UnitSpec] {
        &self.units
    }
    fn classes(&self) -> usize {
        10
    }
    fn forward_unit(&self, _: usize, _: &Tensor, _: bool) -> candle_core::Result<Tensor> {
        candle_core::bail!("a plan never runs the network")
    }
    fn head(&self, _: &Tensor, _: bool) -> candle_core::Result<Tensor> {
        candle_core::bail!("a plan never runs the network")
    }
    fn build_block(
        &self,
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: &ParamBuilder,
    ) -> auglocal_core::Result<BoxedLayer> {
        unreachable!("a plan builds no block")
    }
}

fn resnet32() -> Units {
    resnet("resnet32", 5)
}

fn auglocal(net: &Units, depth: usize, pyramid: f64) -> auglocal_core::Result<AuxPlan> {
    AuxPlan::new(net, &Method::auglocal(depth, pyramid)?)
}

fn split(net: &Units, method: &str, modules: Option<usize>) -> auglocal_core::Result<AuxPlan> {
    let settings = MethodSettings {
        modules,
        ..MethodSettings::default()
    };
    AuxPlan::new(net, &Method::new(method, settings)?)
}

/// `[k:in->out,sS]` notation of the spec.
fn layout(aux: &UnitAux) -> String {
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

#[test]
fn resnet32_depth2_pyramid_half() {
    let plan = auglocal(&resnet32(), 2, 0.5).unwrap();
    assert_eq!((plan.units, plan.modules, plan.aux.len()), (16, 14, 13));
    assert!(plan
        .aux
        .iter()
        .all(|a| a.depth == 2 && a.head == Some(AuxHead::Fc)));
    assert_eq!(layout(&plan.aux[0]), "[8:16->32,s2] [15:32->64,s2]");
    assert_eq!(layout(&plan.aux[6]), "[10:32->32,s1] [15:32->64,s2]");
    assert_eq!(layout(&plan.aux[7]), "[11:32->64,s2] [15:64->64,s1]");
    assert_eq!(layout(&plan.aux[12]), "[14:64->64,s1] [15:64->64,s1]");
    // The tie j=2: 2 + 13/2 = 8.5 rounds to 8.
    assert_eq!(layout(&plan.aux[2]), "[8:16->32,s2] [15:32->64,s2]");
    assert_eq!(plan.module_units().last().unwrap().clone(), 13..16);
}

#[test]
fn resnet32_depth3_pyramid_half() {
    let plan = auglocal(&resnet32(), 3, 0.5).unwrap();
    assert_eq!(plan.modules, 13);
    let depths: Vec<usize> = plan.aux.iter().map(|a| a.depth).collect();
    assert_eq!(depths, vec![3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2]);
    assert_eq!(
        layout(&plan.aux[0]),
        "[5:16->16,s1] [10:16->32,s2] [15:32->64,s2]"
    );
    assert_eq!(
        layout(&plan.aux[1]),
        "[6:16->32,s2] [10:32->32,s1] [15:32->64,s2]"
    );
    assert_eq!(plan.module_units().last().unwrap().clone(), 12..16);
}

#[test]
fn resnet32_depth1_copies_the_last_unit_with_bn_head() {
    let plan = auglocal(&resnet32(), 1, 0.0).unwrap();
    assert_eq!(plan.modules, 15);
    assert_eq!(plan.aux.len(), 14);
    for a in &plan.aux {
        assert_eq!(a.head, Some(AuxHead::BnFc));
        let expected = match a.unit {
            0..=5 => "[15:16->64,s2]",
            6..=10 => "[15:32->64,s2]",
            _ => "[15:64->64,s1]",
        };
        assert_eq!(layout(a), expected, "unit {}", a.unit);
        assert_eq!(a.blocks[0].needs_projection(), a.unit <= 10);
    }
}

#[test]
fn resnet110_depth3_pyramid_half() {
    let net = resnet("resnet110", 18);
    assert_eq!(net.units.len(), 55);
    let plan = auglocal(&net, 3, 0.5).unwrap();
    assert_eq!(plan.modules, 52);
    let depths: Vec<usize> = plan.aux.iter().map(|a| a.depth).collect();
    assert_eq!(depths.iter().filter(|&&d| d == 3).count(), 25);
    assert_eq!(depths.iter().filter(|&&d| d == 2).count(), 26);
    assert!(depths[..25].iter().all(|&d| d == 3) && depths[25..].iter().all(|&d| d == 2));
    assert_eq!(
        layout(&plan.aux[0]),
        "[18:16->16,s1] [36:16->32,s2] [54:32->64,s2]"
    );
}

#[test]
fn pyramid_tie_at_two_and_a_half_goes_to_two() {
    // K = 52: i = 25 gives exactly 3*(1-0.25) + 0.25 = 2.5.
    assert_eq!(pyramid_depths(3, 0.5, 52)[25], 2);
    assert_eq!(pyramid_depths(3, 0.5, 52)[24], 3);
    // Coefficient 1 shrinks to exactly 1 at the last auxiliary network.
    assert_eq!(*pyramid_depths(4, 1.0, 10).last().unwrap(), 1);
}

#[test]
fn depth_near_the_end_is_capped_by_remaining_units() {
    let plan = auglocal(&resnet32(), 3, 0.0).unwrap();
    // Unit 11 has 4 units after it: depth stays 3; the last module is units 12..16.
    assert_eq!(plan.aux.last().unwrap().unit, 11);
    assert_eq!(
        layout(plan.aux.last().unwrap()),
        "[12:64->64,s1] [14:64->64,s1] [15:64->64,s1]"
    );
}

#[test]
fn backprop_is_one_module() {
    let plan = AuxPlan::new(&resnet32(), &Method::named("bp").unwrap()).unwrap();
    assert_eq!(plan.modules, 1);
    assert!(plan.aux.is_empty());
    assert_eq!(plan.module_units(), vec![0..16]);
}

#[test]
fn plan_json_has_the_documented_shape() {
    let plan = auglocal(&resnet32(), 2, 0.5).unwrap();
    let json = serde_json::to_string(&plan).unwrap();
    assert!(json.starts_with(
        r#"{"model":"resnet32","method":"auglocal","units":16,"modules":14,"aux":[{"unit":0,"depth":2,"blocks":[{"copy_of":8,"in":16,"out":32,"stride":2},{"copy_of":15,"in":32,"out":64,"stride":2}],"head":"fc"},"#
    ));
    let d1 = serde_json::to_string(&auglocal(&resnet32(), 1, 0.0).unwrap()).unwrap();
    assert!(d1.contains(r#""head":"bn_fc""#));
}

fn message(result: auglocal_core::Result<AuxPlan>) -> String {
    match result {
        Err(e @ Error::InvalidSetting { .. }) => e.to_string(),
        other => panic!("expected an invalid-setting error, got {other:?}"),
    }
}

#[test]
fn invalid_settings_name_the_valid_range() {
    let net = resnet32();
    assert_eq!(
        message(auglocal(&net, 0, 0.5)),
        "invalid auxiliary depth: 0 (valid: 1..=14 for resnet32 (16 units; K = 16 - depth must be >= 2))"
    );
    assert!(message(auglocal(&net, 15, 0.5)).contains("valid: 1..=14"));
    assert!(message(auglocal(&net, 40, 0.0)).contains("auxiliary depth: 40"));
    assert!(message(auglocal(&net, 2, 1.5))
        .contains("pyramid coefficient: 1.5 (valid: a number in [0, 1]"));
    assert!(message(auglocal(&net, 2, -0.1)).contains("pyramid coefficient: -0.1"));
    assert!(message(auglocal(&net, 2, f64::NAN)).contains("pyramid coefficient: NaN"));
}

#[test]
fn baselines_put_a_head_after_every_unit_but_the_last() {
    let plan = split(&resnet32(), "dgl", None).unwrap();
    assert_eq!((plan.units, plan.modules, plan.aux.len()), (16, 16, 15));
    for (i, a) in plan.aux.iter().enumerate() {
        assert_eq!((a.unit, a.depth, a.head), (i, 0, None));
        assert!(a.blocks.is_empty());
    }
    assert_eq!(plan.module_units()[0], 0..1);
    assert_eq!(plan.module_units().last().unwrap().clone(), 15..16);
    let json = serde_json::to_string(&plan).unwrap();
    assert!(json.starts_with(
        r#"{"model":"resnet32","method":"dgl","units":16,"modules":16,"aux":[{"unit":0,"depth":0,"blocks":[]},"#
    ));
}

#[test]
fn smaller_k_follows_the_reference_split_tables() {
    // network_config['resnet32'][4] = [[0,0,0],[1,0,1],[1,1,2]]: units 0, 1, 2; the rest
    // of the network is the last module.
    let plan = split(&resnet32(), "infopro", Some(4)).unwrap();
    let units: Vec<usize> = plan.aux.iter().map(|a| a.unit).collect();
    assert_eq!(units, vec![0, 1, 2]);
    assert_eq!(plan.module_units(), vec![0..1, 1..2, 2..3, 3..16]);
    // network_config['resnet110'][47] ends at [3, 8, 45].
    let plan = split(&resnet("resnet110", 18), "predsim", Some(47)).unwrap();
    assert_eq!(plan.aux.last().unwrap().unit, 45);
    assert_eq!(plan.module_units().last().unwrap().clone(), 46..55);
}

#[test]
fn baseline_settings_out_of_range_are_named() {
    assert_eq!(
        message(split(&resnet32(), "dgl", Some(1))),
        "invalid number of modules: 1 (valid: 2..=16 for resnet32 (16 units; 1 module is end-to-end backprop, method bp))"
    );
    assert!(message(split(&resnet32(), "dgl", Some(17)))
        .starts_with("invalid number of modules: 17 (valid: 2..=16"));
    // Methods that choose their own K refuse one.
    assert_eq!(
        message(split(&resnet32(), "auglocal", Some(4))),
        "invalid number of modules: 4 for method auglocal (valid: no K for auglocal (K = units - d); a K for the methods with one head per unit: dgl, infopro, infopro-contrast, predsim, greedy)"
    );
    assert!(message(split(&resnet32(), "bp", Some(2))).contains("no K for bp (K = 1)"));
    match Method::named("sgd") {
        Err(e @ Error::UnknownMethod { .. }) => assert_eq!(
            e.to_string(),
            "unknown method `sgd` (known methods: bp, auglocal, dgl, infopro, infopro-contrast, predsim, greedy)"
        ),
        other => panic!("expected an unknown-method error, got {other:?}"),
    }
}

#[test]
fn module_ranges_cover_every_unit_once() {
    let plan = auglocal(&resnet32(), 2, 0.5).unwrap();
    let ranges = plan.module_units();
    assert_eq!(ranges.len(), 14);
    assert_eq!(ranges[0], 0..1);
    assert_eq!(ranges[12], 12..13);
    assert_eq!(ranges[13], 13..16);
}

#[test]
fn selection_ties_round_to_even() {
    use auglocal_core::plan::uniform_selection;
    // j = 2, n = 16, d = 2: 2 + 6.5 = 8.5 -> 8.
    assert_eq!(uniform_selection(16, 2, 2), vec![8, 15]);
    assert_eq!(uniform_selection(16, 0, 2), vec![8, 15]);
    assert_eq!(uniform_selection(16, 13, 2), vec![14, 15]);
    assert_eq!(uniform_selection(16, 14, 3), vec![15]);
    assert_eq!(pyramid_depths(3, 0.0, 13), vec![3; 12]);
}
