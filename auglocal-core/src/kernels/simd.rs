//! What the x86-64 kernels share about the CPU: whether it has AVX2 and FMA, and how many
//! vector registers a register tile may use.

/// The vector registers the kernels may use. Both run 8-lane vectors; what differs is how
/// many registers hold a tile's accumulators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registers {
    /// AVX2's 16: tiles of 4 output channels x 2 (pixel vectors, or weight rows). Wider
    /// tiles need all 16 and the compiler spilled an accumulator: half speed.
    Avx2,
    /// AVX-512VL's 32: tiles of 4 x 4, half the loads per FMA.
    Avx512,
}

impl Registers {
    pub(crate) fn detect() -> Self {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
            Registers::Avx512
        } else {
            Registers::Avx2
        }
    }

    /// Pixel vectors of a forward tile, and weight rows of a weight-gradient tile.
    pub(crate) fn tile_width(self) -> usize {
        match self {
            Registers::Avx2 => 2,
            Registers::Avx512 => 4,
        }
    }
}

pub(crate) fn cpu_has_avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}
