//! A cursor over a streaming pgml call, positioned as a Postgres cursor is.
//!
//! Rows are pulled from the call's stream only when a FETCH or MOVE needs them, and every
//! row pulled is kept, so backward and absolute fetches work on scrollable cursors as in
//! Postgres (whose function scans keep their rows in a tuplestore). Positions follow
//! `DoPortalRunFetch`: before the first row, on row *i*, or after the last row.

use crate::error::{codes, SqlError};
use crate::function::RowStream;
use crate::value::Value;
use futures_core::Stream;

/// How many rows a FETCH/MOVE asks for in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// A number of rows (0 re-fetches the current row).
    N(u64),
    /// `ALL`.
    All,
}

/// A FETCH/MOVE direction, normalised as Postgres does (`FETCH -2` is `BACKWARD 2`, `NEXT`
/// is `FORWARD 1`, `FIRST` is `ABSOLUTE 1`, `LAST` is `ABSOLUTE -1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `FORWARD n | ALL`, `NEXT`, `n`, `ALL`.
    Forward(Count),
    /// `BACKWARD n | ALL`, `PRIOR`, `-n`.
    Backward(Count),
    /// `ABSOLUTE n`, `FIRST`, `LAST`.
    Absolute(i64),
    /// `RELATIVE n`.
    Relative(i64),
}

/// Where the cursor stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    Before,
    /// On row *i* (1-based).
    On(usize),
    After,
}

/// The rows of a streaming call behind a cursor (or behind one statement's portal).
pub struct StreamCursor {
    stream: Option<RowStream>,
    rows: Vec<Vec<Value>>,
    pos: Pos,
    scrollable: bool,
}

impl StreamCursor {
    /// A cursor before the first row of `stream`. `scrollable` allows moving backward, as
    /// `SCROLL` (or a plan that can scan backward) does in Postgres.
    pub fn new(stream: RowStream, scrollable: bool) -> Self {
        StreamCursor { stream: Some(stream), rows: Vec::new(), pos: Pos::Before, scrollable }
    }

    /// True once the stream has ended (every row is buffered).
    pub fn is_exhausted(&self) -> bool {
        self.stream.is_none()
    }

    /// Runs a FETCH (`is_move` false: `emit` gets each row as soon as it is there; its
    /// error ends the fetch) or a MOVE (nothing emitted). Returns the count for the command
    /// tag (`FETCH n`, `MOVE n`).
    pub async fn fetch(
        &mut self,
        direction: Direction,
        is_move: bool,
        mut emit: impl FnMut(&[Value]) -> Result<(), SqlError>,
    ) -> Result<u64, SqlError> {
        let mut out = |c: &Self, i: usize| if is_move { Ok(()) } else { emit(&c.rows[i - 1]) };
        match direction {
            Direction::Forward(Count::N(0))
            | Direction::Backward(Count::N(0))
            | Direction::Relative(0) => {
                let Pos::On(i) = self.pos else { return Ok(0) };
                if !is_move {
                    // Postgres backs up one row to fetch it again.
                    self.require_scroll()?;
                    out(self, i)?;
                }
                Ok(1)
            }
            Direction::Forward(count) => {
                let mut n = 0u64;
                while count == Count::All || Count::N(n) != count {
                    let Some(i) = self.step_forward().await? else { break };
                    out(self, i)?;
                    n += 1;
                }
                Ok(n)
            }
            Direction::Backward(count) => {
                self.require_scroll()?;
                let mut n = 0u64;
                while count == Count::All || Count::N(n) != count {
                    let Some(i) = self.step_backward().await? else { break };
                    out(self, i)?;
                    n += 1;
                }
                Ok(n)
            }
            Direction::Relative(k) => {
                let mut landed = None;
                for _ in 0..k.unsigned_abs() {
                    landed = if k > 0 {
                        self.step_forward().await?
                    } else {
                        self.step_backward_checked().await?
                    };
                    if landed.is_none() {
                        break;
                    }
                }
                match landed {
                    Some(i) => out(self, i).map(|_| 1),
                    None => Ok(0),
                }
            }
            Direction::Absolute(k) => {
                let landed = self.absolute(k).await?;
                match landed {
                    Some(i) => out(self, i).map(|_| 1),
                    None => Ok(0),
                }
            }
        }
    }

