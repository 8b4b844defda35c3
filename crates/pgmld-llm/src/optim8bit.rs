//! [`AdamW8bit`]: AdamW with block-wise 8-bit moments (bitsandbytes' `AdamW8bit`, HF
//! `optim` "adamw_bnb_8bit" / "adamw_8bit" / "paged_adamw_8bit"), and [`Optimizer`], the
//! choice between it and the f32 [`AdamW`] the trainer makes from `training_args.optim`.
//!
//! Each moment tensor is cut into blocks of 256 values; a block keeps one f32 absmax and
//! one byte per value: the index of the nearest entry of bitsandbytes' dynamic (tree)
//! quantisation map, signed for `exp_avg` and unsigned for `exp_avg_sq`. The dynamic map
//! spends its codes on a wide range of magnitudes (down to ~1e-7 of the block's absmax), so
//! small second moments do not round to zero and blow up the update. Every step
//! dequantises, does the f32 AdamW update, and requantises with fresh absmaxes. Tensors with
//! fewer than 4096 values keep f32 moments, as bitsandbytes' `min_8bit_size`.

use std::collections::HashMap;
use std::path::Path;

use tch::{nn, Device, Kind, Tensor};

use pgmld_train::optim::{
    adam_moments, decay_groups, AdamW, DEFAULT_BETA1, DEFAULT_BETA2, DEFAULT_EPS,
};
use pgmld_train::training_args::Optim;

use crate::{Error, Result};

/// Values per quantisation block (bitsandbytes' optimizer block size).
pub const BLOCK_SIZE: i64 = 256;
/// Tensors smaller than this keep f32 moments (bitsandbytes' `min_8bit_size`).
pub const MIN_8BIT_SIZE: i64 = 4096;

/// bitsandbytes' `create_dynamic_map(signed)`: 256 sorted code values in [-1, 1] (signed)
/// or [0, 1] (unsigned). Each decade `10^(i-6)` (i = 0..6) gets `2^i` (signed, per sign)
/// or `2^(i+1)` (unsigned) evenly spaced values, plus 0 and 1.
pub fn dynamic_map(signed: bool) -> Vec<f32> {
    let max_exponent_bits = 7;
    let mut data: Vec<f64> = Vec::with_capacity(256);
    for i in 0..max_exponent_bits {
        let fraction_items = if signed { (1usize << i) + 1 } else { (1usize << (i + 1)) + 1 };
        let scale = 10f64.powi(i - (max_exponent_bits - 1));
        // linspace(0.1, 1, fraction_items) in f32, then midpoints, as torch computes them.
        let boundaries: Vec<f32> = (0..fraction_items)
            .map(|k| (0.1 + 0.9 * k as f64 / (fraction_items - 1) as f64) as f32)
            .collect();
        for w in boundaries.windows(2) {
            let mean = ((w[0] + w[1]) / 2.0) as f64;
            data.push(scale * mean);
            if signed {
                data.push(-scale * mean);
            }
        }
    }
    data.push(0.0);
    data.push(1.0);
    let mut code: Vec<f32> = data.into_iter().map(|x| x as f32).collect();
    code.sort_by(f32::total_cmp);
    code
}

/// A block-wise quantisation map: its values and the midpoints between neighbours (the
/// nearest code of `x` is the number of midpoints below it).
#[derive(Debug)]
struct CodeBook {
    values: Tensor,
    midpoints: Tensor,
}

impl CodeBook {
    fn new(signed: bool, device: Device) -> Self {
        let values = Tensor::from_slice(&dynamic_map(signed)).to_device(device);
        let midpoints = (values.narrow(0, 0, 255) + values.narrow(0, 1, 255)) / 2.0;
        CodeBook { values, midpoints }
    }

    /// Quantises `x` (any shape, f32) block-wise: codes (uint8, padded to whole blocks)
    /// and one absmax per block.
    fn quantize(&self, x: &Tensor) -> Quantized {
        let flat = x.to_kind(Kind::Float).reshape([-1]);
        let n = flat.size()[0];
        let pad = (BLOCK_SIZE - n % BLOCK_SIZE) % BLOCK_SIZE;
        let blocks = flat.constant_pad_nd([0, pad]).view([-1, BLOCK_SIZE]);
        let absmax = blocks.abs().amax([1i64].as_slice(), true).clamp_min(1e-30);
        let normed = (&blocks / &absmax).contiguous();
        let codes = normed
            .searchsorted(&self.midpoints, false, false, "left", None::<Tensor>)
            .to_kind(Kind::Uint8);
        Quantized { codes, absmax: absmax.view([-1]) }
    }

