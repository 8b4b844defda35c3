//! Micro-batches for causal-LM training: right-padded ids and, computed on the host so no
//! device sync is needed, the positions whose next token carries a label.

use tch::{Device, Kind, Tensor};

use crate::conversation::{TokenizedExample, IGNORE_INDEX};

/// One micro-batch on the device.
pub(crate) struct LmBatch {
    /// `[batch, seq]` token ids, right-padded.
    pub input_ids: Tensor,
    /// Flat indices into the `[batch · (seq − 1)]` shifted positions whose next token is
    /// a label.
    pub positions: Tensor,
    /// The labels of those positions (the next tokens), `[n]`.
    pub targets: Tensor,
    /// Label tokens in the batch (`n`).
    pub label_tokens: usize,
    /// Real (non-padding) tokens in the batch.
    pub tokens: usize,
}

/// Builds the micro-batch of `examples[idx]`, padded with `pad_id`.
pub(crate) fn make_batch(
    examples: &[TokenizedExample],
    idx: &[usize],
    pad_id: i64,
    device: Device,
) -> LmBatch {
    let width = idx.iter().map(|&i| examples[i].input_ids.len()).max().unwrap_or(1).max(2);
    let mut ids = Vec::with_capacity(idx.len() * width);
    let (mut positions, mut targets) = (Vec::new(), Vec::new());
    let mut tokens = 0;
    for (row, &i) in idx.iter().enumerate() {
        let ex = &examples[i];
        tokens += ex.input_ids.len();
        ids.extend_from_slice(&ex.input_ids);
        ids.resize((row + 1) * width, pad_id);
        // Position t (of the shifted width − 1) predicts token t + 1.
        for (t, &label) in ex.labels.iter().enumerate().skip(1) {
            if label != IGNORE_INDEX {
                positions.push((row * (width - 1) + t - 1) as i64);
                targets.push(label);
            }
        }
    }
    let to_dev = |v: &[i64]| Tensor::from_slice(v).to_device(device);
    LmBatch {
        input_ids: to_dev(&ids).view([idx.len() as i64, width as i64]),
        label_tokens: positions.len(),
        positions: to_dev(&positions),
        targets: to_dev(&targets),
        tokens,
    }
}

/// The micro-batch of `examples[idx]` in fixed shapes for the trainer's `cuda_graphs` path:
/// `[batch, width]` ids, right-padded with `pad_id` to the longest row rounded up to a
/// multiple of `pad_multiple`, and `[batch · (width − 1)]` targets of every shifted
/// position (`IGNORE_INDEX` where the next token carries no label), so the shapes depend on
/// the batch size and padded width only. Returns them on `device` with the real tokens.
pub(crate) fn make_staged_batch(
    examples: &[TokenizedExample],
    idx: &[usize],
    (pad_id, pad_multiple): (i64, usize),
    device: Device,
) -> (Tensor, Tensor, usize) {
    let longest = idx.iter().map(|&i| examples[i].input_ids.len()).max().unwrap_or(1).max(2);
    let width = longest.next_multiple_of(pad_multiple.max(1));
    let mut ids = vec![pad_id; idx.len() * width];
    let mut targets = vec![IGNORE_INDEX; idx.len() * (width - 1)];
    let mut tokens = 0;
    for (row, &i) in idx.iter().enumerate() {
        let ex = &examples[i];
        tokens += ex.input_ids.len();
        ids[row * width..row * width + ex.input_ids.len()].copy_from_slice(&ex.input_ids);
        // Position t (of the shifted width − 1) predicts token t + 1.
        for (t, &label) in ex.labels.iter().enumerate().skip(1) {
            targets[row * (width - 1) + t - 1] = label;
        }
    }
    let ids = Tensor::from_slice(&ids).view([idx.len() as i64, width as i64]).to_device(device);
    (ids, Tensor::from_slice(&targets).to_device(device), tokens)
}

/// [`summed_loss`] over every shifted position of a staged batch (`targets` from
/// [`make_staged_batch`]; ignored positions add nothing): fixed shapes, at the cost of the
/// output projection of prompt and padding tokens too (as HF computes it).
pub(crate) fn summed_loss_all_positions(
    hidden: &Tensor,
    targets: &Tensor,
    head: impl Fn(&Tensor) -> Tensor,
) -> Tensor {
    let (b, t, h) = hidden.size3().unwrap_or((1, 1, 1));
    let shifted = hidden.narrow(1, 0, t - 1).reshape([1, b * (t - 1), h]);
    let logits = head(&shifted).squeeze_dim(0).to_kind(Kind::Float);
    logits.cross_entropy_loss::<Tensor>(targets, None, tch::Reduction::Sum, IGNORE_INDEX, 0.0)
}

