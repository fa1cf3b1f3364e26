//! Reading the operations of a change straight from its columns, without expanding them.
//!
//! `Change::decode()` turns every operation into an owned `legacy::Op`: a case's description is
//! Automerge text, one operation per character, so most of that work is for operations the
//! server never looks at. It was a third of the parse cost in the storm (ADR 15). The server
//! needs only the string values put into maps, and the maps a change creates; this reader walks
//! the columns of the uncompressed change chunk and keeps just those.
//!
//! It reads only changes `Change::from_bytes` has already verified, so the bytes are well formed.
//! Anything it does not expect (another chunk type, a compressed column, a value running past its
//! column) is an error, and the caller falls back to `decode()`: this is a shortcut, never a
//! second opinion. A test compares both on generated changes.
//!
//! Layout (Automerge binary format, "change chunks"): magic, checksum, chunk type, length;
//! dependencies, actor, seq, start op, time, message, other actors; then column metadata (spec,
//! length) and the column data.

use automerge::Change;

/// Where an operation puts something: the root map, or an object by (counter, actor index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obj {
    Root,
    Id { counter: u64, actor: usize },
}

/// One map operation the server may care about.
#[derive(Debug, Clone, PartialEq)]
pub enum MapOp {
    /// A string put under `key` in `obj`.
    PutStr { obj: Obj, key: String, value: String },
    /// A new map created under `key` in `obj`; `counter` is the new map's id counter.
    MakeMap { obj: Obj, key: String, counter: u64 },
    /// An operation no case document holds (see [`is_foreign`] and [`root_misfit`]): what it is.
    Foreign(&'static str),
}

/// Why the shortcut could not read a change (the caller then uses `decode()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub &'static str);

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_CHANGE: u8 = 1;

// Column ids and types of a change's operation columns (id << 4 | deflate bit | type).
const OBJ_ACTOR: u64 = 1;
const OBJ_CTR: u64 = 2;
const KEY_STR: u64 = 0x15;
const INSERT: u64 = 0x34;
const ACTION: u64 = 0x42;
const VAL_META: u64 = 0x56;
const VAL_RAW: u64 = 0x57;
const DEFLATE_BIT: u64 = 0x08;

// Operation actions in a change's action column (Automerge's binary format).
pub const ACTION_MAKE_MAP: u64 = 0;
pub const ACTION_SET: u64 = 1;
pub const ACTION_MAKE_LIST: u64 = 2;
pub const ACTION_DELETE: u64 = 3;
pub const ACTION_MAKE_TEXT: u64 = 4;
pub const ACTION_INCREMENT: u64 = 5;
pub const ACTION_MAKE_TABLE: u64 = 6;
pub const ACTION_MARK: u64 = 7;
const VALUE_TYPE_STR: u64 = 6;
/// Value types with no bytes in the raw column whatever length their metadata claims (null,
/// false, true): Automerge reads nothing for them, and so must this reader.
const VALUE_TYPES_WITHOUT_BYTES: u64 = 2;

/// Whether an operation's action is one a case document never holds. A Gridwork case is maps,
/// one text and string, number and boolean values (`gridwork_model::doc`): make map, put, make
/// list, delete and make text (actions 0-4). Counters, tables and text marks (5-7, and any number
/// Automerge does not know) are refused at ingest: no app writes them, and Automerge's handling of
/// forged ones is where fuzzing found panics (fuzz/README.md).
pub fn is_foreign(action: u64) -> bool {
    action > 4
}

/// What a root operation does to a field the case schema defines (`gridwork_model::doc::
/// root_field`) that no app does: puts a value or object of another kind there. `value_type` is
/// the low four bits of the value's metadata (6: string; 3, 4: integers; 9: timestamp). None when
/// the operation fits, or the key is not the schema's.
///
/// A deletion fits: Automerge resolves a conflict by deleting the values not kept (a phone or
/// the console choosing one of two titles writes a delete of the other), and telling that from a
/// delete that empties the field needs the document, which ingest does not load.
pub fn root_misfit(key: &str, action: u64, value_type: u64) -> Option<&'static str> {
    use gridwork_model::doc::{root_field, RootField};
    let field = root_field(key)?;
    let fits = match action {
        ACTION_DELETE => true,
        ACTION_SET => match field {
            RootField::Str => value_type == VALUE_TYPE_STR,
            RootField::Number => matches!(value_type, 3 | 4 | 9),
            RootField::Text | RootField::Map => false,
        },
        ACTION_MAKE_MAP => field == RootField::Map,
        ACTION_MAKE_TEXT => field == RootField::Text,
        _ => false,
    };
    (!fits).then_some("a value of the wrong kind in a case's field")
}

