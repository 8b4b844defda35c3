//! Rotary position embeddings (RoPE) with Hugging Face's layout and scaling rules.
//!
//! HF checkpoints rotate the two *halves* of each head (`rotate_half`), not interleaved
//! pairs, so `q·cos + rotate_half(q)·sin` with `cos = cat(cos θ, cos θ)`. The inverse
//! frequencies follow `modeling_rope_utils`: plain `1 / theta^(2i/d)`, divided by `factor`
//! for `linear`, Llama 3's wavelength-dependent interpolation for `llama3`, and NTK-aware
//! base growth beyond `max_position_embeddings` for `dynamic`.
//!
//! cos/sin rows are cached in a table that grows on demand (doubling), so a decode step
//! is one `narrow` instead of recomputing trigonometry in every layer, and models with a
//! 128k context do not pay for 128k rows up front.

use std::f64::consts::PI;
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

use crate::{Error, LlamaConfig, Result};

/// Rows computed when the table is first built: covers typical chats without regrowth.
const INITIAL_TABLE_ROWS: i64 = 2048;

/// How the inverse frequencies depend on the configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scaling {
    /// No rescaling, or a static one already folded into the base frequencies.
    Static,
    /// NTK-aware: beyond `max_position` the base grows with the sequence length.
    Dynamic {
        /// Positions below this use the unscaled frequencies.
        max_position: i64,
    },
}

/// Inverse frequencies `[head_dim / 2]` as HF computes them for a sequence of `seq_len`
/// tokens (`seq_len` only matters for `dynamic` scaling).
pub fn inverse_frequencies(cfg: &LlamaConfig, seq_len: i64) -> Result<Vec<f64>> {
    let dim = cfg.head_dim();
    if dim <= 0 || dim % 2 != 0 {
        return Err(Error::Invalid(format!("head_dim {dim} must be positive and even for RoPE")));
    }
    if !(cfg.rope_theta.is_finite() && cfg.rope_theta > 0.0) {
        return Err(Error::Invalid(format!("rope_theta {} must be positive", cfg.rope_theta)));
    }
    let plain = |base: f64| -> Vec<f64> {
        (0..dim / 2).map(|i| 1.0 / base.powf((2 * i) as f64 / dim as f64)).collect()
    };
    let Some(scaling) = &cfg.rope_scaling else {
        return Ok(plain(cfg.rope_theta));
    };
    let factor = scaling.factor;
    if !(factor.is_finite() && factor > 0.0) {
        return Err(Error::Invalid(format!("rope_scaling.factor {factor} must be positive")));
    }
    match scaling.rope_type.as_str() {
        "default" => Ok(plain(cfg.rope_theta)),
        "linear" => Ok(plain(cfg.rope_theta).into_iter().map(|f| f / factor).collect()),
        "dynamic" => {
            let max_pos = cfg.max_position_embeddings as f64;
            let seq_len = (seq_len as f64).max(max_pos);
            let growth = (factor * seq_len / max_pos) - (factor - 1.0);
            let base = cfg.rope_theta * growth.powf(dim as f64 / (dim as f64 - 2.0));
            Ok(plain(base))
        }
        "llama3" => {
            let missing =
                |field: &str| Error::Invalid(format!("rope_scaling llama3 needs {field}"));
            let low = scaling.low_freq_factor.ok_or_else(|| missing("low_freq_factor"))?;
            let high = scaling.high_freq_factor.ok_or_else(|| missing("high_freq_factor"))?;
            let old_context = scaling
                .original_max_position_embeddings
                .ok_or_else(|| missing("original_max_position_embeddings"))?
                as f64;
            if high <= low {
                return Err(Error::Invalid(format!(
                    "rope_scaling high_freq_factor {high} must exceed low_freq_factor {low}"
                )));
            }
            Ok(plain(cfg.rope_theta)
                .into_iter()
                .map(|f| llama3_frequency(f, factor, low, high, old_context))
                .collect())
        }
        other => Err(Error::Unsupported(format!(
            "rope_scaling type {other:?} (supported: linear, dynamic, llama3)"
        ))),
    }
}

/// Llama 3.1's rule: long wavelengths are divided by `factor`, short ones kept, and the
/// band in between interpolated smoothly.
fn llama3_frequency(freq: f64, factor: f64, low: f64, high: f64, old_context: f64) -> f64 {
    let wavelen = 2.0 * PI / freq;
    let low_freq_wavelen = old_context / low;
    let high_freq_wavelen = old_context / high;
    if wavelen < high_freq_wavelen {
        freq
    } else if wavelen > low_freq_wavelen {
        freq / factor
    } else {
        let smooth = (old_context / wavelen - low) / (high - low);
        (1.0 - smooth) * freq / factor + smooth * freq
    }
}

