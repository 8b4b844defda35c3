//! Classification metrics with scikit-learn semantics.

use std::collections::BTreeSet;

/// Fraction of positions where `y_pred` equals `y_true` (0 for empty input).
///
/// # Panics
/// When the slices differ in length.
pub fn accuracy(y_true: &[i64], y_pred: &[i64]) -> f64 {
    assert_eq!(y_true.len(), y_pred.len(), "y_true and y_pred differ in length");
    if y_true.is_empty() {
        return 0.0;
    }
    let hits = y_true.iter().zip(y_pred).filter(|(t, p)| t == p).count();
    hits as f64 / y_true.len() as f64
}

/// Per-class F1 over the labels present in `y_true` ∪ `y_pred`, sorted ascending
/// (`sklearn.metrics.f1_score(average=None)`); a class with no true positives scores 0.
pub fn f1_per_class(y_true: &[i64], y_pred: &[i64]) -> Vec<(i64, f64)> {
    assert_eq!(y_true.len(), y_pred.len(), "y_true and y_pred differ in length");
    let labels: BTreeSet<i64> = y_true.iter().chain(y_pred).copied().collect();
    labels
        .into_iter()
        .map(|c| {
            let mut tp = 0usize;
            let mut fp = 0usize;
            let mut fn_ = 0usize;
            for (&t, &p) in y_true.iter().zip(y_pred) {
                match (t == c, p == c) {
                    (true, true) => tp += 1,
                    (false, true) => fp += 1,
                    (true, false) => fn_ += 1,
                    (false, false) => {}
                }
            }
            // F1 = 2tp / (2tp + fp + fn); 0 when undefined (sklearn's zero_division=0).
            let denom = 2 * tp + fp + fn_;
            let f1 = if denom == 0 { 0.0 } else { 2.0 * tp as f64 / denom as f64 };
            (c, f1)
        })
        .collect()
}

/// Macro-averaged F1 (`sklearn.metrics.f1_score(average="macro")`): the unweighted mean of
/// [`f1_per_class`]; 0 for empty input.
pub fn f1_macro(y_true: &[i64], y_pred: &[i64]) -> f64 {
    let per = f1_per_class(y_true, y_pred);
    if per.is_empty() {
        return 0.0;
    }
    per.iter().map(|(_, f)| f).sum::<f64>() / per.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn accuracy_by_hand() {
        assert!(close(accuracy(&[0, 1, 1, 0], &[0, 1, 0, 0]), 0.75));
        assert!(close(accuracy(&[2, 2], &[2, 2]), 1.0));
        assert!(close(accuracy(&[], &[]), 0.0));
    }

    #[test]
    fn f1_binary_by_hand() {
        // class 0: tp=2 fp=1 fn=1 -> 4/6; class 1: tp=1 fp=1 fn=1 -> 2/4.
        let t = [0, 0, 0, 1, 1];
        let p = [0, 0, 1, 0, 1];
        let per = f1_per_class(&t, &p);
        assert_eq!(per.len(), 2);
        assert!(close(per[0].1, 4.0 / 6.0));
        assert!(close(per[1].1, 0.5));
        assert!(close(f1_macro(&t, &p), (4.0 / 6.0 + 0.5) / 2.0));
    }

    #[test]
    fn f1_multiclass_by_hand() {
        // sklearn: f1_score([0,1,2,0,1,2],[0,2,1,0,0,1],average='macro') = 0.26666...
        // class 0: tp=2 fp=1 fn=0 -> 0.8; class 1: tp=0 -> 0; class 2: tp=0 -> 0.
        let t = [0, 1, 2, 0, 1, 2];
        let p = [0, 2, 1, 0, 0, 1];
        assert!(close(f1_macro(&t, &p), 0.8 / 3.0));
    }

    #[test]
    fn f1_counts_predicted_only_and_never_predicted_classes() {
        // Class 3 is only predicted (F1 0), class 1 is never predicted (F1 0).
        // class 0: tp=2 fp=0 fn=0 -> 1; class 1: tp=0 -> 0; class 3: tp=0 -> 0.
        let t = [0, 0, 1];
        let p = [0, 0, 3];
        let per = f1_per_class(&t, &p);
        assert_eq!(per.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1, 3]);
        assert!(close(f1_macro(&t, &p), 1.0 / 3.0));
        // All wrong, single-class truth: both classes score 0.
        assert!(close(f1_macro(&[1, 1], &[0, 0]), 0.0));
        assert!(close(f1_macro(&[1, 1], &[1, 1]), 1.0));
    }
}
