//! CIFAR MobileNetV2: units, shapes, parameters, names, plans.

mod common;

use auglocal_models::MobileNetV2;
use common::{auglocal_step, check_unit_shapes, layout, plan, seeded};

#[test]
fn nineteen_units_with_cifar_strides() -> anyhow::Result<()> {
    let units = auglocal_models::units("mobilenetv2")?;
    let channels: Vec<usize> = units.iter().map(|u| u.channels).collect();
    let reductions: Vec<usize> = units.iter().map(|u| u.reduction).collect();
    assert_eq!(
        channels,
        vec![32, 16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320, 1280]
    );
    // Stride 1 in the stem and the 24-channel stage; 2 at 32, 64 and 160.
    assert_eq!(
        reductions,
        vec![1, 1, 1, 1, 2, 2, 2, 4, 4, 4, 4, 4, 4, 4, 8, 8, 8, 8, 8]
    );
    Ok(())
}

#[test]
fn shapes_at_32_and_96() -> anyhow::Result<()> {
    let (_, pb) = seeded(0);
    let net = MobileNetV2::new(10, &pb)?;
    check_unit_shapes(&net, 2, 32, true)?;
    check_unit_shapes(&net, 1, 96, false)
}

#[test]
fn parameters_and_names() -> anyhow::Result<()> {
    // Stem 3*32*9 + 64; per block expand in*h + 2h, depthwise 9h + 2h, project h*out +
    // 2out (h = t*in), a projection shortcut in*out + 2out at stride 1 when in != out;
    // conv 320*1280 + 2560; Linear 1280*10 + 10: 2,296,922 (kuangliu's CIFAR MobileNetV2).
    assert_eq!(auglocal_models::parameters("mobilenetv2", 10)?, 2_296_922);
    let (_, store) = auglocal_models::build_zeroed("mobilenetv2", 10)?;
    let shape = |name: &str| store.get(name).map(|e| e.var.dims().to_vec());
    assert_eq!(shape("conv1.weight"), Some(vec![32, 3, 3, 3]));
    assert_eq!(shape("layers.0.conv1.weight"), Some(vec![32, 32, 1, 1]));
    assert_eq!(shape("layers.0.conv2.weight"), Some(vec![32, 1, 3, 3]));
    assert_eq!(
        shape("layers.0.shortcut.0.weight"),
        Some(vec![16, 32, 1, 1])
    );
    assert_eq!(shape("layers.1.conv2.weight"), Some(vec![96, 1, 3, 3]));
    assert_eq!(shape("layers.2.shortcut.0.weight"), None); // 24 -> 24: identity
    assert_eq!(shape("layers.3.shortcut.0.weight"), None); // stride 2: no shortcut
    assert_eq!(shape("layers.16.conv3.weight"), Some(vec![320, 960, 1, 1]));
    assert_eq!(shape("conv2.weight"), Some(vec![1280, 320, 1, 1]));
    assert_eq!(shape("linear.weight"), Some(vec![10, 1280]));
    Ok(())
}

#[test]
fn plans_downsample_where_the_backbone_does() -> anyhow::Result<()> {
    let p = plan("mobilenetv2", 2, 0.0)?;
    assert_eq!((p.units, p.modules), (19, 17));
    // Unit 0 (1x): 9 (64 channels, 4x) owes two halvings, pays one; 18 (8x) one more,
    // pays one.
    assert_eq!(layout(&p.aux[0]), "[9:32->64,s2] [18:64->1280,s2]");
    // Unit 3: 3 + 7.5 = 10.5 -> 10.
    assert_eq!(layout(&p.aux[3]), "[10:24->64,s2] [18:64->1280,s2]");
    assert_eq!(layout(&p.aux[4]), "[11:32->96,s2] [18:96->1280,s2]");
    // Unit 14 (8x): nothing left to downsample, 160 -> 1280 channels or not (a counter of
    // channel ratios, the reference's CIFAR rule, would halve here: 1280 / 160 = 8).
    assert_eq!(layout(&p.aux[14]), "[16:160->160,s1] [18:160->1280,s1]");
    Ok(())
}

#[test]
fn auxiliary_networks_train() -> anyhow::Result<()> {
    let (store, pb) = seeded(2);
    let losses = auglocal_step(Box::new(MobileNetV2::new(10, &pb)?), &pb, 2, 2, 32)?;
    // K = 19 - 2 with the pyramid; every module reports a loss.
    assert_eq!(losses.len(), 17);
    // A copy of an inverted residual block keeps the copied block's expansion (6 for
    // unit 9: 32 -> 192 hidden channels); a copy of the last unit is its 1x1 conv.
    let shape = |name: &str| store.get(name).map(|e| e.var.dims().to_vec());
    assert_eq!(
        shape("aux.0.blocks.0.conv1.weight"),
        Some(vec![192, 32, 1, 1])
    );
    assert_eq!(
        shape("aux.0.blocks.1.conv.weight"),
        Some(vec![1280, 64, 1, 1])
    );
    Ok(())
}
