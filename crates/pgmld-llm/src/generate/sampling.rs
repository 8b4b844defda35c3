//! Choosing the next token from one position's logits, as Hugging Face's logits
//! processors do: repetition penalty (greedy and sampling), then temperature, top-k and
//! top-p when sampling.

use std::hash::{BuildHasher, Hasher};

use super::GenerationConfig;

/// SplitMix64: a tiny, fast generator with a fixed, documented output sequence, so a seed
/// reproduces the same sample on every platform and crate version.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator seeded from the process's random hasher keys and the clock.
    pub fn from_entropy() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        hasher.write_u64(nanos);
        SplitMix64::new(hasher.finish())
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Turns logits into the next token for one generation request, remembering the tokens
/// seen so far for the repetition penalty.
#[derive(Debug)]
pub struct LogitsProcessor {
    repetition_penalty: f64,
    sampling: bool,
    temperature: f64,
    top_k: usize,
    top_p: f64,
    rng: SplitMix64,
    /// `seen[id]`: whether `id` occurred in prompt or output.
    seen: Vec<bool>,
    /// The ids set in `seen`, so the penalty costs O(distinct tokens), not O(vocab).
    seen_ids: Vec<usize>,
    /// Reused buffer of (probability or score, id) candidates.
    candidates: Vec<(f32, u32)>,
}

impl LogitsProcessor {
    /// A processor for `cfg` over a vocabulary of `vocab` tokens, with `prompt` already seen.
    pub fn new(cfg: &GenerationConfig, vocab: usize, prompt: &[i64]) -> Self {
        let mut processor = LogitsProcessor {
            repetition_penalty: cfg.repetition_penalty,
            sampling: cfg.is_sampling(),
            temperature: cfg.temperature,
            top_k: cfg.top_k.unwrap_or(0),
            top_p: cfg.top_p,
            rng: cfg.seed.map_or_else(SplitMix64::from_entropy, SplitMix64::new),
            seen: vec![false; vocab],
            seen_ids: Vec::new(),
            candidates: Vec::new(),
        };
        prompt.iter().for_each(|&id| processor.observe(id));
        processor
    }

    /// Records `token` as part of the sequence (for the repetition penalty).
    pub fn observe(&mut self, token: i64) {
        if let Some(seen) = usize::try_from(token).ok().and_then(|i| self.seen.get_mut(i)) {
            if !*seen {
                *seen = true;
                self.seen_ids.push(token as usize);
            }
        }
    }

    /// The next token for `scores` (one position's logits, modified in place).
    pub fn next_token(&mut self, scores: &mut [f32]) -> i64 {
        if self.repetition_penalty != 1.0 {
            let penalty = self.repetition_penalty as f32;
            for &id in &self.seen_ids {
                if let Some(score) = scores.get_mut(id) {
                    *score = if *score < 0.0 { *score * penalty } else { *score / penalty };
                }
            }
        }
        if !self.sampling {
            return argmax(scores) as i64;
        }
        self.sample(scores)
    }

    /// Temperature, top-k, top-p, then a draw from what remains.
    fn sample(&mut self, scores: &[f32]) -> i64 {
        let inv_temperature = (1.0 / self.temperature) as f32;
        let candidates = &mut self.candidates;
        candidates.clear();
        candidates.extend(
            scores
                .iter()
                .enumerate()
                .filter(|(_, s)| s.is_finite())
                .map(|(i, &s)| (s * inv_temperature, i as u32)),
        );
        if candidates.is_empty() {
            return argmax(scores) as i64;
        }
        let descending = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0);
        if self.top_k > 0 && self.top_k < candidates.len() {
            candidates.select_nth_unstable_by(self.top_k - 1, descending);
            let threshold = candidates[self.top_k - 1].0;
            // HF keeps every token tied with the k-th score.
            candidates.retain(|c| c.0 >= threshold);
        }
        // Softmax over the survivors.
        let max = candidates.iter().map(|c| c.0).fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0f64;
        for c in candidates.iter_mut() {
            c.0 = (c.0 - max).exp();
            total += c.0 as f64;
        }
        let mut mass = total;
        if self.top_p < 1.0 {
            // HF keeps a token when the probability mass ranked strictly above it is below
            // top_p. A token with p <= (1 - top_p) / n has at least 1 - n·p >= top_p above
            // it, so it can be dropped before sorting.
            let floor = ((1.0 - self.top_p) / candidates.len() as f64 * total) as f32;
            candidates.retain(|c| c.0 > floor);
            candidates.sort_unstable_by(descending);
            let limit = self.top_p * total;
            let mut above = 0.0f64;
            let mut keep = 0;
            for c in candidates.iter() {
                if keep > 0 && above >= limit {
                    break;
                }
                above += c.0 as f64;
                keep += 1;
            }
            candidates.truncate(keep);
            mass = above;
        }
        let mut target = self.rng.next_f64() * mass;
        for c in candidates.iter() {
            target -= c.0 as f64;
            if target < 0.0 {
                return c.1 as i64;
            }
        }
        // Rounding left a sliver of mass: the last candidate takes it.
        candidates.last().map_or(0, |c| c.1 as i64)
    }
}