/// `cos` and `sin` tables `[rows, head_dim]` for positions `start..start + rows`,
/// computed in f32 like HF (`positions ⊗ inv_freq`, duplicated over both halves).
fn cos_sin_rows(
    inv_freq: &[f64],
    start: i64,
    rows: i64,
    device: Device,
    kind: Kind,
) -> (Tensor, Tensor) {
    let inv: Vec<f32> = inv_freq.iter().map(|&f| f as f32).collect();
    let inv = Tensor::from_slice(&inv).to_device(device);
    let positions = Tensor::arange_start(start, start + rows, (Kind::Float, device));
    let angles = positions.unsqueeze(1) * inv.unsqueeze(0);
    let angles = Tensor::cat(&[&angles, &angles], 1);
    (angles.cos().to_kind(kind), angles.sin().to_kind(kind))
}

/// The cached rows.
#[derive(Debug)]
struct Table {
    cos: Tensor,
    sin: Tensor,
}

/// Per-model RoPE: the inverse frequencies and a growing cos/sin table on the model's
/// device and dtype.
#[derive(Debug)]
pub struct RotaryEmbedding {
    /// Frequencies used for positions inside the table (for `dynamic`: the unscaled ones).
    inv_freq: Vec<f64>,
    scaling: Scaling,
    /// The config, for recomputing `dynamic` frequencies per sequence length.
    config: LlamaConfig,
    device: Device,
    kind: Kind,
    table: Mutex<Table>,
}

impl RotaryEmbedding {
    /// Builds the embedding for `cfg`, with cos/sin in `kind` on `device` (HF casts them
    /// to the activations' dtype before rotating).
    pub fn new(cfg: &LlamaConfig, device: Device, kind: Kind) -> Result<Self> {
        let scaling = match &cfg.rope_scaling {
            Some(s) if s.rope_type == "dynamic" => {
                Scaling::Dynamic { max_position: cfg.max_position_embeddings }
            }
            _ => Scaling::Static,
        };
        let inv_freq = inverse_frequencies(cfg, cfg.max_position_embeddings)?;
        let rows = match scaling {
            Scaling::Dynamic { max_position, .. } => INITIAL_TABLE_ROWS.min(max_position),
            Scaling::Static => INITIAL_TABLE_ROWS,
        };
        let (cos, sin) = cos_sin_rows(&inv_freq, 0, rows, device, kind);
        Ok(RotaryEmbedding {
            inv_freq,
            scaling,
            config: cfg.clone(),
            device,
            kind,
            table: Mutex::new(Table { cos, sin }),
        })
    }

    /// The inverse frequencies used below the dynamic-scaling threshold.
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    /// `(cos, sin)`, each `[len, head_dim]`, for positions `start..start + len`.
    pub fn cos_sin(&self, start: i64, len: i64) -> (Tensor, Tensor) {
        let end = start + len;
        if let Scaling::Dynamic { max_position } = self.scaling {
            if end > max_position {
                // HF recomputes the base for the current length; later positions of one
                // sequence may thus see different frequencies, as they do there.
                let inv = inverse_frequencies(&self.config, end)
                    .unwrap_or_else(|_| self.inv_freq.clone());
                return cos_sin_rows(&inv, start, len, self.device, self.kind);
            }
        }
        let mut table = self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let rows = table.cos.size()[0];
        if end > rows {
            let new_rows = end.max(rows * 2);
            let (cos, sin) =
                cos_sin_rows(&self.inv_freq, rows, new_rows - rows, self.device, self.kind);
            table.cos = Tensor::cat(&[&table.cos, &cos], 0);
            table.sin = Tensor::cat(&[&table.sin, &sin], 0);
        }
        (table.cos.narrow(0, start, len), table.sin.narrow(0, start, len))
    }

    /// Rotates `q` and `k` (`[batch, heads, seq, head_dim]`) for positions starting at
    /// `start`.
    pub fn apply(&self, q: &Tensor, k: &Tensor, start: i64) -> (Tensor, Tensor) {
        let len = q.size()[2];
        let (cos, sin) = self.cos_sin(start, len);
        (apply_rotary(q, &cos, &sin), apply_rotary(k, &cos, &sin))
    }
}

/// HF's `rotate_half`: `[x1, x2] -> [-x2, x1]` over the last dimension.
pub fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size().last().copied().unwrap_or(0) / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    Tensor::cat(&[&x2.neg(), &x1], -1)
}

