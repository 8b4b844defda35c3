//! The stack every supported encoder shares: embeddings, then transformer layers, each run
//! on the hidden states with the attention mask. BERT, RoBERTa and DistilBERT differ only
//! in their embedding and layer types, so one [`Encoder`] serves them all, and gradient
//! checkpointing ([`crate::checkpointing`]) can run it one segment at a time.

use tch::Tensor;

/// Turns a `[batch, seq]` 0/1 attention mask into the boolean `[batch, 1, 1, seq]` mask
/// every encoder layer takes (true = attend).
pub fn attention_bool_mask(attention_mask: &Tensor) -> Tensor {
    let (b, s) = attention_mask.size2().expect("attention_mask must be [batch, seq]");
    attention_mask.ne(0).view([b, 1, 1, s])
}

/// Turns input ids (and token types, where the architecture has them) into hidden states.
pub trait EmbeddingLayer: std::fmt::Debug {
    /// `input_ids` `[batch, seq]` → `[batch, seq, hidden]`; dropout only when `train`.
    fn embed(&self, input_ids: &Tensor, token_type_ids: Option<&Tensor>, train: bool) -> Tensor;
}

/// One transformer layer.
pub trait EncoderLayer: std::fmt::Debug {
    /// `xs` `[batch, seq, hidden]`; `mask` boolean `[batch, 1, 1, seq]`, true = attend.
    fn run(&self, xs: &Tensor, mask: Option<&Tensor>, train: bool) -> Tensor;
}

/// Embeddings followed by transformer layers (no pooler or head).
#[derive(Debug)]
pub struct Encoder<E, L> {
    embeddings: E,
    layers: Vec<L>,
}

impl<E: EmbeddingLayer, L: EncoderLayer> Encoder<E, L> {
    /// An encoder from its parts.
    pub fn new(embeddings: E, layers: Vec<L>) -> Self {
        Encoder { embeddings, layers }
    }

    /// The embedding output: the first segment of a checkpointed forward pass.
    pub fn embed(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        self.embeddings.embed(input_ids, token_type_ids, train)
    }

    /// Number of transformer layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Runs transformer layer `i` alone (`mask` as from [`attention_bool_mask`]).
    pub fn layer_forward(
        &self,
        i: usize,
        xs: &Tensor,
        mask: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        self.layers[i].run(xs, mask, train)
    }

    /// Returns `last_hidden_state` `[batch, seq, hidden]`. `input_ids`, `attention_mask`
    /// (1 = token, 0 = padding) and `token_type_ids` are int64 `[batch, seq]`; dropout is
    /// active only when `train`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let mask = attention_mask.map(attention_bool_mask);
        let mut xs = self.embed(input_ids, token_type_ids, train);
        for layer in &self.layers {
            xs = layer.run(&xs, mask.as_ref(), train);
        }
        xs
    }
}
