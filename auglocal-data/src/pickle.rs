//! Python pickles read as data: the dictionaries of numpy arrays and lists that torchvision's
//! CIFAR download holds.
//!
//! Decoding is `serde-pickle`'s, which builds values and never calls anything a pickle names
//! (a numpy array becomes the tuple of its reconstruction state). Values are deserialized
//! into the caller's type rather than converted to `serde_pickle::Value` first: that
//! conversion sorts sets and panics on keys without a total order (NaN), which a fuzzed file
//! found; deserializing builds sets as lists and never sorts. Two things a hostile file
//! could still do to it are refused by [`check_opcodes`] first: nesting thousands of
//! containers deep (its tree is converted and dropped recursively, so the stack would
//! overflow) and copying a container over and over through `DUP` or the memo (each copy is
//! expanded, so a few kilobytes could ask for terabytes). A CIFAR batch has about a dozen
//! containers and no copied one.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_pickle::{DeOptions, Value};

/// Most container-making opcodes a file may run: also the deepest possible nesting, since a
/// container cannot hold itself.
const MAX_CONTAINERS: usize = 256;
/// Most memo lookups that fetch a container (each expands to a full copy when converted).
const MAX_CONTAINER_GETS: usize = 4;

/// What went wrong, with the byte offset where it applies; the caller names the file.
pub(crate) type Problem = String;

/// Decodes one pickle into `T` after [`check_opcodes`] accepted it. Sets arrive as lists,
/// tuples as lists, Python 2 `str` as bytes, unknown globals as `None`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    check_opcodes(bytes)?;
    let options = DeOptions::new()
        .keep_restore_state()
        .replace_unresolved_globals();
    serde_pickle::from_slice(bytes, options).map_err(|error| format!("cannot be decoded: {error}"))
}