/// Summed cross-entropy (f32) of the labelled positions, from the last hidden states
/// `[batch, seq, hidden]`: only those positions go through the output projection, so the
/// `[batch, seq, vocab]` logits of prompt and padding tokens are never built.
pub(crate) fn summed_loss(
    hidden: &Tensor,
    batch: &LmBatch,
    head: impl Fn(&Tensor) -> Tensor,
) -> Tensor {
    let (b, t, h) = hidden.size3().unwrap_or((1, 1, 1));
    let shifted = hidden.narrow(1, 0, t - 1).reshape([b * (t - 1), h]);
    let selected = shifted.index_select(0, &batch.positions).unsqueeze(0);
    let logits = head(&selected).squeeze_dim(0).to_kind(Kind::Float);
    logits.cross_entropy_loss::<Tensor>(
        &batch.targets,
        None,
        tch::Reduction::Sum,
        IGNORE_INDEX,
        0.0,
    )
}

/// A stable FNV-1a fingerprint of the examples (ids, labels, order): a resumed run refuses
/// data that changed since its checkpoint.
pub(crate) fn fingerprint(examples: &[TokenizedExample]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |v: i64| {
        for b in v.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for ex in examples {
        eat(ex.input_ids.len() as i64);
        ex.input_ids.iter().chain(&ex.labels).for_each(|&v| eat(v));
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[i64], labels: &[i64]) -> TokenizedExample {
        TokenizedExample { input_ids: ids.to_vec(), labels: labels.to_vec() }
    }

    #[test]
    fn batch_pads_right_and_selects_shifted_label_positions() {
        let data = [ex(&[5, 6, 7], &[-100, 6, 7]), ex(&[8, 9, 10, 11], &[-100, -100, -100, 11])];
        let b = make_batch(&data, &[0, 1], 0, Device::Cpu);
        assert_eq!(
            Vec::<i64>::try_from(b.input_ids.view([-1])).unwrap(),
            vec![5, 6, 7, 0, 8, 9, 10, 11]
        );
        // Row 0: positions 0, 1 predict 6, 7; row 1: position 2 (offset 3) predicts 11.
        assert_eq!(Vec::<i64>::try_from(&b.positions).unwrap(), vec![0, 1, 5]);
        assert_eq!(Vec::<i64>::try_from(&b.targets).unwrap(), vec![6, 7, 11]);
        assert_eq!((b.label_tokens, b.tokens), (3, 7));
    }

    #[test]
    fn summed_loss_equals_full_logits_cross_entropy() {
        tch::manual_seed(0);
        let data = [ex(&[1, 2, 3, 4], &[-100, 2, 3, 4]), ex(&[3, 1], &[-100, 1])];
        let b = make_batch(&data, &[0, 1], 0, Device::Cpu);
        let hidden = Tensor::randn([2, 4, 3], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
        let head = |x: &Tensor| x.linear::<Tensor>(&w, None);
        let ours = summed_loss(&hidden, &b, head).double_value(&[]);
        // Reference: full logits, shifted labels, padding ignored.
        let logits = head(&hidden).narrow(1, 0, 3).reshape([-1, 5]);
        let labels = Tensor::from_slice(&[2i64, 3, 4, 1, -100, -100]);
        let want = logits
            .cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Sum, -100, 0.0)
            .double_value(&[]);
        assert!((ours - want).abs() < 1e-5, "{ours} vs {want}");
    }

    #[test]
    fn fingerprint_sees_ids_labels_and_order() {
        let a = vec![ex(&[1, 2], &[-100, 2]), ex(&[3], &[3])];
        let f = fingerprint(&a);
        let mut b = a.clone();
        b.swap(0, 1);
        let mut c = a.clone();
        c[0].labels[1] = -100;
        assert_ne!(f, fingerprint(&b));
        assert_ne!(f, fingerprint(&c));
        assert_eq!(f, fingerprint(&a));
    }
}
