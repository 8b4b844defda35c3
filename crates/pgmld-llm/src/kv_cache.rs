//! Key/value cache for generation: each layer keeps the rotated keys and the values of
//! every token seen so far, so a decode step only projects the new token.
//!
//! Buffers are preallocated `[batch, kv_heads, capacity, head_dim]` and grown by doubling,
//! so appending a token is an in-place copy into the next slot rather than a `cat` that
//! reallocates the whole history every step; attention reads a `narrow`ed view.

use tch::Tensor;

use crate::LlamaConfig;

/// Slots allocated at least, so short generations never regrow.
const MIN_CAPACITY: i64 = 64;

/// One layer's keys and values.
#[derive(Debug, Default)]
pub struct LayerCache {
    /// Keys `[batch, kv_heads, capacity, head_dim]`, filled up to `len`.
    keys: Option<Tensor>,
    /// Values, same layout as `keys`.
    values: Option<Tensor>,
    /// Tokens stored.
    len: i64,
    /// Slots to allocate on first use (a hint from [`KvCache::with_capacity`]).
    reserve: i64,
}

impl LayerCache {
    /// Tokens stored.
    pub fn len(&self) -> i64 {
        self.len
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots allocated.
    pub fn capacity(&self) -> i64 {
        self.keys.as_ref().map_or(0, |k| k.size()[2])
    }

    /// Appends `keys` / `values` (`[batch, kv_heads, new, head_dim]`) and returns views of
    /// everything stored so far, `[batch, kv_heads, len, head_dim]`.
    pub fn append(&mut self, keys: &Tensor, values: &Tensor) -> (Tensor, Tensor) {
        let size = keys.size();
        let new = size[2];
        let needed = self.len + new;
        if needed > self.capacity() {
            let capacity = needed.max(self.capacity() * 2).max(self.reserve).max(MIN_CAPACITY);
            let shape = [size[0], size[1], capacity, size[3]];
            let grow = |old: &Option<Tensor>, like: &Tensor| {
                let buffer = Tensor::empty(shape, (like.kind(), like.device()));
                if let Some(old) = old {
                    buffer.narrow(2, 0, self.len).copy_(&old.narrow(2, 0, self.len));
                }
                buffer
            };
            self.keys = Some(grow(&self.keys, keys));
            self.values = Some(grow(&self.values, values));
        }
        let (Some(all_keys), Some(all_values)) = (&self.keys, &self.values) else {
            unreachable!("buffers were allocated above");
        };
        all_keys.narrow(2, self.len, new).copy_(keys);
        all_values.narrow(2, self.len, new).copy_(values);
        self.len = needed;
        (all_keys.narrow(2, 0, needed), all_values.narrow(2, 0, needed))
    }

    /// Forgets the stored tokens, keeping the buffers for reuse.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// The caches of all layers of one model, for one batch of sequences being generated.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerCache>,
}

impl KvCache {
    /// An empty cache for a model of shape `cfg`; buffers are allocated on first use, on
    /// the device and dtype of the keys.
    pub fn new(cfg: &LlamaConfig) -> Self {
        Self::with_capacity(cfg, 0)
    }

    /// An empty cache that allocates room for `tokens` positions up front (generation
    /// knows prompt + budget, so it never has to regrow).
    pub fn with_capacity(cfg: &LlamaConfig, tokens: i64) -> Self {
        let layers = (0..cfg.num_hidden_layers.max(0))
            .map(|_| LayerCache { reserve: tokens, ..LayerCache::default() })
            .collect();
        KvCache { layers }
    }

    /// Tokens stored (the position of the next token).
    pub fn len(&self) -> i64 {
        self.layers.first().map_or(0, LayerCache::len)
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Layer `i`'s cache.
    ///
    /// # Panics
    /// If `i` is not below the model's layer count (a programming error).
    pub fn layer_mut(&mut self, i: usize) -> &mut LayerCache {
        &mut self.layers[i]
    }

    /// Forgets all stored tokens, keeping the buffers.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(LayerCache::clear);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn config(layers: i64) -> LlamaConfig {
        LlamaConfig::from_json_str(&format!(
            r#"{{"vocab_size":10,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":{layers},
                "num_attention_heads":2}}"#
        ))
        .unwrap()
    }

    #[test]
    fn append_returns_history_and_grows() {
        let mut cache = KvCache::new(&config(2));
        assert!(cache.is_empty());
        let mut expected_keys = Vec::new();
        for step in 0..(MIN_CAPACITY + 3) {
            let k = Tensor::full([1, 2, 1, 4], step as f64, (Kind::Float, Device::Cpu));
            let v = -&k;
            let (keys, values) = cache.layer_mut(0).append(&k, &v);
            expected_keys.push(k);
            assert_eq!(keys.size(), vec![1, 2, step + 1, 4]);
            let want = Tensor::cat(&expected_keys, 2);
            assert!(keys.equal(&want), "step {step}");
            assert!(values.equal(&-want));
        }
        assert_eq!(cache.layer_mut(0).len(), MIN_CAPACITY + 3);
        assert_eq!(cache.layer_mut(0).capacity(), MIN_CAPACITY * 2);
        assert_eq!(cache.len(), MIN_CAPACITY + 3);
        assert!(cache.layer_mut(1).is_empty());
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn reserved_capacity_is_allocated_once() {
        let mut cache = KvCache::with_capacity(&config(1), 300);
        let prompt = Tensor::zeros([1, 2, 10, 4], (Kind::Float, Device::Cpu));
        let _ = cache.layer_mut(0).append(&prompt, &prompt);
        assert_eq!(cache.layer_mut(0).capacity(), 300);
    }
}
