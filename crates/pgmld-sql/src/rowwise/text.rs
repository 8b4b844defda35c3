//! Byte ranges of query blocks and their clauses, found from tokens.
//!
//! sqlparser's AST spans are exact for single tokens (keywords, identifiers) but not for
//! larger nodes, so a node's start comes from a token the AST keeps (`SELECT`, `WITH`, an
//! alias) and its end from scanning tokens at the same parenthesis depth.

use crate::analyze::Parsed;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token};
use std::ops::Range;

/// A token that is not whitespace or a comment, with its bytes in the text.
pub(crate) struct Tok {
    /// The token.
    pub token: Token,
    /// Its bytes.
    pub range: Range<usize>,
}

/// The solid tokens of a statement, in order.
pub(crate) struct Tokens {
    /// Solid tokens by position.
    pub toks: Vec<Tok>,
}

/// Clauses of a query block, as they matter for per-row calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clause {
    /// Between SELECT and FROM.
    SelectList,
    /// A FROM item (table, function, join).
    From,
    /// A join's ON condition.
    JoinOn,
    /// WHERE.
    Where,
    /// GROUP BY.
    GroupBy,
    /// HAVING.
    Having,
    /// WINDOW.
    Window,
}

impl Clause {
    /// Words for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Clause::SelectList => "the SELECT list",
            Clause::From => "a FROM item",
            Clause::JoinOn => "a JOIN condition",
            Clause::Where => "a WHERE clause",
            Clause::GroupBy => "a GROUP BY clause",
            Clause::Having => "a HAVING clause",
            Clause::Window => "a WINDOW clause",
        }
    }
}

