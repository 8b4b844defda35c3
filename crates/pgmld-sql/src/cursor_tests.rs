use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Rows 1..=n as one-column integer rows, counting how many were pulled.
fn numbers(n: i64, pulled: Arc<AtomicUsize>) -> RowStream {
    struct Numbers(i64, i64, Arc<AtomicUsize>);
    impl Stream for Numbers {
        type Item = Result<Vec<Value>, SqlError>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.0 >= self.1 {
                return std::task::Poll::Ready(None);
            }
            self.0 += 1;
            self.2.fetch_add(1, Ordering::SeqCst);
            std::task::Poll::Ready(Some(Ok(vec![Value::Int(self.0)])))
        }
    }
    Box::pin(Numbers(0, n, pulled))
}

fn cursor(n: i64, scrollable: bool) -> (StreamCursor, Arc<AtomicUsize>) {
    let pulled = Arc::new(AtomicUsize::new(0));
    (StreamCursor::new(numbers(n, pulled.clone()), scrollable), pulled)
}

/// (rows, count) of one FETCH.
async fn fetch(c: &mut StreamCursor, d: Direction) -> Result<(Vec<i64>, u64), SqlError> {
    let mut rows = Vec::new();
    let n = c
        .fetch(d, false, |r| {
            if let Value::Int(i) = r[0] {
                rows.push(i)
            }
            Ok(())
        })
        .await?;
    Ok((rows, n))
}

use Count::{All, N};
use Direction::{Absolute, Backward, Forward, Relative};

#[tokio::test]
async fn forward_fetches_pull_only_what_they_return() {
    let (mut c, pulled) = cursor(3, false);
    assert_eq!(fetch(&mut c, Forward(N(1))).await.unwrap(), (vec![1], 1));
    assert_eq!(pulled.load(Ordering::SeqCst), 1);
    assert_eq!(fetch(&mut c, Forward(N(1))).await.unwrap(), (vec![2], 1));
    assert_eq!(fetch(&mut c, Forward(All)).await.unwrap(), (vec![3], 1));
    assert!(c.is_exhausted());
    assert_eq!(fetch(&mut c, Forward(N(1))).await.unwrap(), (vec![], 0));
    assert_eq!(fetch(&mut c, Forward(All)).await.unwrap(), (vec![], 0));
}

#[tokio::test]
async fn no_scroll_cursors_refuse_to_move_back() {
    let (mut c, _) = cursor(3, false);
    fetch(&mut c, Forward(N(2))).await.unwrap();
    for d in [
        Backward(N(1)),
        Backward(All),
        Absolute(1),
        Absolute(-1),
        Absolute(0),
        Relative(-1),
        Forward(N(0)),
    ] {
        let e = fetch(&mut c, d).await.unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            ("55000", "cursor can only scan forward"),
            "{d:?}"
        );
    }
    // Forward jumps are fine; MOVE 0 only asks whether the cursor is on a row.
    assert_eq!(fetch(&mut c, Absolute(3)).await.unwrap(), (vec![3], 1));
    assert_eq!(c.fetch(Forward(N(0)), true, |_| Ok(())).await.unwrap(), 1);
}

#[tokio::test]
async fn scrollable_cursors_move_as_postgres_cursors() {
    let (mut c, _) = cursor(5, true);
    assert_eq!(fetch(&mut c, Backward(N(1))).await.unwrap(), (vec![], 0));
    assert_eq!(fetch(&mut c, Forward(N(2))).await.unwrap(), (vec![1, 2], 2));
    assert_eq!(fetch(&mut c, Forward(N(0))).await.unwrap(), (vec![2], 1));
    assert_eq!(fetch(&mut c, Backward(All)).await.unwrap(), (vec![1], 1));
    assert_eq!(fetch(&mut c, Relative(3)).await.unwrap(), (vec![3], 1));
    assert_eq!(fetch(&mut c, Absolute(-2)).await.unwrap(), (vec![4], 1));
    assert_eq!(fetch(&mut c, Forward(N(5))).await.unwrap(), (vec![5], 1));
    // After the end, PRIOR is the last row.
    assert_eq!(fetch(&mut c, Backward(N(1))).await.unwrap(), (vec![5], 1));
    assert_eq!(fetch(&mut c, Absolute(9)).await.unwrap(), (vec![], 0));
    assert_eq!(fetch(&mut c, Relative(-2)).await.unwrap(), (vec![4], 1));
    assert_eq!(fetch(&mut c, Absolute(-9)).await.unwrap(), (vec![], 0));
    assert_eq!(fetch(&mut c, Forward(N(1))).await.unwrap(), (vec![1], 1));
    assert_eq!(fetch(&mut c, Absolute(0)).await.unwrap(), (vec![], 0));
    assert_eq!(fetch(&mut c, Relative(0)).await.unwrap(), (vec![], 0));
    assert_eq!(c.fetch(Forward(All), true, |_| panic!("MOVE emits nothing")).await.unwrap(), 5);
    assert_eq!(c.fetch(Backward(N(2)), true, |_| Ok(())).await.unwrap(), 2);
    assert_eq!(fetch(&mut c, Relative(1)).await.unwrap(), (vec![5], 1));
}

#[tokio::test]
async fn stream_errors_reach_the_fetch() {
    let rows: Vec<Result<Vec<Value>, SqlError>> =
        vec![Ok(vec![Value::Int(1)]), Err(SqlError::new(codes::QUERY_CANCELED, "stopped"))];
    struct Items(std::vec::IntoIter<Result<Vec<Value>, SqlError>>);
    impl Stream for Items {
        type Item = Result<Vec<Value>, SqlError>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    let mut c = StreamCursor::new(Box::pin(Items(rows.into_iter())), false);
    let mut seen = Vec::new();
    let e = c
        .fetch(Forward(All), false, |r| {
            seen.push(r.to_vec());
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, "57014");
    assert_eq!(seen, vec![vec![Value::Int(1)]]);
}

#[tokio::test]
async fn rows_known_at_once_stream_too() {
    let mut c =
        StreamCursor::new(rows_stream(vec![vec![Value::Int(7)], vec![Value::Int(8)]]), false);
    assert_eq!(fetch(&mut c, Forward(All)).await.unwrap(), (vec![7, 8], 2));
}