/// Not an action: what [`MapOp::Foreign`] carries for an operation under a map key flagged as an
/// insert, which Automerge's format allows and no document holds.
pub const INSERT_UNDER_A_MAP_KEY: u64 = u64::MAX;

/// A foreign action's name, for the refusal.
pub fn action_name(action: u64) -> &'static str {
    match action {
        INSERT_UNDER_A_MAP_KEY => "an insert under a map key",
        ACTION_INCREMENT => "a counter increment",
        ACTION_MAKE_TABLE => "a table",
        ACTION_MARK => "a text mark",
        _ => "an operation Automerge does not define",
    }
}

/// The map operations of a verified change, in order.
pub fn map_ops(change: &Change) -> Result<Vec<MapOp>, Unreadable> {
    map_ops_in(change.raw_bytes(), change.len())
}

/// [`map_ops`] on the bytes of an uncompressed change chunk holding `count` operations.
pub fn map_ops_in(chunk: &[u8], count: usize) -> Result<Vec<MapOp>, Unreadable> {
    let mut input = Reader(chunk);
    if input.take(4)? != MAGIC {
        return Err(Unreadable("no chunk magic"));
    }
    input.take(4)?; // checksum, verified by `Change::from_bytes`
    if input.take(1)? != [CHUNK_CHANGE] {
        return Err(Unreadable("not an uncompressed change chunk"));
    }
    let len = input.uleb()? as usize;
    let mut body = Reader(input.take(len)?);
    let deps = body.uleb()? as usize;
    body.take(deps.checked_mul(32).ok_or(Unreadable("dependency count"))?)?;
    let actor_len = body.uleb()? as usize;
    body.take(actor_len)?;
    body.uleb()?; // seq
    let start_op = body.uleb()?;
    body.sleb()?; // time
    let message_len = body.uleb()? as usize;
    body.take(message_len)?;
    let others = body.uleb()? as usize;
    for _ in 0..others {
        let l = body.uleb()? as usize;
        body.take(l)?;
    }
    let columns = body.uleb()? as usize;
    let mut specs = Vec::with_capacity(columns.min(32));
    for _ in 0..columns {
        specs.push((body.uleb()?, body.uleb()? as usize));
    }
    let mut cols = Columns::default();
    for (spec, len) in specs {
        let data = body.take(len)?;
        if spec & DEFLATE_BIT != 0 {
            return Err(Unreadable("compressed column"));
        }
        match spec {
            OBJ_ACTOR => cols.obj_actor = data,
            OBJ_CTR => cols.obj_ctr = data,
            KEY_STR => cols.key_str = data,
            INSERT => cols.insert = data,
            ACTION => cols.action = data,
            VAL_META => cols.val_meta = data,
            VAL_RAW => cols.val_raw = data,
            _ => {}
        }
    }
    read_ops(&cols, count, start_op)
}

/// The most operations any column of an uncompressed change chunk stands for, counted from its
/// run lengths without expanding them (a deflated column is inflated, up to `max_inflate` bytes).
/// Automerge's column encodings let a few bytes claim billions of operations, and
/// `Change::from_bytes` walks every one it is told about: this is the bound a pushed change is
/// checked against before automerge sees it (docs/SECURITY.md).
pub fn op_bound(chunk: &[u8], max_inflate: usize) -> Result<u64, Unreadable> {
    let mut input = Reader(chunk);
    if input.take(4)? != MAGIC {
        return Err(Unreadable("no chunk magic"));
    }
    input.take(4)?;
    if input.take(1)? != [CHUNK_CHANGE] {
        return Err(Unreadable("not an uncompressed change chunk"));
    }
    let len = usize::try_from(input.uleb()?).map_err(|_| Unreadable("length"))?;
    let mut body = Reader(input.take(len)?);
    let deps = usize::try_from(body.uleb()?).map_err(|_| Unreadable("dependency count"))?;
    body.take(deps.checked_mul(32).ok_or(Unreadable("dependency count"))?)?;
    let actor_len = usize::try_from(body.uleb()?).map_err(|_| Unreadable("actor"))?;
    body.take(actor_len)?;
    body.uleb()?;
    body.uleb()?;
    body.sleb()?;
    let message_len = usize::try_from(body.uleb()?).map_err(|_| Unreadable("message"))?;
    body.take(message_len)?;
    let others = body.uleb()?;
    for _ in 0..others {
        let l = usize::try_from(body.uleb()?).map_err(|_| Unreadable("actor"))?;
        body.take(l)?;
    }
    let columns = body.uleb()?;
    let mut specs = vec![];
    for _ in 0..columns.min(1024) {
        specs.push((body.uleb()?, usize::try_from(body.uleb()?).map_err(|_| Unreadable("column length"))?));
    }
    if columns > 1024 {
        return Err(Unreadable("too many columns"));
    }
    let mut bound = 0u64;
    for (spec, len) in specs {
        let data = body.take(len)?;
        let inflated;
        let data = if spec & DEFLATE_BIT != 0 {
            use std::io::Read;
            let mut out = vec![];
            flate2::read::DeflateDecoder::new(data)
                .take(max_inflate as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|_| Unreadable("deflated column"))?;
            if out.len() > max_inflate {
                return Err(Unreadable("deflated column too large"));
            }
            inflated = out;
            &inflated[..]
        } else {
            data
        };
        bound = bound.max(column_entries(data, spec & 7)?);
    }
    Ok(bound)
}