/// Index of the largest score (the first on ties; NaN never wins).
fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    let mut best_score = f32::NEG_INFINITY;
    for (i, &s) in scores.iter().enumerate() {
        if s > best_score {
            best = i;
            best_score = s;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processor(cfg: GenerationConfig, vocab: usize, prompt: &[i64]) -> LogitsProcessor {
        cfg.validate().unwrap();
        LogitsProcessor::new(&cfg, vocab, prompt)
    }

    fn sampling(seed: u64) -> GenerationConfig {
        GenerationConfig { do_sample: true, seed: Some(seed), ..GenerationConfig::default() }
    }

    #[test]
    fn splitmix_is_reproducible_and_uniformish() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let xs: Vec<f64> = (0..1000).map(|_| a.next_f64()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert_eq!(xs, (0..1000).map(|_| b.next_f64()).collect::<Vec<_>>());
        let mean = xs.iter().sum::<f64>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");
        // The published SplitMix64 reference output for seed 0 starts with this value.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn greedy_picks_argmax() {
        let mut p = processor(GenerationConfig::default(), 4, &[]);
        assert_eq!(p.next_token(&mut [0.1, 3.0, f32::NAN, 2.9]), 1);
        assert_eq!(p.next_token(&mut [-1.0, -0.5, -2.0, -0.5]), 1, "first of tied maxima");
    }

    #[test]
    fn repetition_penalty_changes_choice_like_hf() {
        // Seen token 0 with logit 2.0 -> 2.0 / 1.2 = 1.67 < 1.9: token 1 wins.
        let cfg = GenerationConfig { repetition_penalty: 1.2, ..GenerationConfig::default() };
        let mut p = processor(cfg.clone(), 3, &[0]);
        let mut scores = [2.0, 1.9, -1.0];
        assert_eq!(p.next_token(&mut scores), 1);
        assert!((scores[0] - 2.0 / 1.2).abs() < 1e-6);
        // Negative logits are multiplied (made less likely), never divided.
        let mut p = processor(cfg.clone(), 3, &[2]);
        let mut scores = [-5.0, -5.5, -1.0];
        p.next_token(&mut scores);
        assert!((scores[2] - -1.2).abs() < 1e-6);
        // Without the penalty the repeated token wins.
        let mut p = processor(GenerationConfig::default(), 3, &[0]);
        assert_eq!(p.next_token(&mut [2.0, 1.9, -1.0]), 0);
        // Output tokens count too.
        let mut p = processor(cfg, 3, &[]);
        p.observe(0);
        assert_eq!(p.next_token(&mut [2.0, 1.9, -1.0]), 1);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_follows_softmax() {
        let logits = [1.0f32, 0.0, 2.0, -1.0];
        let draw = |seed| {
            let mut p = processor(sampling(seed), 4, &[]);
            (0..4000).map(|_| p.next_token(&mut logits.clone())).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        for (id, &l) in logits.iter().enumerate() {
            let freq = a.iter().filter(|&&t| t == id as i64).count() as f64 / a.len() as f64;
            let want = (l as f64).exp() / z;
            assert!((freq - want).abs() < 0.03, "token {id}: {freq} vs {want}");
        }
    }

    #[test]
    fn top_p_keeps_hf_nucleus() {
        // Probabilities 0.5, 0.3, 0.2.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let seen = |top_p: f64| {
            let mut p = processor(GenerationConfig { top_p, ..sampling(3) }, 3, &[]);
            let mut ids: Vec<i64> = (0..500).map(|_| p.next_token(&mut logits.clone())).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        assert_eq!(seen(0.6), vec![0, 1]);
        assert_eq!(seen(0.5), vec![0], "mass 0.5 above token 1 is not below top_p 0.5");
        assert_eq!(seen(0.81), vec![0, 1, 2]);
        assert_eq!(seen(1e-6), vec![0]);
    }

    #[test]
    fn top_k_and_temperature() {
        let logits = [3.0f32, 2.9, 2.8, -4.0];
        let mut p = processor(GenerationConfig { top_k: Some(2), ..sampling(5) }, 4, &[]);
        let ids: Vec<i64> = (0..300).map(|_| p.next_token(&mut logits.clone())).collect();
        assert!(ids.contains(&0) && ids.contains(&1) && !ids.contains(&2) && !ids.contains(&3));
        // A tiny temperature concentrates everything on the top token.
        let mut p = processor(GenerationConfig { temperature: 1e-3, ..sampling(5) }, 4, &[]);
        assert!((0..100).all(|_| p.next_token(&mut logits.clone()) == 0));
        // Temperature 0 means greedy even with do_sample.
        assert!(!GenerationConfig { temperature: 0.0, ..sampling(5) }.is_sampling());
    }
}