/// Walks the opcodes without running them and refuses a file that nests or copies containers
/// beyond what a data file needs (the limits above).
pub(crate) fn check_opcodes(bytes: &[u8]) -> Result<(), Problem> {
    // For each memo slot: does it hold a container? A pickler memoizes an object right after
    // the opcode that made it, so the opcode before the PUT tells.
    let mut memo: HashMap<u64, bool> = HashMap::new();
    let mut last_made_container = false;
    let mut containers = 0;
    let mut container_gets = 0;
    let mut at = 0;
    let truncated = |at: usize| format!("the pickle ends inside the opcode at byte {at}");
    while at < bytes.len() {
        let start = at;
        let op = bytes[at];
        at += 1;
        let take = |at: &mut usize, n: usize| -> Result<&[u8], Problem> {
            let end = at.checked_add(n).filter(|&end| end <= bytes.len());
            let end = end.ok_or_else(|| truncated(start))?;
            let slice = &bytes[*at..end];
            *at = end;
            Ok(slice)
        };
        let uint = |slice: &[u8]| {
            slice
                .iter()
                .rev()
                .fold(0u64, |n, &b| (n << 8) | u64::from(b))
        };
        let line = |at: &mut usize| -> Result<(), Problem> {
            let end = bytes[*at..].iter().position(|&b| b == b'\n');
            *at += end.ok_or_else(|| truncated(start))? + 1;
            Ok(())
        };
        let mut made_container = false;
        match op {
            b'.' => return Ok(()),
            // Containers and objects built from the stack.
            b'}'
            | b'd'
            | b']'
            | b'l'
            | b')'
            | b't'
            | 0x85..=0x87
            | 0x8f
            | 0x91
            | b'R'
            | b'b'
            | b'o'
            | 0x81
            | 0x92 => {
                made_container = true;
                containers += 1;
            }
            b'i' => {
                line(&mut at)?;
                line(&mut at)?;
                made_container = true;
                containers += 1;
            }
            // Adding to a container leaves the container on top.
            b'a' | b'e' | b's' | b'u' | 0x90 => made_container = true,
            b'2' => {
                return Err(format!(
                    "DUP at byte {start}: data files never copy objects"
                ))
            }
            b'(' | b'0' | b'1' | b'N' | 0x88 | 0x89 | 0x93 | 0x97 | 0x98 | b'Q' => {}
            b'I' | b'L' | b'S' | b'V' | b'F' | b'P' => line(&mut at)?,
            b'c' => {
                line(&mut at)?;
                line(&mut at)?;
            }
            b'K' | 0x80 | 0x82 => {
                take(&mut at, 1)?;
            }
            b'M' | 0x83 => {
                take(&mut at, 2)?;
            }
            b'J' | 0x84 => {
                take(&mut at, 4)?;
            }
            b'G' | 0x95 => {
                take(&mut at, 8)?;
            }
            b'U' | b'C' | 0x8c | 0x8a => {
                let n = uint(take(&mut at, 1)?);
                take(&mut at, n as usize)?;
            }
            b'T' | b'X' | b'B' | 0x8b => {
                let n = uint(take(&mut at, 4)?);
                take(&mut at, n as usize)?;
            }
            0x8d | 0x8e | 0x96 => {
                let n = usize::try_from(uint(take(&mut at, 8)?)).unwrap_or(usize::MAX);
                take(&mut at, n)?;
            }
            b'p' | b'q' | b'r' | 0x94 => {
                let slot = match op {
                    b'p' => {
                        let from = at;
                        line(&mut at)?;
                        parse_line(&bytes[from..at], start)?
                    }
                    b'q' => uint(take(&mut at, 1)?),
                    b'r' => uint(take(&mut at, 4)?),
                    _ => memo.len() as u64,
                };
                memo.insert(slot, last_made_container);
                // Storing leaves the top as it was.
                made_container = last_made_container;
            }
            b'g' | b'h' | b'j' => {
                let slot = match op {
                    b'g' => {
                        let from = at;
                        line(&mut at)?;
                        parse_line(&bytes[from..at], start)?
                    }
                    b'h' => uint(take(&mut at, 1)?),
                    _ => uint(take(&mut at, 4)?),
                };
                if memo.get(&slot).copied().unwrap_or(false) {
                    container_gets += 1;
                    made_container = true;
                    if container_gets > MAX_CONTAINER_GETS {
                        return Err(format!(
                            "more than {MAX_CONTAINER_GETS} copies of memoized containers \
                             (the last at byte {start}): data files reuse none"
                        ));
                    }
                }
            }
            other => return Err(format!("unknown opcode 0x{other:02x} at byte {start}")),
        }
        if containers > MAX_CONTAINERS {
            return Err(format!(
                "more than {MAX_CONTAINERS} containers (the last at byte {start}): a data file \
                 has a few"
            ));
        }
        last_made_container = made_container;
    }
    Err("the pickle has no STOP opcode: the file is truncated".to_string())
}

fn parse_line(line: &[u8], start: usize) -> Result<u64, Problem> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|text| text.trim_end().parse().ok())
        .ok_or_else(|| format!("a memo index that is not a number at byte {start}"))
}

/// A numpy `uint8` array as (shape, bytes), from the reconstruction state serde-pickle keeps:
/// `(version, shape, dtype, fortran_order, raw bytes)`.
pub(crate) fn u8_array(value: &Value) -> Result<(Vec<usize>, &[u8]), Problem> {
    let (Value::Tuple(state) | Value::List(state)) = value else {
        return Err(format!("is {}, not a numpy array", kind(value)));
    };
    let shape = state.iter().find_map(|item| match item {
        Value::Tuple(dims) | Value::List(dims) => dims
            .iter()
            .map(|dim| match dim {
                Value::I64(n) => usize::try_from(*n).ok(),
                _ => None,
            })
            .collect::<Option<Vec<usize>>>(),
        _ => None,
    });
    let raw = state.iter().find_map(|item| match item {
        Value::Bytes(raw) => Some(raw.as_slice()),
        Value::String(raw) => Some(raw.as_bytes()),
        _ => None,
    });
    let (Some(shape), Some(raw)) = (shape, raw) else {
        return Err("is a sequence without a shape and bytes, not a numpy array".to_string());
    };
    if state.iter().any(|item| matches!(item, Value::Bool(true))) {
        return Err("is a Fortran-ordered array, not a C-ordered one".to_string());
    }
    let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if elements != Some(raw.len()) {
        return Err(format!(
            "holds {} bytes for shape {shape:?}: its elements are not uint8",
            raw.len()
        ));
    }
    Ok((shape, raw))
}

