//! Golden shapes of the machine-readable output (`--json`): what scripts read, pinned so a
//! change of code cannot change it by accident.
//!
//! A shape keeps a value's keys and types, not its figures: objects by key, arrays by the
//! union of their elements' shapes (a key some elements lack is optional: `"key?"`), scalars
//! by type, and several types joined with `|` (`"number|null"`). An object whose keys are all
//! numbers or pairs of them (node ids, message sizes, `2:3` node pairs) is a map: its shape is `{"<number>": shape of every
//! value}`, whatever numbers a run has. A run passes when every key
//! it prints is in the golden shape with one of the types there, and every key not marked
//! optional is present. `SSI_BLESS=1` writes the shape of this run as the new golden file:
//! a shape that must change is changed on purpose, and the diff shows it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{Map, Value};

/// The directory of golden files: `tests/golden` of the workspace.
fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

/// The key standing for every key of a map keyed by numbers.
const NUMBER_KEY: &str = "<number>";

/// Whether `k` is a number, or a pair of node ids (`2:3`; the trace report also names the
/// cluster tool `tool` and an unknown node `?`): a key of a map, not a field.
fn numbered(k: &str) -> bool {
    let node = |n: &str| n.parse::<i64>().is_ok() || n == "tool" || n == "?";
    k.parse::<i64>().is_ok() || matches!(k.split_once(':'), Some((a, b)) if node(a) && node(b))
}

/// A value's shape.
#[derive(Clone, Debug, Default, PartialEq)]
struct Shape {
    types: BTreeSet<&'static str>,
    /// Keys of objects (when `types` has "object"): each key's shape, and whether every
    /// object seen had it.
    fields: BTreeMap<String, (Shape, bool)>,
    /// Elements of arrays (when `types` has "array").
    items: Option<Box<Shape>>,
}

impl Shape {
    fn of(v: &Value) -> Shape {
        let mut s = Shape::default();
        match v {
            Value::Null => {
                s.types.insert("null");
            }
            Value::Bool(_) => {
                s.types.insert("bool");
            }
            Value::Number(_) => {
                s.types.insert("number");
            }
            Value::String(_) => {
                s.types.insert("string");
            }
            Value::Array(a) => {
                s.types.insert("array");
                s.items = a.iter().map(Shape::of).reduce(Shape::union).map(Box::new);
            }
            Value::Object(o) if !o.is_empty() && o.keys().all(|k| numbered(k)) => {
                s.types.insert("object");
                let values = o.values().map(Shape::of).reduce(Shape::union).expect("not empty");
                s.fields.insert(NUMBER_KEY.to_string(), (values, false));
            }
            Value::Object(o) => {
                s.types.insert("object");
                s.fields = o.iter().map(|(k, v)| (k.clone(), (Shape::of(v), true))).collect();
            }
        }
        s
    }

    fn union(mut self, other: Shape) -> Shape {
        let both_objects = self.types.contains("object") && other.types.contains("object");
        self.types.extend(other.types);
        if both_objects {
            let keys: BTreeSet<String> = self.fields.keys().chain(other.fields.keys()).cloned().collect();
            let mut theirs = other.fields;
            for k in keys {
                let mine = self.fields.remove(&k);
                let other = theirs.remove(&k);
                let merged = match (mine, other) {
                    (Some((a, ra)), Some((b, rb))) => (a.union(b), ra && rb),
                    (Some((a, _)), None) | (None, Some((a, _))) => (a, false),
                    (None, None) => continue,
                };
                self.fields.insert(k, merged);
            }
        } else {
            self.fields.extend(other.fields);
        }
        self.items = match (self.items, other.items) {
            (Some(a), Some(b)) => Some(Box::new(a.union(*b))),
            (a, b) => a.or(b),
        };
        self
    }

    /// The shape as JSON: `"type|type"`, `{"key": shape, "opt?": shape}`, `[shape]`.
    fn to_json(&self) -> Value {
        let mut parts: Vec<Value> = Vec::new();
        let scalars: Vec<&str> = self.types.iter().copied().filter(|t| *t != "object" && *t != "array").collect();
        if self.types.contains("object") {
            let mut m = Map::new();
            for (k, (s, required)) in &self.fields {
                m.insert(if *required || k == NUMBER_KEY { k.clone() } else { format!("{k}?") }, s.to_json());
            }
            parts.push(Value::Object(m));
        }
        if self.types.contains("array") {
            parts.push(Value::Array(self.items.iter().map(|s| s.to_json()).collect()));
        }
        if !scalars.is_empty() {
            parts.push(Value::String(scalars.join("|")));
        }
        match parts.len() {
            1 => parts.pop().expect("one part"),
            _ => serde_json::json!({ "any of": parts }),
        }
    }
}

