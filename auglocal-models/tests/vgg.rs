//! VGG-19 (CIFAR-size) and VGG-13 (ImageNet): units, shapes, parameters, names, plans.

mod common;

use auglocal_core::AuxHead;
use auglocal_core::ParamStore;
use auglocal_models::Vgg;
use common::{auglocal_step, check_unit_shapes, layout, plan, seeded};

#[test]
fn vgg19_units_follow_the_reference_split() -> anyhow::Result<()> {
    let units = auglocal_models::units("vgg19")?;
    let channels: Vec<usize> = units.iter().map(|u| u.channels).collect();
    let reductions: Vec<usize> = units.iter().map(|u| u.reduction).collect();
    // The reference's net_dim and cifar10size (32 / reduction).
    let mut net_dim = vec![64, 64, 128, 128];
    net_dim.extend([256; 4]);
    net_dim.extend([512; 8]);
    assert_eq!(channels, net_dim);
    let sizes: Vec<usize> = reductions.iter().map(|r| 32 / r).collect();
    let mut expected = vec![32, 32, 16, 16];
    expected.extend([8; 4]);
    expected.extend([4; 4]);
    expected.extend([2; 4]);
    assert_eq!(sizes, expected);
    Ok(())
}

#[test]
fn vgg19_shapes_at_32_and_96() -> anyhow::Result<()> {
    let (_, pb) = seeded(0);
    let net = Vgg::new(19, 10, &pb)?;
    check_unit_shapes(&net, 2, 32, true)?;
    // STL-10's 96x96: the last unit is 6x6, the output layer pools 3x3 away.
    check_unit_shapes(&net, 1, 96, false)
}

#[test]
fn vgg19_parameters_and_names() -> anyhow::Result<()> {
    // Convolutions 9*in*out + out (bias), BN 2*out each, over 3-64-64-128-128-256x4-512x8,
    // plus Linear(512, 10): 20,040,522 (the common CIFAR VGG-19 with BN).
    assert_eq!(auglocal_models::parameters("vgg19", 10)?, 20_040_522);
    let (_, store) = auglocal_models::build_zeroed("vgg19", 10)?;
    let shape = |name: &str| store.get(name).map(|e| e.var.dims().to_vec());
    assert_eq!(shape("features.0.weight"), Some(vec![64, 3, 3, 3]));
    assert_eq!(shape("features.0.bias"), Some(vec![64]));
    assert_eq!(shape("features.1.running_var"), Some(vec![64]));
    assert_eq!(shape("features.7.weight"), Some(vec![128, 64, 3, 3]));
    assert_eq!(shape("features.49.weight"), Some(vec![512, 512, 3, 3]));
    assert_eq!(shape("classifier.weight"), Some(vec![10, 512]));
    // 16 convolutions of 2 tensors, 16 BNs of 5, the classifier's 2.
    assert_eq!(store.entries().len(), 16 * 7 + 2);
    Ok(())
}

