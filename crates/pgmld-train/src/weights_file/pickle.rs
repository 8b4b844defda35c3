//! A minimal unpickler for `torch.save` state dicts: builds plain values and records
//! `torch._utils._rebuild_tensor_v2` calls over persistent `storage` records.
use std::collections::HashMap;

use tch::Kind;

/// A storage named by a persistent id `('storage', torch.XStorage, key, location, numel)`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    pub key: String,
    pub kind: Kind,
    pub numel: i64,
}

impl StorageRef {
    pub fn nbytes(&self) -> usize {
        self.numel.max(0) as usize * self.kind.elt_size_in_bytes()
    }
}

/// A tensor as `_rebuild_tensor_v2(storage, offset, size, stride, ...)` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Storage(StorageRef),
    Tensor(TensorRef),
    /// The result of a call this unpickler does not model (named for messages).
    Object(String),
}

type R<T> = Result<T, String>;

pub struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<Vec<Value>>,
    memo: HashMap<u64, Value>,
    storages: HashMap<String, StorageRef>,
}

fn storage_kind(name: &str) -> R<Kind> {
    Ok(match name {
        "FloatStorage" => Kind::Float,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "DoubleStorage" => Kind::Double,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        other => return Err(format!("unsupported storage type torch.{other}")),
    })
}

fn ints(v: &Value) -> R<Vec<i64>> {
    match v {
        Value::Tuple(xs) | Value::List(xs) => xs
            .iter()
            .map(|x| match x {
                Value::Int(i) => Ok(*i),
                other => Err(format!("expected an int, found {other:?}")),
            })
            .collect(),
        other => Err(format!("expected a tuple of ints, found {other:?}")),
    }
}

fn rebuild_tensor(args: &[Value]) -> R<Value> {
    match args {
        [Value::Storage(s), Value::Int(offset), size, stride, ..] => Ok(Value::Tensor(TensorRef {
            storage: s.clone(),
            offset: *offset,
            size: ints(size)?,
            stride: ints(stride)?,
        })),
        _ => Err(format!("unexpected _rebuild_tensor arguments {args:?}")),
    }
}

/// Applies `callable` to `args` for the few callables a state dict uses.
fn call(callable: Value, args: Value) -> R<Value> {
    let Value::Global(module, name) = callable else {
        return Ok(Value::Object("call of a non-global".into()));
    };
    let args = match args {
        Value::Tuple(a) => a,
        other => return Ok(Value::Object(format!("{module}.{name}({other:?})"))),
    };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => rebuild_tensor(&args),
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            Ok(args.into_iter().next().unwrap_or(Value::None))
        }
        ("torch._tensor", "_rebuild_from_type_v2") => {
            let mut it = args.into_iter();
            match (it.next(), it.next(), it.next()) {
                (Some(func), _, Some(inner)) => call(func, inner),
                _ => Err("unexpected _rebuild_from_type_v2 arguments".into()),
            }
        }
        ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict") => {
            Ok(match args.into_iter().next() {
                Some(Value::List(items)) => Value::Dict(
                    items
                        .into_iter()
                        .filter_map(|kv| match kv {
                            Value::Tuple(mut p) if p.len() == 2 => {
                                let v = p.pop()?;
                                Some((p.pop()?, v))
                            }
                            _ => None,
                        })
                        .collect(),
                ),
                _ => Value::Dict(Vec::new()),
            })
        }
        ("_codecs", "encode") => match args.first() {
            Some(Value::Str(s)) => Ok(Value::Bytes(s.chars().map(|c| c as u32 as u8).collect())),
            _ => Ok(Value::Object("_codecs.encode".into())),
        },
        ("torch", "Size") => Ok(args.into_iter().next().unwrap_or(Value::None)),
        _ => Ok(Value::Object(format!("{module}.{name}"))),
    }
}