    /// The f32 tensor of `shape` that `q` encodes.
    fn dequantize(&self, q: &Quantized, shape: &[i64]) -> Tensor {
        let numel: i64 = shape.iter().product();
        let values = self
            .values
            .index_select(0, &q.codes.view([-1]).to_kind(Kind::Int64))
            .view([-1, BLOCK_SIZE]);
        (values * q.absmax.unsqueeze(1)).view([-1]).narrow(0, 0, numel).view(shape)
    }
}

/// One block-quantised tensor.
#[derive(Debug)]
struct Quantized {
    /// `[blocks, BLOCK_SIZE]` uint8 code indices.
    codes: Tensor,
    /// `[blocks]` f32 scales.
    absmax: Tensor,
}

#[derive(Debug)]
enum Moments {
    F32 { exp_avg: Tensor, exp_avg_sq: Tensor },
    Q8 { exp_avg: Quantized, exp_avg_sq: Quantized },
}

#[derive(Debug)]
struct Param {
    name: String,
    tensor: Tensor,
    weight_decay: f64,
    moments: Option<Moments>,
    step: i64,
}

/// AdamW (`torch.optim.AdamW` semantics, as [`AdamW`]) with block-wise 8-bit moments for
/// every trainable variable of at least [`MIN_8BIT_SIZE`] values.
#[derive(Debug)]
pub struct AdamW8bit {
    params: Vec<Param>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    steps: i64,
    min_8bit_size: i64,
    signed: CodeBook,
    unsigned: CodeBook,
}

/// Name of the optimizer-wide step count in the saved state.
const STEP: &str = "step";

impl AdamW8bit {
    /// 8-bit AdamW over the trainable variables of `vs` (sorted by name), with weight decay
    /// `weight_decay` except on the variables `no_decay` picks, and the default β₁, β₂, ε.
    pub fn new(vs: &nn::VarStore, weight_decay: f64, no_decay: impl Fn(&str) -> bool) -> Self {
        let params = decay_groups(vs, weight_decay, no_decay)
            .into_iter()
            .map(|(name, tensor, weight_decay)| Param {
                name,
                tensor,
                weight_decay,
                moments: None,
                step: 0,
            })
            .collect();
        let device = vs.device();
        AdamW8bit {
            params,
            beta1: DEFAULT_BETA1,
            beta2: DEFAULT_BETA2,
            eps: DEFAULT_EPS,
            steps: 0,
            min_8bit_size: MIN_8BIT_SIZE,
            signed: CodeBook::new(true, device),
            unsigned: CodeBook::new(false, device),
        }
    }

    /// Sets β₁, β₂ and ε.
    pub fn with_hyperparams(mut self, beta1: f64, beta2: f64, eps: f64) -> Self {
        (self.beta1, self.beta2, self.eps) = (beta1, beta2, eps);
        self
    }

    /// Sets the size below which a tensor keeps f32 moments (1: quantise everything).
    pub fn with_min_8bit_size(mut self, min_8bit_size: i64) -> Self {
        self.min_8bit_size = min_8bit_size.max(1);
        self
    }

    /// The parameters updated, in update order.
    pub fn parameters(&self) -> impl Iterator<Item = &Tensor> {
        self.params.iter().map(|p| &p.tensor)
    }

    /// Optimizer steps taken.
    pub fn step_count(&self) -> i64 {
        self.steps
    }

    /// Bytes the moments take now (codes, absmaxes, f32 moments of small tensors).
    pub fn state_bytes(&self) -> u64 {
        let bytes = |t: &Tensor| t.numel() as u64 * t.kind().elt_size_in_bytes() as u64;
        self.params
            .iter()
            .filter_map(|p| p.moments.as_ref())
            .map(|m| match m {
                Moments::F32 { exp_avg, exp_avg_sq } => bytes(exp_avg) + bytes(exp_avg_sq),
                Moments::Q8 { exp_avg, exp_avg_sq } => {
                    bytes(&exp_avg.codes)
                        + bytes(&exp_avg.absmax)
                        + bytes(&exp_avg_sq.codes)
                        + bytes(&exp_avg_sq.absmax)
                }
            })
            .sum()
    }