#[test]
fn vgg13_matches_torchvision_vgg13_bn() -> anyhow::Result<()> {
    assert_eq!(auglocal_models::parameters("vgg13", 1000)?, 133_053_736);
    let (net, store) = auglocal_models::build_zeroed("vgg13", 1000)?;
    // torchvision's features indices of the ten convolutions (conv, BN, ReLU; pools).
    let convs = [0, 3, 7, 10, 14, 17, 21, 24, 28, 31];
    let mut expected: Vec<String> = Vec::new();
    for c in convs {
        expected.push(format!("features.{c}.weight"));
        expected.push(format!("features.{c}.bias"));
        for t in [
            "weight",
            "bias",
            "running_mean",
            "running_var",
            "num_batches_tracked",
        ] {
            expected.push(format!("features.{}.{t}", c + 1));
        }
    }
    for l in [0, 3, 6] {
        expected.push(format!("classifier.{l}.weight"));
        expected.push(format!("classifier.{l}.bias"));
    }
    let mut names: Vec<String> = store.entries().into_iter().map(|e| e.name).collect();
    names.sort();
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(
        store.get("classifier.0.weight").unwrap().var.dims(),
        &[4096, 512 * 7 * 7]
    );
    let channels: Vec<usize> = net.units().iter().map(|u| u.channels).collect();
    assert_eq!(
        channels,
        vec![64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    );
    check_unit_shapes(net.as_ref(), 1, 224, false)
}

#[test]
fn vgg19_plans_pool_where_channels_change() -> anyhow::Result<()> {
    let p = plan("vgg19", 2, 0.0)?;
    assert_eq!((p.units, p.modules), (16, 14));
    // Unit 0: 0 + 15/2 = 7.5 -> 8 (ties to even), then 15.
    assert_eq!(layout(&p.aux[0]), "[8:64->512,s2] [15:512->512,s1]");
    // Unit 2: 2 + 6.5 = 8.5 -> 8. Unit 4: 4 + 5.5 = 9.5 -> 10.
    assert_eq!(layout(&p.aux[2]), "[8:128->512,s2] [15:512->512,s1]");
    assert_eq!(layout(&p.aux[4]), "[10:256->512,s2] [15:512->512,s1]");
    // Unit 12: 12 + 1.5 = 13.5 -> 14: no channel change, no pool (the backbone pools
    // between units 11 and 12 only).
    assert_eq!(layout(&p.aux[12]), "[14:512->512,s1] [15:512->512,s1]");
    assert!(p.aux.iter().all(|a| a.head == Some(AuxHead::Fc)));
    // Depth 3 from unit 0: 5, 10, 15; a jump over two stages pools once.
    let p = plan("vgg19", 3, 0.0)?;
    assert_eq!(
        layout(&p.aux[0]),
        "[5:64->256,s2] [10:256->512,s2] [15:512->512,s1]"
    );
    Ok(())
}

#[test]
fn vgg13_plan_ends_in_the_mlp_head() -> anyhow::Result<()> {
    let p = plan("vgg13", 2, 0.0)?;
    assert_eq!((p.units, p.modules), (10, 8));
    // Unit 0: 0 + 4.5 -> 4 (ties to even), then 9.
    assert_eq!(layout(&p.aux[0]), "[4:64->256,s2] [9:256->512,s2]");
    assert_eq!(layout(&p.aux[6]), "[8:512->512,s1] [9:512->512,s1]");
    assert!(p.aux.iter().all(|a| a.head == Some(AuxHead::Mlp)));
    Ok(())
}

#[test]
fn auxiliary_networks_train_on_both_vggs() -> anyhow::Result<()> {
    let (_, pb) = seeded(1);
    let losses = auglocal_step(Box::new(Vgg::new(19, 10, &pb)?), &pb, 2, 2, 32)?;
    assert_eq!(losses.len(), 14);
    // VGG-13 on 32x32 images (its units reach 2x2; the classifier's adaptive pool repeats
    // the last 1x1 map to 7x7).
    let (store, pb) = seeded(1);
    let losses = auglocal_step(Box::new(Vgg::new(13, 1000, &pb)?), &pb, 2, 2, 32)?;
    assert_eq!(losses.len(), 8);
    // The MLP head's tensors: two hidden Linear-BN pairs and the classifier.
    let head = store.owned_by(&[auglocal_core::Owner::Aux(0)]);
    let fc1 = head
        .iter()
        .find(|e| e.name == "aux.0.head.fc1.weight")
        .unwrap();
    assert_eq!(fc1.var.dims(), &[512, 512]);
    assert!(head.iter().any(|e| e.name == "aux.0.head.bn2.running_var"));
    assert_eq!(
        ParamStore::count_params(&head),
        // blocks: conv 64->256 (+bias) + BN, conv 256->512 (+bias) + BN; head.
        (9 * 64 * 256 + 256 + 512)
            + (9 * 256 * 512 + 512 + 1024)
            + 2 * (512 * 512 + 512 + 1024)
            + 512 * 1000
            + 1000
    );
    Ok(())
}

#[test]
fn bad_depth_and_width_are_rejected() {
    let (_, pb) = seeded(0);
    let err = Vgg::new(16, 10, &pb).err().unwrap().to_string();
    assert_eq!(
        err,
        "invalid VGG depth: 16 (valid: 19 (CIFAR-size images) or 13 (ImageNet))"
    );
    let err = Vgg::with_width(19, 10, 3, &pb).err().unwrap().to_string();
    assert_eq!(
        err,
        "invalid VGG width divisor: 3 (valid: 1, 2, 4, 8, 16, 32 or 64)"
    );
}
