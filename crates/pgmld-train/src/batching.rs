//! Seeded shuffling and length-grouped batching of training examples.

/// SplitMix64: small seeded generator for data shuffling and splits (independent of
/// libtorch, so the same seed gives the same order on every device). The field is the
/// state; start it from the seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Fisher-Yates shuffle in place.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// A seed derived from `seed` and `parts` (SplitMix64 applied in a chain): the same inputs
/// give the same seed on every run and device, nearby inputs unrelated ones.
pub fn derive_seed(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(Rng(seed).next_u64(), |h, &p| Rng(h ^ p).next_u64())
}

/// Length-grouped batches (as HF `group_by_length`): shuffle the indices, cut them into
/// chunks of 50 batches, sort each chunk by length (longest first), cut into batches, then
/// shuffle the batch order. Batches of similar lengths waste little padding. Shared by the
/// classification trainer and pgmld-llm's causal-LM trainer.
pub fn length_grouped_batches(
    lengths: &[usize],
    batch_size: usize,
    rng: &mut Rng,
) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut idx);
    let mut batches = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for chunk in idx.chunks_mut(50 * batch_size) {
        chunk.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        batches.extend(chunk.chunks(batch_size).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut batches);
    batches
}

/// The batches of epoch `epoch` (0-based): one generator seeded with `seed` draws every
/// epoch's order in turn, so the order depends on the seed and the epoch only, and a
/// resumed run replays the earlier epochs' draws (index shuffles: cheap) to get it.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let mut rng = Rng(seed);
    let mut batches = length_grouped_batches(lengths, batch_size, &mut rng);
    for _ in 0..epoch {
        batches = length_grouped_batches(lengths, batch_size, &mut rng);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_grouping_covers_every_index_once() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 37) % 128).collect();
        let b = length_grouped_batches(&lengths, 8, &mut Rng(7));
        assert_eq!(b.len(), 125);
        let mut all: Vec<usize> = b.concat();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        // Within a batch the lengths are sorted (longest first) and close together.
        let spread: usize = b.iter().map(|x| lengths[x[0]] - lengths[*x.last().unwrap()]).sum();
        assert!(spread / b.len() < 16, "mean spread {}", spread / b.len());
        // Seeded: same seed, same batches; other seed, other batches.
        assert_eq!(b, length_grouped_batches(&lengths, 8, &mut Rng(7)));
        assert_ne!(b, length_grouped_batches(&lengths, 8, &mut Rng(8)));
    }

    #[test]
    fn epochs_cover_every_example_once_and_differ() {
        let lengths: Vec<usize> = (0..37).map(|i| i % 11).collect();
        for epoch in 0..3 {
            let mut all: Vec<usize> = epoch_batches(&lengths, 4, 9, epoch).concat();
            all.sort_unstable();
            assert_eq!(all, (0..37).collect::<Vec<_>>());
        }
        assert_ne!(epoch_batches(&lengths, 4, 9, 0), epoch_batches(&lengths, 4, 9, 1));
        assert_eq!(
            epoch_batches(&lengths, 4, 9, 2),
            epoch_batches(&lengths, 4, 9, 2),
            "a resumed run recomputes it"
        );
    }

    #[test]
    fn derived_seeds_differ_by_every_part() {
        let s = derive_seed(42, &[1, 2]);
        assert_eq!(s, derive_seed(42, &[1, 2]));
        for other in [
            derive_seed(43, &[1, 2]),
            derive_seed(42, &[2, 1]),
            derive_seed(42, &[1, 3]),
            derive_seed(42, &[1]),
        ] {
            assert_ne!(s, other);
        }
    }
}