    /// One update with learning rate `lr` from the parameters' current gradients
    /// (parameters without one are skipped).
    pub fn step(&mut self, lr: f64) {
        let (beta1, beta2, eps) = (self.beta1, self.beta2, self.eps);
        let (signed, unsigned, min_size) = (&self.signed, &self.unsigned, self.min_8bit_size);
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let grad = grad.to_kind(Kind::Float);
                if p.weight_decay != 0.0 {
                    p.tensor *= 1.0 - lr * p.weight_decay;
                }
                let shape = p.tensor.size();
                let (mut exp_avg, mut exp_avg_sq) = match &p.moments {
                    None => (grad.zeros_like(), grad.zeros_like()),
                    Some(Moments::F32 { exp_avg, exp_avg_sq }) => {
                        (exp_avg.shallow_clone(), exp_avg_sq.shallow_clone())
                    }
                    Some(Moments::Q8 { exp_avg, exp_avg_sq }) => (
                        signed.dequantize(exp_avg, &shape),
                        unsigned.dequantize(exp_avg_sq, &shape),
                    ),
                };
                p.step += 1;
                let (step_size, denom) = adam_moments(
                    &mut exp_avg,
                    &mut exp_avg_sq,
                    &grad,
                    p.step,
                    lr,
                    (beta1, beta2, eps),
                );
                let update = (&exp_avg * -step_size) / denom;
                let _ = p.tensor.g_add_(&update.to_kind(p.tensor.kind()));
                p.moments = Some(if p.tensor.numel() as i64 >= min_size {
                    Moments::Q8 {
                        exp_avg: signed.quantize(&exp_avg),
                        exp_avg_sq: unsigned.quantize(&exp_avg_sq),
                    }
                } else {
                    Moments::F32 { exp_avg, exp_avg_sq }
                });
            }
        });
        self.steps += 1;
    }

    /// Zeroes the gradients of the parameters.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.tensor.zero_grad();
        }
    }

    /// Writes the state as safetensors: per parameter `step.<name>` and either
    /// `exp_avg.<name>` / `exp_avg_sq.<name>` (f32) or their `….codes` / `….absmax`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let cpu = |t: &Tensor| t.to_device(Device::Cpu).contiguous();
        let mut named: Vec<(String, Tensor)> = vec![(STEP.into(), Tensor::from(self.steps))];
        for p in &self.params {
            let Some(m) = &p.moments else { continue };
            named.push((format!("step.{}", p.name), Tensor::from(p.step)));
            match m {
                Moments::F32 { exp_avg, exp_avg_sq } => {
                    named.push((format!("exp_avg.{}", p.name), cpu(exp_avg)));
                    named.push((format!("exp_avg_sq.{}", p.name), cpu(exp_avg_sq)));
                }
                Moments::Q8 { exp_avg, exp_avg_sq } => {
                    for (what, q) in [("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)] {
                        named.push((format!("{what}.codes.{}", p.name), cpu(&q.codes)));
                        named.push((format!("{what}.absmax.{}", p.name), cpu(&q.absmax)));
                    }
                }
            }
        }
        Tensor::write_safetensors(&named, path.as_ref())?;
        Ok(())
    }

    /// Restores the state [`AdamW8bit::save`] wrote; every tensor must belong to a
    /// parameter of this optimizer with a fitting shape.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bad = |m: String| Error::Invalid(format!("optimizer state {}: {m}", path.display()));
        let mut tensors: HashMap<String, Tensor> =
            Tensor::read_safetensors(path)?.into_iter().collect();
        let scalar = |t: Option<Tensor>, name: &str| -> Result<i64> {
            match t {
                Some(t) if t.kind() == Kind::Int64 && t.numel() == 1 => Ok(t.int64_value(&[])),
                _ => Err(bad(format!("{name} is missing or not an int64 scalar"))),
            }
        };
        let steps = scalar(tensors.remove(STEP), STEP)?;
        let mut restored = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let device = p.tensor.device();
            let Some(step) = tensors.remove(&format!("step.{}", p.name)) else {
                restored.push((None, 0));
                continue;
            };
            let step = scalar(Some(step), &p.name)?;
            let mut take = |key: String| tensors.remove(&key).map(|t| t.to_device(device));
            let f32_pair =
                (take(format!("exp_avg.{}", p.name)), take(format!("exp_avg_sq.{}", p.name)));
            let moments = match f32_pair {
                (Some(exp_avg), Some(exp_avg_sq))
                    if exp_avg.size() == p.tensor.size()
                        && exp_avg_sq.size() == p.tensor.size() =>
                {
                    Moments::F32 { exp_avg, exp_avg_sq }
                }
                (None, None) => {
                    let blocks = (p.tensor.numel() as i64 + BLOCK_SIZE - 1) / BLOCK_SIZE;
                    let mut quantized = |what: &str| -> Result<Quantized> {
                        let codes = take(format!("{what}.codes.{}", p.name));
                        let absmax = take(format!("{what}.absmax.{}", p.name));
                        match (codes, absmax) {
                            (Some(codes), Some(absmax))
                                if codes.size() == [blocks, BLOCK_SIZE]
                                    && absmax.size() == [blocks] =>
                            {
                                Ok(Quantized { codes, absmax })
                            }
                            _ => Err(bad(format!("{what} of {} is missing or misshapen", p.name))),
                        }
                    };
                    Moments::Q8 {
                        exp_avg: quantized("exp_avg")?,
                        exp_avg_sq: quantized("exp_avg_sq")?,
                    }
                }
                _ => return Err(bad(format!("moments of {} are incomplete or misshapen", p.name))),
            };
            restored.push((Some(moments), step));
        }
        if let Some(extra) = tensors.keys().min() {
            return Err(bad(format!("state for a variable the model lacks: {extra}")));
        }
        for (p, (moments, step)) in self.params.iter_mut().zip(restored) {
            p.moments = moments;
            p.step = step;
        }
        self.steps = steps;
        Ok(())
    }
}

