//! Criterion benchmarks of the CPU ops a CIFAR ResNet step spends its time in: our
//! convolution (forward, and forward + both gradients) against Candle's, and BatchNorm.
//!
//! `cargo bench -p auglocal-core --bench ops` (RAYON_NUM_THREADS=2 to match the CI machine).

use auglocal_core::nn::{BatchNorm2d, Conv2d};
use auglocal_core::params::{ParamBuilder, ParamStore};
use candle_core::{Device, Tensor, Var};
use candle_nn::ModuleT;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// One benchmarked convolution: name, batch, channels in, channels out, image size,
/// kernel, stride, padding.
type ConvCase = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

const CONVS: &[ConvCase] = &[
    ("3x3 64->64 8x8", 128, 64, 64, 8, 3, 1, 1),
    ("3x3 16->16 32x32", 128, 16, 16, 32, 3, 1, 1),
    ("3x3 16->32 32x32 s2", 128, 16, 32, 32, 3, 2, 1),
    ("3x3 64->64 32x32 b64", 64, 64, 64, 32, 3, 1, 1),
    ("3x3 64->64 56x56 b16", 16, 64, 64, 56, 3, 1, 1),
];

fn conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d");
    group.sample_size(10);
    for &(name, n, cin, cout, size, k, stride, pad) in CONVS {
        let store = ParamStore::new();
        let layer = Conv2d::new(
            cin,
            cout,
            k,
            stride,
            pad,
            &ParamBuilder::new(&store, &Device::Cpu, 0),
        )
        .unwrap();
        let x = Var::from_tensor(
            &Tensor::randn(0f32, 1.0, (n, cin, size, size), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let out = (size + 2 * pad - k) / stride + 1;
        let macs = (n * cout * out * out * cin * k * k) as u64;
        group.throughput(Throughput::Elements(2 * macs)); // FLOPs of the forward pass
        group.bench_function(BenchmarkId::new("ours forward", name), |b| {
            b.iter(|| layer.forward_t(x.as_tensor(), true).unwrap())
        });
        group.bench_function(BenchmarkId::new("candle forward", name), |b| {
            b.iter(|| {
                x.as_tensor()
                    .conv2d(layer.weight(), pad, stride, 1, 1)
                    .unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("ours forward+backward", name), |b| {
            b.iter(|| {
                layer
                    .forward_t(x.as_tensor(), true)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("candle forward+backward", name), |b| {
            b.iter(|| {
                let y = x
                    .as_tensor()
                    .conv2d(layer.weight(), pad, stride, 1, 1)
                    .unwrap();
                y.sum_all().unwrap().backward().unwrap()
            })
        });
    }
    group.finish();
}

fn batch_norm(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_norm");
    group.sample_size(10);
    let store = ParamStore::new();
    let bn = BatchNorm2d::new(16, &ParamBuilder::new(&store, &Device::Cpu, 0)).unwrap();
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (128, 16, 32, 32), &Device::Cpu).unwrap())
        .unwrap();
    group.throughput(Throughput::Bytes((x.elem_count() * 4) as u64));
    group.bench_function("train forward+backward 128x16x32x32", |b| {
        b.iter(|| {
            bn.forward_relu(x.as_tensor(), true)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        })
    });
    group.bench_function("inference 128x16x32x32", |b| {
        b.iter(|| bn.forward_t(x.as_tensor(), false).unwrap())
    });
    group.finish();
}

criterion_group!(benches, conv, batch_norm);
criterion_main!(benches);
