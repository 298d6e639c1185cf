//! The spec's golden layouts and the plan's error messages.

use auglocal_core::plan::{pyramid_depths, AuxPlan, HeadKind, UnitAux};
use auglocal_core::Error;

fn resnet_dims(per_stage: usize) -> Vec<usize> {
    let mut v = vec![16; per_stage + 1];
    v.extend(vec![32; per_stage]);
    v.extend(vec![64; per_stage]);
    v
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
    let plan = AuxPlan::auglocal("resnet32", &resnet_dims(5), 2, 0.5).unwrap();
    assert_eq!((plan.units, plan.modules, plan.aux.len()), (16, 14, 13));
    assert!(plan
        .aux
        .iter()
        .all(|a| a.depth == 2 && a.head == HeadKind::Fc));
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
    let plan = AuxPlan::auglocal("resnet32", &resnet_dims(5), 3, 0.5).unwrap();
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
    let plan = AuxPlan::auglocal("resnet32", &resnet_dims(5), 1, 0.0).unwrap();
    assert_eq!(plan.modules, 15);
    assert_eq!(plan.aux.len(), 14);
    for a in &plan.aux {
        assert_eq!(a.head, HeadKind::BnFc);
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
    let dims = resnet_dims(18);
    assert_eq!(dims.len(), 55);
    let plan = AuxPlan::auglocal("resnet110", &dims, 3, 0.5).unwrap();
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
    let plan = AuxPlan::auglocal("resnet32", &resnet_dims(5), 3, 0.0).unwrap();
    // Unit 11 has 4 units after it: depth stays 3; the last module is units 12..16.
    assert_eq!(plan.aux.last().unwrap().unit, 11);
    assert_eq!(
        layout(plan.aux.last().unwrap()),
        "[12:64->64,s1] [14:64->64,s1] [15:64->64,s1]"
    );
}

#[test]
fn backprop_is_one_module() {
    let plan = AuxPlan::backprop("resnet32", 16);
    assert_eq!(plan.modules, 1);
    assert!(plan.aux.is_empty());
    assert_eq!(plan.module_units(), vec![0..16]);
}

#[test]
fn plan_json_has_the_documented_shape() {
    let plan = AuxPlan::auglocal("resnet32", &resnet_dims(5), 2, 0.5).unwrap();
    let json = serde_json::to_string(&plan).unwrap();
    assert!(json.starts_with(
        r#"{"model":"resnet32","units":16,"modules":14,"aux":[{"unit":0,"depth":2,"blocks":[{"copy_of":8,"in":16,"out":32,"stride":2},{"copy_of":15,"in":32,"out":64,"stride":2}],"head":"fc"},"#
    ));
    let d1 =
        serde_json::to_string(&AuxPlan::auglocal("resnet32", &resnet_dims(5), 1, 0.0).unwrap())
            .unwrap();
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
    let dims = resnet_dims(5);
    assert_eq!(
        message(AuxPlan::auglocal("resnet32", &dims, 0, 0.5)),
        "invalid auxiliary depth: 0 (valid: 1..=14 for resnet32 (16 units; K = 16 - depth must be >= 2))"
    );
    assert!(message(AuxPlan::auglocal("resnet32", &dims, 15, 0.5)).contains("valid: 1..=14"));
    assert!(message(AuxPlan::auglocal("resnet32", &dims, 40, 0.0)).contains("auxiliary depth: 40"));
    assert!(message(AuxPlan::auglocal("resnet32", &dims, 2, 1.5))
        .contains("pyramid coefficient: 1.5 (valid: a number in [0, 1]"));
    assert!(message(AuxPlan::auglocal("resnet32", &dims, 2, -0.1))
        .contains("pyramid coefficient: -0.1"));
    assert!(message(AuxPlan::auglocal("resnet32", &dims, 2, f64::NAN))
        .contains("pyramid coefficient: NaN"));
}

#[test]
fn baselines_put_a_head_after_every_unit_but_the_last() {
    let method = auglocal_core::Method::Baseline {
        head: HeadKind::Dgl,
        modules: None,
    };
    let plan = AuxPlan::new("resnet32", &resnet_dims(5), method).unwrap();
    assert_eq!((plan.units, plan.modules, plan.aux.len()), (16, 16, 15));
    for (i, a) in plan.aux.iter().enumerate() {
        assert_eq!((a.unit, a.depth, a.head), (i, 0, HeadKind::Dgl));
        assert!(a.blocks.is_empty());
    }
    assert_eq!(plan.module_units()[0], 0..1);
    assert_eq!(plan.module_units().last().unwrap().clone(), 15..16);
    let json = serde_json::to_string(&plan).unwrap();
    assert!(json.starts_with(
        r#"{"model":"resnet32","units":16,"modules":16,"aux":[{"unit":0,"depth":0,"blocks":[],"head":"dgl"},"#
    ));
}

#[test]
fn smaller_k_follows_the_reference_split_tables() {
    // network_config['resnet32'][4] = [[0,0,0],[1,0,1],[1,1,2]]: units 0, 1, 2; the rest
    // of the network is the last module.
    let plan = AuxPlan::baseline("resnet32", 16, HeadKind::InfoPro, Some(4)).unwrap();
    let units: Vec<usize> = plan.aux.iter().map(|a| a.unit).collect();
    assert_eq!(units, vec![0, 1, 2]);
    assert_eq!(plan.module_units(), vec![0..1, 1..2, 2..3, 3..16]);
    // network_config['resnet110'][47] ends at [3, 8, 45].
    let plan = AuxPlan::baseline("resnet110", 55, HeadKind::PredSim, Some(47)).unwrap();
    assert_eq!(plan.aux.last().unwrap().unit, 45);
    assert_eq!(plan.module_units().last().unwrap().clone(), 46..55);
}

#[test]
fn baseline_settings_out_of_range_are_named() {
    assert_eq!(
        message(AuxPlan::baseline("resnet32", 16, HeadKind::Dgl, Some(1))),
        "invalid number of modules: 1 (valid: 2..=16 for resnet32 (16 units; 1 module is end-to-end backprop: use --method bp))"
    );
    assert!(
        message(AuxPlan::baseline("resnet32", 16, HeadKind::Dgl, Some(17)))
            .starts_with("invalid number of modules: 17 (valid: 2..=16")
    );
    assert!(
        message(AuxPlan::baseline("resnet32", 16, HeadKind::Fc, None))
            .starts_with("invalid baseline head: fc (valid: dgl, infopro")
    );
}