/// The optimizer `training_args.optim` picks.
#[derive(Debug)]
pub enum Optimizer {
    /// `adamw_torch` / `adamw_hf`.
    F32(AdamW),
    /// The 8-bit choices.
    Bit8(AdamW8bit),
}

impl Optimizer {
    /// The optimizer `optim` names over the trainable variables of `vs`.
    pub fn new(
        optim: Optim,
        vs: &nn::VarStore,
        weight_decay: f64,
        no_decay: impl Fn(&str) -> bool,
    ) -> Self {
        if optim.is_8bit() {
            Optimizer::Bit8(AdamW8bit::new(vs, weight_decay, no_decay))
        } else {
            Optimizer::F32(AdamW::new(vs, weight_decay, no_decay))
        }
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        match self {
            Optimizer::F32(o) => o.step(lr),
            Optimizer::Bit8(o) => o.step(lr),
        }
    }

    /// Zeroes the parameters' gradients.
    pub fn zero_grad(&mut self) {
        match self {
            Optimizer::F32(o) => o.zero_grad(),
            Optimizer::Bit8(o) => o.zero_grad(),
        }
    }

    /// The parameters updated.
    pub fn parameters(&self) -> Vec<Tensor> {
        match self {
            Optimizer::F32(o) => o.parameters().map(Tensor::shallow_clone).collect(),
            Optimizer::Bit8(o) => o.parameters().map(Tensor::shallow_clone).collect(),
        }
    }

    /// Writes the state (see [`AdamW::save`], [`AdamW8bit::save`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        match self {
            Optimizer::F32(o) => Ok(o.save(path)?),
            Optimizer::Bit8(o) => o.save(path),
        }
    }

    /// Restores a state written by the same kind of optimizer.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        match self {
            Optimizer::F32(o) => Ok(o.load(path)?),
            Optimizer::Bit8(o) => o.load(path),
        }
    }
}

impl pgmld_train::StepOptimizer for Optimizer {
    type Error = Error;

    fn step(&mut self, lr: f64) {
        Optimizer::step(self, lr)
    }

    fn zero_grad(&mut self) {
        Optimizer::zero_grad(self)
    }

    fn save(&self, path: &Path) -> Result<()> {
        Optimizer::save(self, path)
    }

    fn load(&mut self, path: &Path) -> Result<()> {
        Optimizer::load(self, path)
    }

    /// The f32 AdamW stages; the 8-bit ones step eagerly.
    fn staged(&mut self) -> Option<&mut AdamW> {
        match self {
            Optimizer::F32(adamw) => Some(adamw),
            Optimizer::Bit8(_) => None,
        }
    }
}

#[cfg(test)]
mod tests;