/// How many entries a column of type `kind` holds (Automerge's column types: 0 group, 1 actor,
/// 2 integer, 3 delta — run-length encoded; 4 boolean — alternating run lengths; 5 string —
/// run-length encoded; 6 value metadata — run-length encoded; 7 raw values — bytes only).
fn column_entries(data: &[u8], kind: u64) -> Result<u64, Unreadable> {
    let mut r = Reader(data);
    let mut n = 0u64;
    match kind {
        7 => return Ok(0),
        4 => {
            while !r.0.is_empty() {
                n = n.saturating_add(r.uleb()?);
            }
        }
        _ => {
            while !r.0.is_empty() {
                let count = r.sleb()?;
                if count > 0 {
                    // A run: one value repeated.
                    literal(&mut r, kind)?;
                    n = n.saturating_add(count as u64);
                } else if count < 0 {
                    for _ in 0..count.unsigned_abs() {
                        literal(&mut r, kind)?;
                    }
                    n = n.saturating_add(count.unsigned_abs());
                } else {
                    n = n.saturating_add(r.uleb()?); // a run of nulls
                }
            }
        }
    }
    Ok(n)
}

/// Skips one value of a run-length encoded column.
fn literal(r: &mut Reader<'_>, kind: u64) -> Result<(), Unreadable> {
    match kind {
        3 => {
            r.sleb()?;
        }
        5 => {
            let l = usize::try_from(r.uleb()?).map_err(|_| Unreadable("string"))?;
            r.take(l)?;
        }
        _ => {
            r.uleb()?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Columns<'a> {
    obj_actor: &'a [u8],
    obj_ctr: &'a [u8],
    key_str: &'a [u8],
    insert: &'a [u8],
    action: &'a [u8],
    val_meta: &'a [u8],
    val_raw: &'a [u8],
}

fn read_ops(cols: &Columns<'_>, count: usize, start_op: u64) -> Result<Vec<MapOp>, Unreadable> {
    let mut obj_actor = Rle::new(cols.obj_actor, Kind::Uleb);
    let mut obj_ctr = Rle::new(cols.obj_ctr, Kind::Uleb);
    // Each column is its own stream: the ones the server does not read (a list element's key,
    // predecessors) are not decoded at all.
    let mut key_str = Rle::new(cols.key_str, Kind::Str);
    let mut insert = Bools::new(cols.insert);
    let mut action = Rle::new(cols.action, Kind::Uleb);
    let mut val_meta = Rle::new(cols.val_meta, Kind::Uleb);
    let mut raw = Reader(cols.val_raw);
    let mut out = vec![];
    for i in 0..count {
        let (oa, oc) = (obj_actor.next()?, obj_ctr.next()?);
        let key = key_str.next_str()?;
        let inserts = insert.next()?;
        // Every operation has an action: a null one means the columns ended before `count`.
        let act = action.next()?.ok_or(Unreadable("fewer operations than the change counts"))?.as_u64();
        let meta = val_meta.next()?.map(|v| v.as_u64()).unwrap_or(0);
        let len = if meta & 0x0f <= VALUE_TYPES_WITHOUT_BYTES { 0 } else { meta >> 4 };
        let value = raw.take(usize::try_from(len).map_err(|_| Unreadable("value length"))?)?;
        if is_foreign(act) {
            out.push(MapOp::Foreign(action_name(act)));
            continue;
        }
        let Some(key) = key else { continue };
        if inserts {
            // Only a list or text element is inserted; an "insert" under a map key breaks the
            // order Automerge keeps a map's operations in (found by fuzzing).
            out.push(MapOp::Foreign(action_name(INSERT_UNDER_A_MAP_KEY)));
            continue;
        }
        let obj = match (oa, oc) {
            (None, None) => Obj::Root,
            (Some(a), Some(c)) => Obj::Id { counter: c.as_u64(), actor: a.as_u64() as usize },
            _ => return Err(Unreadable("object id with half its columns")),
        };
        if obj == Obj::Root {
            if let Some(misfit) = root_misfit(key, act, meta & 0x0f) {
                out.push(MapOp::Foreign(misfit));
                continue;
            }
        }
        match act {
            ACTION_SET if meta & 0x0f == VALUE_TYPE_STR => {
                let value = std::str::from_utf8(value).map_err(|_| Unreadable("string value is not UTF-8"))?;
                out.push(MapOp::PutStr { obj, key: key.to_owned(), value: value.to_owned() });
            }
            ACTION_MAKE_MAP => out.push(MapOp::MakeMap { obj, key: key.to_owned(), counter: start_op + i as u64 }),
            _ => {}
        }
    }
    Ok(out)
}

/// Automerge's boolean column: alternating run lengths, starting with a run of `false`. An
/// exhausted column reads as `false`.
struct Bools<'a> {
    input: Reader<'a>,
    value: bool,
    left: u64,
}

impl<'a> Bools<'a> {
    fn new(data: &'a [u8]) -> Self {
        // The first run read is of `false`: start "after" a run of `true`.
        Bools { input: Reader(data), value: true, left: 0 }
    }

    fn next(&mut self) -> Result<bool, Unreadable> {
        while self.left == 0 {
            if self.input.is_empty() {
                return Ok(false);
            }
            self.left = self.input.uleb()?;
            self.value = !self.value;
        }
        self.left -= 1;
        Ok(self.value)
    }
}

/// A cursor over bytes with LEB128 reads.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Unreadable> {
        if n > self.0.len() {
            return Err(Unreadable("runs past its end"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn uleb(&mut self) -> Result<u64, Unreadable> {
        leb128::read::unsigned(&mut self.0).map_err(|_| Unreadable("bad unsigned LEB128"))
    }
    fn sleb(&mut self) -> Result<i64, Unreadable> {
        leb128::read::signed(&mut self.0).map_err(|_| Unreadable("bad signed LEB128"))
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Uleb,
    Str,
}

#[derive(Clone, Copy)]
enum Val<'a> {
    Uint(u64),
    Str(&'a [u8]),
}

impl Val<'_> {
    fn as_u64(self) -> u64 {
        match self {
            Val::Uint(u) => u,
            Val::Str(_) => 0,
        }
    }
}

/// Automerge's run-length encoding: a signed count n, then n > 0: one value repeated n times;
/// n < 0: -n literal values; n = 0: an unsigned count of nulls. An exhausted column reads as nulls.
struct Rle<'a> {
    input: Reader<'a>,
    kind: Kind,
    run: Run<'a>,
}

enum Run<'a> {
    None,
    Repeat(u64, Val<'a>),
    Literal(u64),
    Nulls(u64),
}

impl<'a> Rle<'a> {
    fn new(data: &'a [u8], kind: Kind) -> Self {
        Rle { input: Reader(data), kind, run: Run::None }
    }

    fn value(&mut self) -> Result<Val<'a>, Unreadable> {
        Ok(match self.kind {
            Kind::Uleb => Val::Uint(self.input.uleb()?),
            Kind::Str => {
                let n = self.input.uleb()? as usize;
                Val::Str(self.input.take(n)?)
            }
        })
    }

    fn next(&mut self) -> Result<Option<Val<'a>>, Unreadable> {
        loop {
            match &mut self.run {
                Run::Repeat(n, v) if *n > 0 => {
                    *n -= 1;
                    let v = *v;
                    return Ok(Some(v));
                }
                Run::Literal(n) if *n > 0 => {
                    *n -= 1;
                    return Ok(Some(self.value()?));
                }
                Run::Nulls(n) if *n > 0 => {
                    *n -= 1;
                    return Ok(None);
                }
                _ => {}
            }
            if self.input.is_empty() {
                return Ok(None);
            }
            let count = self.input.sleb()?;
            self.run = match count {
                c if c > 0 => Run::Repeat(c as u64, self.value()?),
                c if c < 0 => Run::Literal(c.unsigned_abs()),
                _ => Run::Nulls(self.input.uleb()?),
            };
        }
    }

    fn next_str(&mut self) -> Result<Option<&'a str>, Unreadable> {
        match self.next()? {
            None => Ok(None),
            Some(Val::Str(b)) => std::str::from_utf8(b).map(Some).map_err(|_| Unreadable("key is not UTF-8")),
            Some(_) => Err(Unreadable("string column holds a number")),
        }
    }
}