/// A list of non-negative integers (Python `list` of `int`, or a tuple).
pub(crate) fn int_list(value: &Value) -> Result<Vec<u64>, Problem> {
    let (Value::List(items) | Value::Tuple(items)) = value else {
        return Err(format!("is {}, not a list of integers", kind(value)));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::I64(n) if *n >= 0 => Ok(*n as u64),
            other => Err(format!(
                "holds {} at index {index}, not a non-negative integer",
                kind(other)
            )),
        })
        .collect()
}

fn kind(value: &Value) -> String {
    match value {
        Value::None => "None".into(),
        Value::Bool(_) => "a bool".into(),
        Value::I64(n) => format!("the integer {n}"),
        Value::Int(_) => "a big integer".into(),
        Value::F64(_) => "a float".into(),
        Value::Bytes(_) | Value::String(_) => "a string".into(),
        Value::List(_) => "a list".into(),
        Value::Tuple(_) => "a tuple".into(),
        Value::Set(_) | Value::FrozenSet(_) => "a set".into(),
        Value::Dict(_) => "a dict".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_deep_nesting_and_copies_before_decoding() {
        // 300 nested lists: `]` 300 times, then `a` 299 times and STOP.
        let mut deep = vec![0x80, 2];
        deep.extend(std::iter::repeat_n(b']', 300));
        deep.extend(std::iter::repeat_n(b'a', 299));
        deep.push(b'.');
        let problem = check_opcodes(&deep).unwrap_err();
        assert!(problem.contains("more than 256 containers"), "{problem}");
        assert!(problem.contains("byte 258"), "{problem}");

        // 200 nested lists are fine and decode.
        let mut nested = vec![0x80, 2];
        nested.extend(std::iter::repeat_n(b']', 200));
        nested.extend(std::iter::repeat_n(b'a', 199));
        nested.push(b'.');
        assert!(matches!(decode::<Value>(&nested), Ok(Value::List(_))));

        // DUP doubles a list each time.
        let dup = [0x80, 2, b']', b'2', b'a', b'.'];
        assert_eq!(
            check_opcodes(&dup).unwrap_err(),
            "DUP at byte 3: data files never copy objects"
        );

        // A memoized list fetched five times; a memoized leaf fetched as often is fine.
        let mut gets = vec![0x80, 2, b']', b'q', 1];
        for _ in 0..5 {
            gets.extend([b'h', 1, b'a']);
        }
        gets.push(b'.');
        let problem = check_opcodes(&gets).unwrap_err();
        assert!(problem.contains("more than 4 copies"), "{problem}");
        let mut leaf = vec![0x80, 2, b']', b'K', 7, b'q', 1, b'a'];
        for _ in 0..10 {
            leaf.extend([b'h', 1, b'a']);
        }
        leaf.push(b'.');
        assert_eq!(check_opcodes(&leaf), Ok(()));
        let Ok(Value::List(items)) = decode::<Value>(&leaf) else {
            panic!("a list")
        };
        assert_eq!(items, vec![Value::I64(7); 11]);
    }

    #[test]
    fn names_truncation_and_unknown_opcodes() {
        assert_eq!(
            check_opcodes(&[0x80, 2, b'T', 10, 0, 0, 0, b'x']).unwrap_err(),
            "the pickle ends inside the opcode at byte 2"
        );
        assert_eq!(
            check_opcodes(&[0x80, 2, b'N']).unwrap_err(),
            "the pickle has no STOP opcode: the file is truncated"
        );
        assert_eq!(
            check_opcodes(&[0x80, 2, 0xff]).unwrap_err(),
            "unknown opcode 0xff at byte 2"
        );
    }
}