    async fn absolute(&mut self, k: i64) -> Result<Option<usize>, SqlError> {
        let current = match self.pos {
            Pos::Before => 0,
            Pos::On(i) => i,
            Pos::After => usize::MAX,
        };
        if k > 0 {
            let target = usize::try_from(k).unwrap_or(usize::MAX);
            if target <= current {
                self.require_scroll()?;
            }
            if self.have_row(target).await? {
                self.pos = Pos::On(target);
                return Ok(Some(target));
            }
            self.pos = Pos::After;
            return Ok(None);
        }
        if k == 0 {
            if self.pos != Pos::Before {
                self.require_scroll()?;
            }
            self.pos = Pos::Before;
            return Ok(None);
        }
        // From the end: every row is needed.
        self.require_scroll()?;
        self.drain().await?;
        let back = usize::try_from(k.unsigned_abs()).unwrap_or(usize::MAX);
        match (self.rows.len() + 1).checked_sub(back).filter(|&i| i >= 1) {
            Some(i) => {
                self.pos = Pos::On(i);
                Ok(Some(i))
            }
            None => {
                self.pos = Pos::Before;
                Ok(None)
            }
        }
    }

    async fn step_forward(&mut self) -> Result<Option<usize>, SqlError> {
        let next = match self.pos {
            Pos::Before => 1,
            Pos::On(i) => i + 1,
            Pos::After => return Ok(None),
        };
        if self.have_row(next).await? {
            self.pos = Pos::On(next);
            Ok(Some(next))
        } else {
            self.pos = Pos::After;
            Ok(None)
        }
    }

    async fn step_backward_checked(&mut self) -> Result<Option<usize>, SqlError> {
        self.require_scroll()?;
        self.step_backward().await
    }

    async fn step_backward(&mut self) -> Result<Option<usize>, SqlError> {
        let prev = match self.pos {
            Pos::Before => return Ok(None),
            Pos::On(i) => i - 1,
            Pos::After => {
                self.drain().await?;
                self.rows.len()
            }
        };
        if prev >= 1 {
            self.pos = Pos::On(prev);
            Ok(Some(prev))
        } else {
            self.pos = Pos::Before;
            Ok(None)
        }
    }

    fn require_scroll(&self) -> Result<(), SqlError> {
        if self.scrollable {
            Ok(())
        } else {
            Err(SqlError::new(
                codes::OBJECT_NOT_IN_PREREQUISITE_STATE,
                "cursor can only scan forward",
            )
            .with_hint("Declare it with SCROLL option to enable backward scan."))
        }
    }

    /// True when row `i` exists, pulling rows until it is buffered or the stream ends.
    async fn have_row(&mut self, i: usize) -> Result<bool, SqlError> {
        while self.rows.len() < i {
            if !self.pull().await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn drain(&mut self) -> Result<(), SqlError> {
        while self.pull().await? {}
        Ok(())
    }

    /// Buffers the next row; false at the end of the stream (which is then dropped).
    async fn pull(&mut self) -> Result<bool, SqlError> {
        let Some(stream) = self.stream.as_mut() else { return Ok(false) };
        match std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
            Some(Ok(row)) => {
                self.rows.push(row);
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => {
                self.stream = None;
                Ok(false)
            }
        }
    }
}

/// A stream over rows known at once (a function that answered [`crate::Output::Rows`]).
pub fn rows_stream(rows: Vec<Vec<Value>>) -> RowStream {
    Box::pin(RowsStream(rows.into_iter()))
}

struct RowsStream(std::vec::IntoIter<Vec<Value>>);

impl Stream for RowsStream {
    type Item = Result<Vec<Value>, SqlError>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.next().map(Ok))
    }
}

#[cfg(test)]
#[path = "cursor_tests.rs"]
mod tests;
