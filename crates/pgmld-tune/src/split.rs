//! Train/test split of the relation's rows (`test_size`, `test_sampling`).

use pgmld_train::batching::Rng;

use crate::error::{Result, TuneError};
use crate::options::{Sampling, TestSize};

/// Row indices of each side, each in the relation's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Rows to train on.
    pub train: Vec<usize>,
    /// Rows to evaluate on.
    pub test: Vec<usize>,
}

/// Number of test rows out of `n`: a fraction rounds up (as scikit-learn's
/// `train_test_split`), a count is taken as is. Errors when nothing would be left to train.
pub fn test_count(n: usize, size: TestSize) -> Result<usize> {
    let k = match size {
        TestSize::Fraction(f) => (f * n as f64).ceil() as usize,
        TestSize::Rows(k) => k,
    };
    if k >= n {
        return Err(TuneError::bad(
            format!("test_size {} leaves no training rows out of {n}", describe(size)),
            "Use a smaller test_size, or add rows to the relation.",
        ));
    }
    Ok(k)
}

fn describe(size: TestSize) -> String {
    match size {
        TestSize::Fraction(f) => f.to_string(),
        TestSize::Rows(k) => k.to_string(),
    }
}

/// Splits rows whose class keys are `classes` (any stable per-class id, used by
/// `Stratified`). `seed` drives `Random` and `Stratified`.
pub fn split(classes: &[usize], size: TestSize, sampling: Sampling, seed: u64) -> Result<Split> {
    let n = classes.len();
    let k = test_count(n, size)?;
    let mut is_test = vec![false; n];
    match sampling {
        Sampling::First => is_test[..k].iter_mut().for_each(|t| *t = true),
        Sampling::Last => is_test[n - k..].iter_mut().for_each(|t| *t = true),
        Sampling::Random => {
            let mut idx: Vec<usize> = (0..n).collect();
            Rng(seed).shuffle(&mut idx);
            idx[..k].iter().for_each(|&i| is_test[i] = true);
        }
        Sampling::Stratified => {
            for i in stratified_test(classes, k, seed) {
                is_test[i] = true;
            }
        }
    }
    let (mut train, mut test) = (Vec::with_capacity(n - k), Vec::with_capacity(k));
    for (i, t) in is_test.into_iter().enumerate() {
        if t {
            test.push(i)
        } else {
            train.push(i)
        }
    }
    Ok(Split { train, test })
}

/// `k` test rows spread over the classes in proportion to their sizes (largest remainders
/// get the rounding), each class's rows drawn at random.
fn stratified_test(classes: &[usize], k: usize, seed: u64) -> Vec<usize> {
    let n = classes.len();
    let groups = classes.iter().copied().max().map_or(0, |m| m + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
    for (i, &c) in classes.iter().enumerate() {
        members[c].push(i);
    }
    let exact: Vec<f64> = members.iter().map(|m| k as f64 * m.len() as f64 / n as f64).collect();
    let mut quota: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..groups).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    let mut left = k - quota.iter().sum::<usize>();
    for &g in order.iter().cycle().take(groups * 2) {
        if left == 0 {
            break;
        }
        if quota[g] < members[g].len() {
            quota[g] += 1;
            left -= 1;
        }
    }
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(k);
    for (g, m) in members.iter_mut().enumerate() {
        rng.shuffle(m);
        out.extend_from_slice(&m[..quota[g]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_last_random_counts() {
        let classes = vec![0usize; 10];
        let s = split(&classes, TestSize::Fraction(0.2), Sampling::Last, 1).unwrap();
        assert_eq!(s.test, vec![8, 9]);
        assert_eq!(s.train, (0..8).collect::<Vec<_>>());
        let s = split(&classes, TestSize::Rows(3), Sampling::First, 1).unwrap();
        assert_eq!(s.test, vec![0, 1, 2]);
        let a = split(&classes, TestSize::Fraction(0.25), Sampling::Random, 7).unwrap();
        assert_eq!(a.test.len(), 3, "ceil(2.5)");
        assert_eq!(a, split(&classes, TestSize::Fraction(0.25), Sampling::Random, 7).unwrap());
        assert!(split(&classes, TestSize::Rows(10), Sampling::First, 1).is_err());
        let none = split(&classes, TestSize::Fraction(0.0), Sampling::Random, 1).unwrap();
        assert!(none.test.is_empty() && none.train.len() == 10);
    }

    #[test]
    fn stratified_keeps_each_class_share() {
        // 90 rows of class 0, 10 of class 1, sorted by class: a plain "last 20%" would
        // hold only class 1; stratified holds 18 + 2.
        let classes: Vec<usize> = (0..100).map(|i| usize::from(i >= 90)).collect();
        let s = split(&classes, TestSize::Fraction(0.2), Sampling::Stratified, 3).unwrap();
        assert_eq!(s.test.len(), 20);
        let ones = s.test.iter().filter(|&&i| classes[i] == 1).count();
        assert_eq!(ones, 2);
        let mut all: Vec<usize> = s.train.iter().chain(&s.test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        // Three classes with remainders: 7 test rows over sizes 5, 5, 5 → 3, 2, 2.
        let c3: Vec<usize> = (0..15).map(|i| i / 5).collect();
        let s = split(&c3, TestSize::Rows(7), Sampling::Stratified, 1).unwrap();
        let per: Vec<usize> =
            (0..3).map(|g| s.test.iter().filter(|&&i| c3[i] == g).count()).collect();
        assert_eq!(per.iter().sum::<usize>(), 7);
        assert!(per.iter().all(|&p| (2..=3).contains(&p)), "{per:?}");
    }
}
