//! ImageNet ResNet-18/34/50/101: parameters and names as torchvision's, units as the
//! reference cuts them, shapes at 224, plans.

mod common;

use auglocal_core::AuxHead;
use auglocal_models::ResNet;
use common::{auglocal_step, check_unit_shapes, layout, plan, seeded};

#[test]
fn parameter_counts_equal_torchvision() -> anyhow::Result<()> {
    for (name, count) in [
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
    ] {
        assert_eq!(auglocal_models::parameters(name, 1000)?, count, "{name}");
    }
    Ok(())
}

#[test]
fn names_are_torchvision_state_dict_keys() -> anyhow::Result<()> {
    // torchvision's state_dict sizes: one key per conv, five per BN, two for fc.
    // ResNet-18: 20 convs (stem, 16 in blocks, 3 projections); ResNet-50: 53 (stem, 48,
    // 4); ResNet-101: 104 (stem, 99, 4).
    for (name, convs) in [("resnet18", 20), ("resnet50", 53), ("resnet101", 104)] {
        let (_, store) = auglocal_models::build_zeroed(name, 1000)?;
        assert_eq!(store.entries().len(), convs * 6 + 2, "{name}");
    }
    let (_, store) = auglocal_models::build_zeroed("resnet50", 1000)?;
    let shape = |name: &str| store.get(name).map(|e| e.var.dims().to_vec());
    assert_eq!(shape("conv1.weight"), Some(vec![64, 3, 7, 7]));
    assert_eq!(
        shape("layer1.0.downsample.0.weight"),
        Some(vec![256, 64, 1, 1])
    );
    assert_eq!(shape("layer2.0.conv2.weight"), Some(vec![128, 128, 3, 3]));
    assert_eq!(shape("layer3.5.bn3.running_mean"), Some(vec![1024]));
    assert_eq!(shape("layer4.2.conv3.weight"), Some(vec![2048, 512, 1, 1]));
    assert_eq!(shape("fc.weight"), Some(vec![1000, 2048]));
    assert!(shape("layer1.1.downsample.0.weight").is_none());
    Ok(())
}

#[test]
fn units_as_the_reference_cuts_them() -> anyhow::Result<()> {
    let count = |name: &str| -> anyhow::Result<usize> { Ok(auglocal_models::units(name)?.len()) };
    assert_eq!(count("resnet18")?, 9);
    assert_eq!(count("resnet34")?, 17);
    assert_eq!(count("resnet50")?, 17);
    assert_eq!(count("resnet101")?, 34);
    let r34: Vec<usize> = auglocal_models::unit_channels("resnet34")?;
    let mut net_dim = vec![64; 4];
    net_dim.extend([128; 4]);
    net_dim.extend([256; 6]);
    net_dim.extend([512; 3]);
    assert_eq!(r34, net_dim);
    let r50 = auglocal_models::units("resnet50")?;
    let reductions: Vec<usize> = r50.iter().map(|u| u.reduction).collect();
    let mut expected = vec![4; 4];
    expected.extend([8; 4]);
    expected.extend([16; 6]);
    expected.extend([32; 3]);
    assert_eq!(reductions, expected);
    assert_eq!(r50[0].channels, 64);
    assert_eq!(r50[1].channels, 256);
    Ok(())
}

#[test]
fn shapes_at_224() -> anyhow::Result<()> {
    for name in ["resnet18", "resnet34", "resnet50", "resnet101"] {
        let (net, _) = auglocal_models::build_zeroed(name, 1000)?;
        check_unit_shapes(net.as_ref(), 1, 224, false)?;
    }
    Ok(())
}

#[test]
fn plans_follow_resolution_not_bottleneck_widths() -> anyhow::Result<()> {
    let p = plan("resnet50", 2, 0.0)?;
    assert_eq!((p.units, p.modules), (17, 15));
    assert_eq!(layout(&p.aux[0]), "[8:64->1024,s2] [16:1024->2048,s2]");
    // Unit 1: 1 + 7.5 = 8.5 -> 8.
    assert_eq!(layout(&p.aux[1]), "[8:256->1024,s2] [16:1024->2048,s2]");
    // Unit 13 (16x): 13 + 1.5 = 14.5 -> 14.
    assert_eq!(layout(&p.aux[13]), "[14:1024->2048,s2] [16:2048->2048,s1]");
    // The reference's ImageNet heads have no BatchNorm1d, even at depth 1.
    let p = plan("resnet50", 1, 0.0)?;
    assert_eq!(layout(&p.aux[0]), "[16:64->2048,s2]");
    assert!(p.aux.iter().all(|a| a.head == Some(AuxHead::Fc)));
    // Depth 15 from the stem copies unit 1 first: same resolution (4x), so stride 1,
    // where counting channels (64 -> 256) would halve.
    let p = plan("resnet50", 15, 0.0)?;
    assert!(layout(&p.aux[0]).starts_with("[1:64->256,s1] [2:256->256,s1]"));
    // ResNet-34 as the spec's n = 17 net_dim.
    let p = plan("resnet34", 2, 0.0)?;
    assert_eq!(layout(&p.aux[0]), "[8:64->256,s2] [16:256->512,s2]");
    Ok(())
}

#[test]
fn pyramid_on_resnet101() -> anyhow::Result<()> {
    // n = 34, d = 3: K = 31; depth round(3 - 2 * i * 0.5 / 29) for i = 0..=29 stays 3
    // while i * 0.5 / 29 < 0.25 (i <= 14), then 2.
    let p = plan("resnet101", 3, 0.5)?;
    assert_eq!(p.modules, 31);
    let depths: Vec<usize> = p.aux.iter().map(|a| a.depth).collect();
    let mut expected = vec![3; 15];
    expected.extend([2; 15]);
    assert_eq!(depths, expected);
    // Unit 0: 0 + 11 = 11, 22, 33; 8x, 16x, 32x from 4x.
    assert_eq!(
        layout(&p.aux[0]),
        "[11:64->1024,s2] [22:1024->1024,s2] [33:1024->2048,s2]"
    );
    Ok(())
}

#[test]
fn auxiliary_networks_train_on_small_images() -> anyhow::Result<()> {
    let (_, pb) = seeded(3);
    let losses = auglocal_step(Box::new(ResNet::new(18, 10, &pb)?), &pb, 2, 2, 64)?;
    assert_eq!(losses.len(), 7);
    let (store, pb) = seeded(3);
    let losses = auglocal_step(Box::new(ResNet::new(50, 10, &pb)?), &pb, 2, 2, 64)?;
    assert_eq!(losses.len(), 15);
    // Copies of Bottlenecks are Bottlenecks: 64 -> 1024 through a 256-wide middle.
    let shape = |name: &str| store.get(name).map(|e| e.var.dims().to_vec());
    assert_eq!(
        shape("aux.0.blocks.0.conv2.weight"),
        Some(vec![256, 256, 3, 3])
    );
    assert_eq!(
        shape("aux.0.blocks.0.downsample.0.weight"),
        Some(vec![1024, 64, 1, 1])
    );
    Ok(())
}