impl<'a> Unpickler<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            storages: HashMap::new(),
        }
    }

    /// Offset just past the last pickle loaded.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Every storage a persistent id named so far, by key.
    pub fn storages(&self) -> &HashMap<String, StorageRef> {
        &self.storages
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or("pickle truncated")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> R<u64> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    fn line(&mut self) -> R<String> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&c| c == b'\n').ok_or("pickle truncated")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: u64) -> R<String> {
        let b = self.take(usize::try_from(n).map_err(|_| "string too long")?)?;
        String::from_utf8(b.to_vec()).map_err(|e| e.to_string())
    }

    fn pop(&mut self) -> R<Value> {
        self.stack.pop().ok_or_else(|| "pickle stack underflow".to_string())
    }

    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let below = self.marks.pop().ok_or("pickle mark underflow")?;
        Ok(std::mem::replace(&mut self.stack, below))
    }

    fn top(&mut self) -> R<&mut Value> {
        self.stack.last_mut().ok_or_else(|| "pickle stack underflow".to_string())
    }

    fn memo_get(&self, k: u64) -> R<Value> {
        self.memo.get(&k).cloned().ok_or_else(|| format!("pickle memo {k} unset"))
    }

    fn memo_put(&mut self, k: u64) -> R<()> {
        let v = self.stack.last().ok_or("pickle stack underflow")?.clone();
        self.memo.insert(k, v);
        Ok(())
    }

    fn persistent_load(&mut self, pid: Value) -> R<Value> {
        let Value::Tuple(p) = pid else {
            return Err(format!("unsupported persistent id {pid:?}"));
        };
        match p.as_slice() {
            [Value::Str(tag), Value::Global(_, ty), key, _location, Value::Int(numel), rest @ ..]
                if tag == "storage" =>
            {
                if !matches!(rest, [] | [Value::None]) {
                    return Err("storage views (torch < 1.0 files) are not supported".into());
                }
                let key = match key {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    other => return Err(format!("bad storage key {other:?}")),
                };
                let s = StorageRef { key: key.clone(), kind: storage_kind(ty)?, numel: *numel };
                if *numel < 0 {
                    return Err(format!("negative storage size {numel}"));
                }
                self.storages.insert(key, s.clone());
                Ok(Value::Storage(s))
            }
            _ => Err(format!("unsupported persistent id {p:?}")),
        }
    }

    /// Loads the next pickle (up to its STOP opcode).
    pub fn load(&mut self) -> R<Value> {
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
        loop {
            let op = self.take(1)?[0];
            match op {
                0x80 => {
                    self.take(1)?;
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(std::mem::take(&mut self.stack)),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.uint(4)? as u32 as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.uint(1)?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.uint(2)?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.uint(1)? } else { self.uint(4)? };
                    let b = self.take(usize::try_from(n).map_err(|_| "long too long")?)?;
                    self.stack.push(if b.len() <= 8 {
                        let neg = b.last().is_some_and(|&x| x & 0x80 != 0);
                        let fill = if neg { 0xff } else { 0 };
                        let mut w = [fill; 8];
                        w[..b.len()].copy_from_slice(b);
                        Value::Int(i64::from_le_bytes(w))
                    } else {
                        Value::BigInt(b.to_vec())
                    });
                }
                b'I' | b'L' => {
                    let l = self.line()?;
                    let l = l.trim_end_matches('L');
                    self.stack.push(match l {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        _ => Value::Int(l.parse().map_err(|_| format!("bad int {l:?}"))?),
                    });
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut w = [0u8; 8];
                    w.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(w)));
                }
                b'F' => {
                    let l = self.line()?;
                    self.stack
                        .push(Value::Float(l.parse().map_err(|_| format!("bad float {l:?}"))?));
                }
                b'X' | 0x8c | 0x8d | b'T' | b'U' => {
                    let n = match op {
                        b'X' | b'T' => self.uint(4)?,
                        0x8d => self.uint(8)?,
                        _ => self.uint(1)?,
                    };
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                b'B' | b'C' | 0x8e => {
                    let n = match op {
                        b'B' => self.uint(4)?,
                        b'C' => self.uint(1)?,
                        _ => self.uint(8)?,
                    };
                    let b = self.take(usize::try_from(n).map_err(|_| "bytes too long")?)?;
                    self.stack.push(Value::Bytes(b.to_vec()));
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let at = self.stack.len().checked_sub(n).ok_or("pickle stack underflow")?;
                    let items = self.stack.split_off(at);
                    self.stack.push(Value::Tuple(items));
                }
                b']' => self.stack.push(Value::List(Vec::new())),
                b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                0x8f => self.stack.push(Value::List(Vec::new())),
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        _ => return Err("APPEND to a non-list".into()),
                    }
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        _ => return Err("APPENDS to a non-list".into()),
                    }
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let mut it = items.into_iter();
                    let mut pairs = Vec::new();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    self.stack.push(Value::Dict(pairs));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        _ => return Err("SETITEM on a non-dict".into()),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let Value::Dict(d) = self.top()? else {
                        return Err("SETITEMS on a non-dict".into());
                    };
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.push((k, v));
                    }
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let (name, module) = (self.pop()?, self.pop()?);
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.stack.push(call(callable, args)?);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.stack.push(call(cls, args)?);
                }
                // BUILD sets attributes (e.g. a state dict's `_metadata`): not needed.
                b'b' => {
                    self.pop()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.stack.push(v);
                }
                b'q' => {
                    let k = self.uint(1)?;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.uint(4)?;
                    self.memo_put(k)?;
                }
                b'p' => {
                    let l = self.line()?;
                    self.memo_put(l.parse().map_err(|_| format!("bad memo key {l:?}"))?)?;
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.uint(1)?;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let k = self.uint(4)?;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'g' => {
                    let l = self.line()?;
                    let v = self.memo_get(l.parse().map_err(|_| format!("bad memo key {l:?}"))?)?;
                    self.stack.push(v);
                }
                other => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{other:02x} at byte {}",
                        self.pos - 1
                    ))
                }
            }
        }
    }
}

/// The tensors of a state dict (also one nested under `state_dict` or `model`), by name;
/// entries that are not tensors are skipped.
pub fn state_dict(v: Value) -> R<Vec<(String, TensorRef)>> {
    let Value::Dict(items) = v else {
        return Err("the pickle does not hold a state dict".into());
    };
    let mut out = Vec::new();
    let mut nested = None;
    for (k, v) in items {
        match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => out.push((k, t)),
            (Value::Str(k), d @ Value::Dict(_)) if k == "state_dict" || k == "model" => {
                nested = Some(d)
            }
            _ => {}
        }
    }
    match (out.is_empty(), nested) {
        (true, Some(d)) => state_dict(d),
        (true, None) => Err("the state dict holds no tensors".into()),
        _ => Ok(out),
    }
}
