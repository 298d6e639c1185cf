//! Seeds for per-item random generators.
//!
//! Every random stream in this crate (an epoch's shuffle, one image's crop, one synthetic
//! image) gets its own ChaCha8 generator seeded from the integers that identify it. That makes
//! each item a pure function of those integers: parallel work and resumed epochs reproduce the
//! same bytes whatever the thread count or starting point.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Domain tags keep streams that share the other integers apart.
pub(crate) const SHUFFLE: u64 = 0x5348_5546_464c_4531;
pub(crate) const AUGMENT: u64 = 0x4155_474d_454e_5431;
pub(crate) const SYNTHETIC: u64 = 0x5359_4e54_4845_5431;

/// SplitMix64's finaliser: a bijection that spreads every input bit over the output, so
/// neighbouring indices give unrelated seeds.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Folds the parts in order, so (a, b) and (b, a) give different seeds.
pub(crate) fn mix(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x243f_6a88_85a3_08d3, |hash, &part| splitmix64(hash ^ part))
}

/// A generator for the stream identified by `parts`.
pub(crate) fn rng(parts: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_values_matter() {
        assert_ne!(mix(&[1, 2]), mix(&[2, 1]));
        assert_ne!(mix(&[0, 0]), mix(&[0, 1]));
        assert_eq!(mix(&[7, 8, 9]), mix(&[7, 8, 9]));
    }
}
