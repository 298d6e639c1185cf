//! What the fuzz targets and their seed writer (`examples/seed.rs`) share: how one fuzz
//! input is cut into the files of a checkpoint, and the small model the checkpoint target
//! loads weights into.

use auglocal_core::nn::Linear;
use auglocal_core::{Owner, ParamBuilder, ParamStore};
use auglocal_models::resnet_cifar::BasicBlock;
use candle_core::Device;

/// The files of a checkpoint directory, as one fuzz input holds them.
pub struct CheckpointFiles<'a> {
    pub weights: &'a [u8],
    pub optimizer: &'a [u8],
    pub state: &'a [u8],
}

/// Cuts `data` into `model.safetensors`, `optimizer.safetensors` and `state.json`: a
/// little-endian `u32` length and that many bytes for each of the first two (cut short
/// where `data` ends), the rest for the third. Every input maps to some files.
pub fn split_checkpoint(data: &[u8]) -> CheckpointFiles<'_> {
    fn take(data: &[u8]) -> (&[u8], &[u8]) {
        let (len, rest) = data.split_at(data.len().min(4));
        let mut word = [0u8; 4];
        word[..len.len()].copy_from_slice(len);
        let n = (u32::from_le_bytes(word) as usize).min(rest.len());
        rest.split_at(n)
    }
    let (weights, rest) = take(data);
    let (optimizer, state) = take(rest);
    CheckpointFiles {
        weights,
        optimizer,
        state,
    }
}

/// The input [`split_checkpoint`] cuts back into these three files.
pub fn join_checkpoint(weights: &[u8], optimizer: &[u8], state: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    for file in [weights, optimizer] {
        data.extend((file.len() as u32).to_le_bytes());
        data.extend(file);
    }
    data.extend(state);
    data
}

/// A model small enough that a whole checkpoint of it is a few kB, with what the loader
/// treats differently: a backbone unit (a CIFAR ResNet block with a downsampling
/// projection, so convolutions and BatchNorm buffers, `num_batches_tracked` an i64), the
/// output layer and an auxiliary network (optional with `Coverage::Backbone`).
pub fn tiny_store() -> ParamStore {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, &Device::Cpu, 0);
    BasicBlock::new(2, 4, 2, &pb.owned_by(Owner::Unit(0)).pp("layer1").pp("0"))
        .expect("a 2-to-4-channel block builds");
    Linear::new(4, 3, true, &pb.owned_by(Owner::Head).pp("fc")).expect("a 4-to-3 layer builds");
    Linear::new(4, 3, true, &pb.owned_by(Owner::Aux(0)).pp("aux.0.fc"))
        .expect("a 4-to-3 layer builds");
    store
}