/// Whether `v` fits the golden shape `g`; the first misfit as `path: reason`.
fn fits(v: &Value, g: &Value, path: &str) -> Result<(), String> {
    if let Some(alts) = g.get("any of").and_then(Value::as_array) {
        let mut why = Vec::new();
        for a in alts {
            match fits(v, a, path) {
                Ok(()) => return Ok(()),
                Err(e) => why.push(e),
            }
        }
        return Err(why.join("; or "));
    }
    match (v, g) {
        (Value::Object(o), Value::Object(gm)) => {
            for (k, x) in o {
                let as_map_key = || numbered(k).then(|| gm.get(NUMBER_KEY)).flatten();
                let gs = gm
                    .get(k)
                    .or_else(|| gm.get(&format!("{k}?")))
                    .or_else(as_map_key)
                    .ok_or_else(|| format!("{path}.{k}: a key the golden shape lacks"))?;
                fits(x, gs, &format!("{path}.{k}"))?;
            }
            for k in gm.keys().filter(|k| !k.ends_with('?') && *k != NUMBER_KEY) {
                if !o.contains_key(k) {
                    return Err(format!("{path}.{k}: missing"));
                }
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(ga)) => match ga.first() {
            Some(gs) => a.iter().enumerate().try_for_each(|(i, x)| fits(x, gs, &format!("{path}[{i}]"))),
            None if a.is_empty() => Ok(()),
            None => Err(format!("{path}: elements where the golden shape saw none (bless it with a run that has some)")),
        },
        (_, Value::String(types)) => {
            let t = match v {
                Value::Null => "null",
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            if types.split('|').any(|x| x == t) {
                Ok(())
            } else {
                Err(format!("{path}: {t}, the golden shape says {types}"))
            }
        }
        (_, g) => Err(format!("{path}: {v} does not fit {g}")),
    }
}

/// Asserts that `outputs` (one or more `--json` documents of one command) fit the golden
/// shape `tests/golden/NAME.json`; with `SSI_BLESS=1`, writes their shape there instead
/// (joined with the shapes of earlier calls for NAME in this process).
pub fn assert_shape(name: &str, outputs: &[Value]) {
    assert!(!outputs.is_empty(), "{name}: no output to check");
    let path = dir().join(format!("{name}.json"));
    if std::env::var("SSI_BLESS").is_ok_and(|v| v == "1") {
        // A test may check one command several times (different cases): the golden file is
        // the union of every call in this process.
        static SEEN: std::sync::Mutex<BTreeMap<String, Shape>> = std::sync::Mutex::new(BTreeMap::new());
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        let mut shape = outputs.iter().map(Shape::of).reduce(Shape::union).expect("one output");
        if let Some(before) = seen.remove(name) {
            shape = before.union(shape);
        }
        seen.insert(name.to_string(), shape.clone());
        let shape = shape.to_json();
        std::fs::create_dir_all(dir()).expect("tests/golden");
        std::fs::write(&path, serde_json::to_string_pretty(&shape).expect("JSON") + "\n").expect("write the golden shape");
        eprintln!("blessed {}", path.display());
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (SSI_BLESS=1 writes it from this run)", path.display()));
    let golden: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for v in outputs {
        if let Err(e) = fits(v, &golden, name) {
            panic!("the --json shape of {name} changed: {e}\n(a change on purpose: SSI_BLESS=1, and commit tests/golden/{name}.json)");
        }
    }
}

/// Parses each line of `stdout` that is a JSON document (the `--json` commands print one
/// object per line, or one document).
pub fn documents(stdout: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(stdout);
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        return vec![v];
    }
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn golden_of(vs: &[Value]) -> Value {
        vs.iter().map(Shape::of).reduce(Shape::union).unwrap().to_json()
    }

    #[test]
    fn a_shape_keeps_keys_and_types_not_figures() {
        let g = golden_of(&[json!({"a": 1, "b": [{"x": "s"}, {"x": "t", "y": null}]})]);
        assert_eq!(g, json!({"a": "number", "b": [{"x": "string", "y?": "null"}]}));
        assert!(fits(&json!({"a": 2, "b": []}), &g, "t").is_ok());
        assert!(fits(&json!({"a": 2, "b": [{"x": "u"}]}), &g, "t").is_ok());
    }

    #[test]
    fn renamed_missing_and_retyped_keys_fail() {
        let g = golden_of(&[json!({"a": 1, "b": "x"})]);
        assert!(fits(&json!({"a": 1, "c": "x"}), &g, "t").unwrap_err().contains("t.c"));
        assert!(fits(&json!({"a": 1}), &g, "t").unwrap_err().contains("t.b: missing"));
        assert!(fits(&json!({"a": "1", "b": "x"}), &g, "t").unwrap_err().contains("t.a: string"));
    }

    #[test]
    fn objects_keyed_by_numbers_are_maps() {
        let g = golden_of(&[json!({"per_node": {"1": 5, "3": 7}})]);
        assert_eq!(g, json!({"per_node": {"<number>": "number"}}));
        assert_eq!(fits(&json!({"per_node": {"2": 1}}), &g, "t"), Ok(()));
        assert!(fits(&json!({"per_node": {"2": "x"}}), &g, "t").is_err());
        assert!(fits(&json!({"per_node": {"two": 1}}), &g, "t").is_err());
        let pairs = golden_of(&[json!({"sent": {"1:2": 5}})]);
        assert_eq!(pairs, json!({"sent": {"<number>": "number"}}));
        assert!(fits(&json!({"sent": {"2:3": 1, "tool:2": 4}}), &pairs, "t").is_ok(), "node pairs are a map's keys");
        assert!(!numbered("tool") && !numbered("a:b") && !numbered(""), "words are fields");
    }

    #[test]
    fn several_runs_join_their_types() {
        let g = golden_of(&[json!({"a": 1}), json!({"a": null})]);
        assert_eq!(g, json!({"a": "null|number"}));
        assert!(fits(&json!({"a": null}), &g, "t").is_ok());
    }
}
