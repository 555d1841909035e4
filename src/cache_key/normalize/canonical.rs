//! Canonical JSON, written two ways that give the same bytes: from a parsed `Value`, and
//! straight from the request's bytes without building one.
//!
//! The direct path reads the body once with serde_json's deserializer and writes each value as
//! it is read: strings are borrowed from the input where they have no escapes, and only the
//! members of each object are held (where their canonical bytes are, to be put in key order).
//! Parsing into a `Value` tree instead allocates every string, array and map before anything
//! is written (`cargo bench --bench normalize` compares the two; docs/performance.md).
//!
//! The rules both follow: object keys sorted by their UTF-8 bytes, the last of duplicate keys
//! kept (as parsing into a `Value` does), no insignificant whitespace, strings escaped the one
//! way serde_json escapes them, and numbers as in [`write_number`].

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Writes `value`'s canonical form.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => write_bool(out, *b),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(fields) => write_object(out, fields, |_| true),
    }
}

/// serde_json's `Map` is a `BTreeMap` (the `preserve_order` feature is off), so iteration is
/// already in sorted key order; a test in `normalize` guards that assumption.
pub fn write_object(out: &mut Vec<u8>, fields: &Map<String, Value>, keep: impl Fn(&str) -> bool) {
    out.push(b'{');
    let mut first = true;
    for (key, value) in fields.iter().filter(|(k, _)| keep(k)) {
        if !first {
            out.push(b',');
        }
        first = false;
        write_string(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly `"`, `\` and control characters, always the same way.
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Integers print as integers. A float with no fractional part prints as the integer it equals
/// (so `2.0` and `2` hash alike); other floats print in Rust's shortest round-trip form.
fn write_number(out: &mut Vec<u8>, n: &Number) {
    if let Some(i) = n.as_u64() {
        write_u64(out, i);
    } else if let Some(i) = n.as_i64() {
        write_i64(out, i);
    } else if let Some(f) = n.as_f64() {
        write_f64(out, f);
    }
}

// Integers through serde_json's own integer writer: the same digits as `Display`, faster.
fn write_u64(out: &mut Vec<u8>, i: u64) {
    let _ = serde_json::to_writer(&mut *out, &i);
}

fn write_i64(out: &mut Vec<u8>, i: i64) {
    let _ = serde_json::to_writer(&mut *out, &i);
}

/// A string read from the input without escapes: it holds no `"`, `\` or control character
/// (JSON allows none of them unescaped), so it is already written as serde_json would.
fn write_unescaped(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

fn write_f64(out: &mut Vec<u8>, f: f64) {
    // 1e21 is where f64 stops fitting comfortably in the integer formatting below.
    if f.fract() == 0.0 && f.abs() < 1e21 {
        let _ = write!(out, "{}", f as i128);
    } else {
        let _ = write!(out, "{f}");
    }
}

/// Why a body has no canonical form.
pub enum CanonicalError {
    Json(serde_json::Error),
    /// The body is valid JSON but not an object: what it is instead.
    NotAnObject(&'static str),
}

/// Which top-level members a reader of the body wants and which go into the canonical form.
pub struct TopLevel<'a> {
    /// Members written into the canonical form.
    pub keep: &'a dyn Fn(&str) -> bool,
    /// Members also returned parsed, whether kept or not (the proxy reads `model`, `stream`
    /// and the fields that make a request stateful).
    pub capture: &'a dyn Fn(&str) -> bool,
}

/// The canonical form of the object in `body` with the members `top` keeps — the same bytes
/// as `write_object` over the parsed body — and the members it captures, parsed.
pub fn canonical_object(body: &[u8], top: &TopLevel<'_>) -> Result<(Vec<u8>, Map<String, Value>), CanonicalError> {
    let mut writer = Writer { out: Vec::with_capacity(body.len()), scratch: Vec::new(), members: Vec::new() };
    let mut captured = Map::new();
    let mut reader = serde_json::Deserializer::from_slice(body);
    let kind =
        de::Deserializer::deserialize_any(&mut reader, Top { writer: &mut writer, top, captured: &mut captured })
            .map_err(CanonicalError::Json)?;
    reader.end().map_err(CanonicalError::Json)?;
    match kind {
        None => Ok((writer.out, captured)),
        Some(kind) => Err(CanonicalError::NotAnObject(kind)),
    }
}

/// The output and the buffers every level of nesting shares: an object puts its members in
/// order only once all of them (and so everything nested in them) have been written, so one
/// scratch buffer and one stack of members serve every level without an allocation per object.
struct Writer<'de> {
    /// The canonical bytes written so far.
    out: Vec<u8>,
    /// The members of an object being put in order.
    scratch: Vec<u8>,
    /// Each open object's members: key and where its `"key":value` is in `out`.
    members: Vec<(Key<'de>, Range<usize>)>,
}

/// The top level: an object whose members `top` filters; anything else is named, not written.
struct Top<'w, 't, 'de> {
    /// Where the canonical body is written.
    writer: &'w mut Writer<'de>,
    /// Which top-level members are left out of the key and which the proxy reads.
    top: &'t TopLevel<'t>,
    /// The members the proxy reads itself, parsed on the way.
    captured: &'w mut Map<String, Value>,
}

impl<'de> Visitor<'de> for Top<'_, '_, 'de> {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.writer.members(map, self.top.keep, Some((self.top.capture, self.captured)))?;
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Some("an array"))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Some("null"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Some("a boolean"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Some("a number"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Some("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Some("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Some("a string"))
    }
}

/// Writes one value as it is read.
struct Canonical<'w, 'de> {
    /// Where the value is written.
    writer: &'w mut Writer<'de>,
}

impl<'de> DeserializeSeed<'de> for Canonical<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canonical<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.writer.out.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        write_bool(&mut self.writer.out, b);
        Ok(())
    }

    fn visit_u64<E>(self, i: u64) -> Result<(), E> {
        write_u64(&mut self.writer.out, i);
        Ok(())
    }

    fn visit_i64<E>(self, i: i64) -> Result<(), E> {
        write_i64(&mut self.writer.out, i);
        Ok(())
    }

    fn visit_f64<E>(self, f: f64) -> Result<(), E> {
        write_f64(&mut self.writer.out, f);
        Ok(())
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<(), E> {
        write_unescaped(&mut self.writer.out, s);
        Ok(())
    }

    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        write_string(&mut self.writer.out, s);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.writer.out.push(b'[');
        let mut first = true;
        loop {
            let mark = self.writer.out.len();
            if !first {
                self.writer.out.push(b',');
            }
            if seq.next_element_seed(Canonical { writer: &mut *self.writer })?.is_none() {
                self.writer.out.truncate(mark);
                break;
            }
            first = false;
        }
        self.writer.out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.writer.members(map, &|_| true, None)
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl Key<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        match &self.0 {
            Cow::Borrowed(s) => write_unescaped(out, s),
            Cow::Owned(s) => write_string(out, s),
        }
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Which members to return parsed, and where (top level only).
type Capture<'a> = (&'a dyn Fn(&str) -> bool, &'a mut Map<String, Value>);

impl<'de> Writer<'de> {
    /// Writes an object's kept members in key order. Members are written as they are read;
    /// when the keys did not arrive sorted (or repeat), they are put in order afterwards.
    fn members<A: MapAccess<'de>>(
        &mut self,
        mut map: A,
        keep: &dyn Fn(&str) -> bool,
        mut capture: Option<Capture<'_>>,
    ) -> Result<(), A::Error> {
        self.out.push(b'{');
        let start = self.out.len();
        let base = self.members.len();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let kept = keep(&key.0);
            let captured = match &mut capture {
                Some((wanted, into)) if wanted(&key.0) => Some(into),
                _ => None,
            };
            if !kept && captured.is_none() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if kept && self.members.len() > base {
                self.out.push(b',');
            }
            let from = self.out.len();
            if kept {
                key.write(&mut self.out);
                self.out.push(b':');
            }
            match captured {
                // Parsed once; the canonical bytes are written from the parsed value.
                Some(into) => {
                    let value: Value = map.next_value()?;
                    if kept {
                        write_value(&mut self.out, &value);
                    }
                    into.insert(key.0.clone().into_owned(), value);
                }
                None => map.next_value_seed(Canonical { writer: &mut *self })?,
            }
            if kept {
                let end = self.out.len();
                self.members.push((key, from..end));
            }
        }
        let mine = self.members.get_mut(base..).unwrap_or_default();
        let in_order = mine.windows(2).all(|pair| matches!(pair, [a, b] if a.0.0 < b.0.0));
        if !in_order {
            // Stable, so among equal keys the last read stays last; only it is written, as
            // parsing into a `Value` keeps the last.
            mine.sort_by(|a, b| a.0.0.cmp(&b.0.0));
            self.scratch.clear();
            self.scratch.extend_from_slice(self.out.get(start..).unwrap_or_default());
            self.out.truncate(start);
            let mut first = true;
            for (i, (key, range)) in mine.iter().enumerate() {
                if mine.get(i + 1).is_some_and(|next| next.0.0 == key.0) {
                    continue;
                }
                if !first {
                    self.out.push(b',');
                }
                first = false;
                let member = self.scratch.get(range.start - start..range.end - start).unwrap_or_default();
                self.out.extend_from_slice(member);
            }
        }
        self.members.truncate(base);
        self.out.push(b'}');
        Ok(())
    }
}