/// Byte offset of every token, in one pass over the text (a completed block puts a long
/// VALUES list on one line, where a per-token line scan would be quadratic).
fn token_starts(p: &Parsed) -> Option<Vec<usize>> {
    let mut out = Vec::with_capacity(p.tokens.len());
    let mut chars = p.sql.char_indices().peekable();
    let (mut line, mut column) = (1u64, 1u64);
    for t in &p.tokens {
        let want = t.span.start;
        while (line, column) < (want.line, want.column) {
            let (_, c) = chars.next()?;
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        if (line, column) != (want.line, want.column) {
            return None;
        }
        out.push(chars.peek().map_or(p.sql.len(), |&(i, _)| i));
    }
    Some(out)
}

impl Tokens {
    /// Indexes the parsed statement's tokens; `None` when a location does not map to bytes.
    pub fn new(p: &Parsed) -> Option<Self> {
        let starts = token_starts(p)?;
        let mut toks = Vec::new();
        for (i, t) in p.tokens.iter().enumerate() {
            if matches!(t.token, Token::Whitespace(_) | Token::EOF) {
                continue;
            }
            // A token ends where the next one (whitespace included) starts.
            let end = starts.get(i + 1).copied().unwrap_or(p.sql.len());
            toks.push(Tok { token: t.token.clone(), range: starts[i]..end });
        }
        Some(Tokens { toks })
    }

    /// Index of the token starting at `byte`.
    pub fn at(&self, byte: usize) -> Option<usize> {
        self.toks.binary_search_by_key(&byte, |t| t.range.start).ok()
    }

    /// Index of the token at a location.
    pub fn at_loc(&self, p: &Parsed, loc: Location) -> Option<usize> {
        self.at(p.byte(loc)?)
    }

    /// The keyword of token `i` when it is an unquoted keyword.
    pub fn kw(&self, i: usize) -> Option<Keyword> {
        match &self.toks.get(i)?.token {
            Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
            _ => None,
        }
    }

    /// Bytes of tokens `r` (exclusive end), from the first's start to the last's end.
    pub fn bytes(&self, r: Range<usize>) -> Option<Range<usize>> {
        let last = r.end.checked_sub(1)?;
        if r.start > last {
            return None;
        }
        Some(self.toks.get(r.start)?.range.start..self.toks.get(last)?.range.end)
    }

    /// Index just past the query (or, with `operand`, the set-operation operand) starting
    /// at token `from`: the first token at the starting depth that closes an enclosing
    /// parenthesis, ends the statement, or starts a clause of the enclosing construct.
    pub fn block_end(&self, from: usize, operand: bool) -> usize {
        let mut depth = 0usize;
        let mut i = from;
        while i < self.toks.len() {
            match &self.toks[i].token {
                Token::LParen | Token::LBracket => depth += 1,
                Token::RParen | Token::RBracket => {
                    if depth == 0 {
                        return i;
                    }
                    depth -= 1;
                }
                Token::SemiColon if depth == 0 => return i,
                Token::Word(_) if depth == 0 && i > from && self.ends_block(i, operand) => {
                    return i
                }
                _ => {}
            }
            i += 1;
        }
        i
    }

    fn ends_block(&self, i: usize, operand: bool) -> bool {
        match self.kw(i) {
            // INSERT ... <query> RETURNING / ON CONFLICT; CREATE TABLE AS <query> WITH [NO] DATA.
            Some(Keyword::RETURNING) => true,
            Some(Keyword::ON) => {
                self.kw(i + 1) == Some(Keyword::CONFLICT)
                    && (matches!(self.toks.get(i + 2).map(|t| &t.token), Some(Token::LParen))
                        || matches!(self.kw(i + 2), Some(Keyword::DO | Keyword::ON)))
            }
            Some(Keyword::WITH) => matches!(self.kw(i + 1), Some(Keyword::NO | Keyword::DATA)),
            Some(
                Keyword::UNION
                | Keyword::INTERSECT
                | Keyword::EXCEPT
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::FETCH
                | Keyword::FOR,
            ) => operand,
            _ => false,
        }
    }

    /// Token ranges of the SELECT list items of the block whose `SELECT` is token `select`
    /// and that ends before token `end`, split at top-level commas.
    pub fn select_items(&self, select: usize, end: usize) -> Vec<Range<usize>> {
        let mut start = select + 1;
        if self.kw(start) == Some(Keyword::ALL) {
            start += 1;
        }
        let mut items = Vec::new();
        let mut depth = 0usize;
        let mut item_start = start;
        let mut i = start;
        while i < end {
            match &self.toks[i].token {
                Token::LParen | Token::LBracket => depth += 1,
                Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
                Token::Comma if depth == 0 => {
                    items.push(item_start..i);
                    item_start = i + 1;
                }
                Token::Word(_)
                    if depth == 0
                        && matches!(
                            self.kw(i),
                            Some(
                                Keyword::FROM
                                    | Keyword::INTO
                                    | Keyword::WHERE
                                    | Keyword::GROUP
                                    | Keyword::HAVING
                                    | Keyword::WINDOW
                            )
                        ) =>
                {
                    break
                }
                _ => {}
            }
            i += 1;
        }
        if i > item_start {
            items.push(item_start..i);
        }
        items
    }

    /// The clause of the block starting at token `select` that holds token `at`.
    pub fn clause_at(&self, select: usize, at: usize) -> Clause {
        let mut clause = Clause::SelectList;
        let mut depth = 0usize;
        for i in select..at.min(self.toks.len()) {
            match &self.toks[i].token {
                Token::LParen | Token::LBracket => depth += 1,
                Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
                Token::Comma if depth == 0 && clause == Clause::JoinOn => clause = Clause::From,
                Token::Word(_) if depth == 0 => {
                    clause = match self.kw(i) {
                        Some(Keyword::FROM) => Clause::From,
                        Some(Keyword::JOIN) => Clause::From,
                        Some(Keyword::ON) if clause == Clause::From => Clause::JoinOn,
                        Some(Keyword::WHERE) => Clause::Where,
                        Some(Keyword::GROUP) => Clause::GroupBy,
                        Some(Keyword::HAVING) => Clause::Having,
                        Some(Keyword::WINDOW) => Clause::Window,
                        _ => clause,
                    }
                }
                _ => {}
            }
        }
        clause
    }
}