/// `x·cos + rotate_half(x)·sin`, with `cos`/`sin` `[seq, head_dim]` broadcast over batch
/// and heads.
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    x * cos + rotate_half(x) * sin
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RopeScaling;

    fn config(head_dim: i64, theta: f64, scaling: Option<RopeScaling>) -> LlamaConfig {
        let mut cfg = LlamaConfig::from_json_str(&format!(
            r#"{{"vocab_size":10,"hidden_size":{h},"intermediate_size":8,"num_hidden_layers":1,
                "num_attention_heads":1,"rope_theta":{theta},"max_position_embeddings":64}}"#,
            h = head_dim
        ))
        .unwrap();
        cfg.rope_scaling = scaling;
        cfg
    }

    #[test]
    fn rotation_matches_hand_computation() {
        let cfg = config(4, 100.0, None);
        let rope = RotaryEmbedding::new(&cfg, Device::Cpu, Kind::Double).unwrap();
        // inv_freq = [1, 1/100^(2/4)] = [1, 0.1]
        assert_eq!(rope.inv_freq(), &[1.0, 0.1]);
        let x = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0]).view([1, 1, 1, 4]);
        let pos = 3i64;
        let (q, _) = rope.apply(&x, &x, pos);
        let q: Vec<f64> = Vec::try_from(&q.view([-1])).unwrap();
        // Pairs (x[i], x[i + 2]) rotate by angle pos * inv_freq[i].
        let (a0, a1) = (pos as f64 * 1.0, pos as f64 * 0.1_f32 as f64);
        let expected = [
            1.0 * a0.cos() - 3.0 * a0.sin(),
            2.0 * a1.cos() - 4.0 * a1.sin(),
            3.0 * a0.cos() + 1.0 * a0.sin(),
            4.0 * a1.cos() + 2.0 * a1.sin(),
        ];
        for (got, want) in q.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{q:?} vs {expected:?}");
        }
    }

    #[test]
    fn table_grows_and_matches_direct_computation() {
        let cfg = config(8, 10000.0, None);
        let rope = RotaryEmbedding::new(&cfg, Device::Cpu, Kind::Float).unwrap();
        let (cos, sin) = rope.cos_sin(INITIAL_TABLE_ROWS + 5, 3);
        let (cos_ref, sin_ref) =
            cos_sin_rows(rope.inv_freq(), INITIAL_TABLE_ROWS + 5, 3, Device::Cpu, Kind::Float);
        assert!(cos.allclose(&cos_ref, 1e-6, 1e-6, false));
        assert!(sin.allclose(&sin_ref, 1e-6, 1e-6, false));
        assert_eq!(cos.size(), vec![3, 8]);
    }

    #[test]
    fn llama3_frequencies_match_hf_formula() {
        // Llama 3.1 8B's rope_scaling with head_dim 128, theta 500000.
        let scaling = RopeScaling {
            rope_type: "llama3".into(),
            factor: 8.0,
            low_freq_factor: Some(1.0),
            high_freq_factor: Some(4.0),
            original_max_position_embeddings: Some(8192),
        };
        let cfg = config(128, 500000.0, Some(scaling));
        let inv = inverse_frequencies(&cfg, 0).unwrap();
        // Reference values from a literal numpy transcription of HF's
        // `_compute_llama3_parameters` (float64): high band kept, low band / 8, the band
        // with wavelengths in [2048, 8192] (i = 29..=34) interpolated.
        let reference = [
            (0, 1.0),
            (20, 0.016560440080994446),
            (29, 0.002166570763503359),
            (32, 0.0005248461609929547),
            (34, 0.00017850781276799638),
            (40, 3.428102195952591e-05),
            (63, 3.068925988914511e-07),
        ];
        for (i, want) in reference {
            let got = inv[i];
            assert!(((got - want) / want).abs() < 1e-12, "inv_freq[{i}] = {got}, HF {want}");
        }
    }

    #[test]
    fn linear_and_dynamic_scaling() {
        let linear = RopeScaling {
            rope_type: "linear".into(),
            factor: 2.0,
            low_freq_factor: None,
            high_freq_factor: None,
            original_max_position_embeddings: None,
        };
        let cfg = config(4, 100.0, Some(linear));
        assert_eq!(inverse_frequencies(&cfg, 0).unwrap(), vec![0.5, 0.05]);

        let dynamic =
            RopeScaling { rope_type: "dynamic".into(), ..cfg.rope_scaling.clone().unwrap() };
        let cfg = config(4, 100.0, Some(dynamic));
        // Within max_position_embeddings (64) the base is unchanged.
        assert_eq!(inverse_frequencies(&cfg, 10).unwrap(), vec![1.0, 0.1]);
        // At 128 tokens: base = 100 * (2*128/64 - 1)^(4/2) = 900.
        let inv = inverse_frequencies(&cfg, 128).unwrap();
        assert!((inv[1] - 1.0 / 900f64.sqrt()).abs() < 1e-12, "{inv:?}");
        let rope = RotaryEmbedding::new(&cfg, Device::Cpu, Kind::Double).unwrap();
        let (cos, _) = rope.cos_sin(127, 1);
        let want = (127.0 * (1.0 / 30.0f32) as f64).cos();
        let got = cos.double_value(&[0, 1]);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn unknown_or_incomplete_scaling_is_rejected() {
        let yarn = RopeScaling {
            rope_type: "yarn".into(),
            factor: 2.0,
            low_freq_factor: None,
            high_freq_factor: None,
            original_max_position_embeddings: None,
        };
        let err = inverse_frequencies(&config(4, 100.0, Some(yarn.clone())), 0).unwrap_err();
        assert!(matches!(err, Error::Unsupported(ref m) if m.contains("yarn")), "{err}");
        let llama3 = RopeScaling { rope_type: "llama3".into(), ..yarn };
        let err = inverse_frequencies(&config(4, 100.0, Some(llama3)), 0).unwrap_err();
        assert!(err.to_string().contains("low_freq_factor"), "{err}");
    }
}
